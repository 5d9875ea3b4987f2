"""The main job at an earlier commit and at this checkout, back to back on this machine:
how much more the package does per hour than it did then; prints JSON.

    python benchmarks/since.py e278a13 --out runs/since --executors inline process:2 \\
        --json benchmarks/data/since_e278a13.json

For every executor (``inline``, or ``process:W`` for W process workers) it runs
``benchmarks/pipeline.py`` (the README's main job, the ``default`` preset of each version)
first from a git worktree of ``REV`` and then from this checkout, each into its own run
directory under ``--out``, with ``PYTHONPATH`` pointing at that version's ``src`` and this
environment's packages (a revision whose dependencies differ from today's may not run).
Each version's own pipeline.py times its own stages; the jobs stage gives jobs per hour.
A finished pair is kept in the JSON and skipped when the call is repeated, so a stopped
call resumes at the next pair; a run directory left by a stopped pair is refused (a resumed
run would time only its remaining jobs): remove it to time that setting afresh. Run it on
an otherwise idle machine and leave ``OMP_NUM_THREADS`` unset, as a user would: both
versions then choose their threads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def parse_executor(text: str) -> tuple[str, int | None]:
    name, _, workers = text.partition(":")
    ok = name == "inline" and not workers or name == "process" and workers.isdigit()
    if not ok or workers == "0" * len(workers) and workers:
        raise SystemExit(f"error: executor {text!r}: use inline or process:W (W >= 1)")
    return name, int(workers) if workers else None


def pipeline(tree: Path, out: Path, executor: str, workers: int | None) -> dict:
    """One version's pipeline.py on its default preset; its JSON and this call's wall."""
    cmd = [sys.executable, str(tree / "benchmarks" / "pipeline.py"), "--out", str(out)]
    cmd += ["--executor", executor] + (["--workers", str(workers)] if workers else [])
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise SystemExit(f"error: {tree} pipeline.py failed: {' '.join(tail)}")
    result = json.loads(done.stdout[done.stdout.index("{") :])
    jobs_seconds = result["stages"]["jobs"]
    result["jobs_per_hour"] = result["jobs"] / jobs_seconds * 3600 if jobs_seconds else None
    result["call_wall_seconds"] = wall
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the earlier commit")
    ap.add_argument("--out", type=Path, required=True, help="run directories go here")
    ap.add_argument("--executors", nargs="+", default=["inline"], help="inline, process:W")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    executors = [parse_executor(e) for e in args.executors]
    out = args.out.resolve()  # the versions run from their own trees
    try:
        then = git("rev-parse", "--verify", f"{args.rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"error: {args.rev!r} is not a commit of this repository") from None
    payload: dict = {"rev": then, "now": git("rev-parse", "HEAD"), "pairs": []}
    if args.json and args.json.exists():
        old = json.loads(args.json.read_text())
        if old.get("rev") == then:
            payload["pairs"] = old.get("pairs", [])
    payload["now_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    payload["cpu"] = cpu.group(1).strip() if cpu else None
    payload["cpus"] = len(os.sched_getaffinity(0))
    payload["load_before"] = os.getloadavg()[0]

    def emit() -> None:
        text = json.dumps(payload, indent=2)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
        print(text, flush=True)

    done = {p["executor"] for p in payload["pairs"]}
    # a kill (SIGTERM) unwinds like an exception, so the worktree below is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="diffattr-since-") as tmp:
        tree = Path(tmp) / "tree"
        git("worktree", "add", "--detach", str(tree), then)
        try:
            for name, workers in executors:
                label = name + (f"-{workers}" if workers else "")
                if label in done:
                    continue
                stale = [d for d in (out / f"then-{label}", out / f"now-{label}") if d.exists()]
                if stale:
                    raise SystemExit(f"error: {stale[0]} exists and is not in the JSON: remove it")
                pair = {"executor": label, "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
                pair["then"] = pipeline(tree, out / f"then-{label}", name, workers)
                pair["now"] = pipeline(ROOT, out / f"now-{label}", name, workers)
                t, n = pair["then"]["jobs_per_hour"], pair["now"]["jobs_per_hour"]
                pair["jobs_per_hour_ratio"] = n / t if t and n else None
                pair["load_after"] = os.getloadavg()[0]
                payload["pairs"].append(pair)
                emit()
        finally:
            git("worktree", "remove", "--force", str(tree))
    emit()


if __name__ == "__main__":
    main()
