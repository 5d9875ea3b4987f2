"""The ``diffattr`` command line (typer): parse, build the plan, call a phase, print.

Commands import what they use inside their body, so light commands (``init``, ``estimate``,
``status``, a misspelled ``run``) answer without loading torch or diffusers.

Errors are one line on stderr, ``error: ...``, never wrapped to the terminal's width, exit
status 2 (bad input or broken state: ``DiffattrError`` and usage errors); warnings meant for
users (``DiffattrWarning``) are one ``warning: ...`` line each.

Where files go: results go to ``--out``; without it to ``$DIFFATTR_HOME/run`` (``run``) or
``$DIFFATTR_HOME/model`` (``train``), ``$DIFFATTR_HOME`` defaulting to ``./runs``. Caches
go under the run directory (runs) or to ``diffattr.fileio.cache_home()``
(``$DIFFATTR_HOME/cache``, else ``$XDG_CACHE_HOME/diffattr``, else ``~/.cache/diffattr``),
never to the current directory, so a command whose ``--out`` points elsewhere works from a
read-only directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from diffattr.errors import DiffattrError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Credit the training data of diffusion models (Shapley values via sparsified unlearning).",
)

SET_HELP = "any setting, KEY=VALUE with a TOML value (repeatable), e.g. method.steps=100"
STRICT_HELP = "refuse a data CSV that lists an image more than once (default: a warning)"


def _default_out(name: str) -> Path:
    """``$DIFFATTR_HOME/<name>`` for a command given no ``--out``; a one-line error when
    that would be written in an unwritable place (e.g. a read-only current directory)."""
    import os

    from diffattr.config import home

    out = home() / name
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK):
        raise DiffattrError(
            f"no --out given and {existing.resolve()} is not writable; pass --out DIR or set "
            "DIFFATTR_HOME"
        )
    return out


def _strict_flag(strict: bool, data_name: str | None) -> dict[str, Any]:
    if not strict:
        return {}
    if data_name not in (None, "folder"):
        raise DiffattrError("--strict applies to folder / CSV data (--dataset folder)")
    return {"data.strict": True}


def _overrides(sets: list[str] | None, **flags: Any) -> dict[str, Any]:
    from diffattr.config import parse_assignment

    out = {k: v for k, v in flags.items() if v is not None}
    for text in sets or []:
        key, value = parse_assignment(text)
        out[key] = value
    return out


@app.command()
def init(
    path: Path = typer.Argument(Path("diffattr.toml"), help="where to write the config"),
    preset: str | None = typer.Option(None, "--preset", help="default | quick | paper"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write a commented configuration file (every setting, the `default` run preset)."""
    from diffattr.config import build_config
    from diffattr.fileio import atomic_write_text

    if path.exists() and not force:
        raise DiffattrError(f"{path} exists; pass --force to overwrite it")
    atomic_write_text(path, build_config(None, preset).commented_toml())
    typer.echo(f"wrote {path}")


@app.command("train")
def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file"),
    dataset: str | None = typer.Option(None, "--dataset", help="digits | fashion-mnist | ..."),
    data: str | None = typer.Option(None, "--data", help="local data path"),
    image_size: int | None = typer.Option(None, "--image-size"),
    architecture: str | None = typer.Option(
        None, "--architecture", help="UNet layout: tiny | small | ddpm-cifar"
    ),
    steps: int | None = typer.Option(None, "--steps"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    seed: int | None = typer.Option(None, "--seed"),
    device: str | None = typer.Option(None, "--device"),
    sets: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    out: Path | None = typer.Option(
        None, "--out", help="model directory (default $DIFFATTR_HOME/model)"
    ),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
) -> None:
    """Train the full model theta* on all data; resumable; writes samples.png."""
    from diffattr.config import build_config
    from diffattr.fileio import cache_home, check_dir_path
    from diffattr.runner.plan import check_config

    cfg = build_config(
        config,
        None,
        _overrides(
            sets,
            **{
                "data.name": dataset,
                "data.path": data,
                "data.image_size": image_size,
                "family.architecture": architecture,
                "train.steps": steps,
                "train.batch_size": batch_size,
                "train.lr": lr,
                "train.seed": seed,
                "device": device,
                **_strict_flag(strict, dataset),
            },
        ),
    )
    out = check_dir_path(out or _default_out("model"), "--out")
    if out.exists() and any(out.iterdir()) and not (out / "diffattr.json").is_file():
        raise DiffattrError(
            f"--out {out} is a folder that holds no diffattr model; give a new or empty folder"
        )
    check_config(cfg)
    from diffattr.data import load_dataset
    from diffattr.data.digest import dataset_digest

    family = cfg.family.build(cfg.device)
    ds = load_dataset(cfg.data)
    family.check_data(ds)
    cache = cache_home()
    dataset_digest(ds, cache)
    path = family.train_full(cfg, out, ds, family.training_set(ds, cache))
    typer.echo(f"model: {path}\nsamples: {path / 'samples.png'}")


def lower_is_better(behavior_key: str) -> bool:
    """Whether smaller values of a behavior (e.g. ``fid[digits-cnn]``) are better."""
    from diffattr.behaviors.keys import BehaviorKey

    return BehaviorKey.parse(behavior_key).lower_is_better


def print_ranking(attributions: list, top: int | None = None) -> None:
    """One table per estimator: players ranked by the first behavior (best first)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from diffattr.behaviors.keys import split_image_key

    out = Console()
    by_est: dict[str, list] = {}
    per_image: dict[tuple[str, str], int] = {}
    for a in attributions:
        base, image = split_image_key(a.behavior or "")
        if image is not None:  # one column per generated image: counted, in values.csv
            per_image[(a.estimator, base)] = per_image.get((a.estimator, base), 0) + 1
            continue
        by_est.setdefault(a.estimator, []).append(a)
    for (est, base), count in per_image.items():
        out.print(
            f"{est}: {count} attributions of {escape(base)}, one per generated image "
            "(values.csv; diffattr report shows the top players of a few)"
        )
    for est, attrs in by_est.items():
        lead = attrs[0]
        sign = -1.0 if lower_is_better(lead.behavior) else 1.0
        order = sorted(range(len(lead.names)), key=lambda i: -sign * lead.values[i])
        table = Table(
            title=f"{est}: players ranked by their contribution to {escape(lead.behavior)}"
            + (" (lower is better)" if sign < 0 else " (higher is better)")
        )
        table.add_column("rank", justify="right")
        table.add_column("player")
        for a in attrs:
            table.add_column(escape(a.behavior), justify="right")
        for r, i in enumerate(order[:top] if top else order, start=1):
            cells = []
            for a in attrs:
                se = a.stderr[i]
                cells.append(f"{a.values[i]:+.4g}" + ("" if se != se else f" ± {se:.2g}"))
            table.add_row(str(r), escape(lead.names[i]), *cells)
        out.print(table)
        print_reliability(out, est, attrs)


def print_reliability(out, estimator: str, attrs: list) -> None:
    """One line of reliability signals per behavior, and a ``warning:`` line (stderr) for
    those below their thresholds (``diffattr.estimators.reliability``)."""
    import warnings

    from rich.markup import escape

    from diffattr.errors import DiffattrWarning
    from diffattr.estimators.reliability import advice, summary

    for a in attrs:
        rel = a.settings.get("reliability")
        if not rel:
            continue
        of = f" of {escape(str(a.behavior))}" if a.behavior else ""
        out.print(f"  reliability{of}: {summary(rel)}")
        line = advice(estimator, a.behavior, rel)
        if line:
            warnings.warn(line, DiffattrWarning, stacklevel=2)


@app.command("run")
def run_cmd(
    config: Path | None = typer.Argument(None, help="TOML config (default: built-in defaults)"),
    out: Path | None = typer.Option(
        None, "--out", help="run directory (default $DIFFATTR_HOME/run)"
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="default | quick | paper (a config file's keys win over it)"
    ),
    dataset: str | None = typer.Option(None, "--dataset"),
    data: str | None = typer.Option(None, "--data", help="local data path"),
    players: str | None = typer.Option(None, "--players", help="contributor | sample"),
    method: str | None = typer.Option(
        None, "--method", help="sft | retrain | ft | ga | lora | surrogate"
    ),
    estimator: list[str] | None = typer.Option(None, "--estimator", help="repeatable"),
    subsets: int | None = typer.Option(None, "--subsets", help="coalitions per estimator (M)"),
    executor: str | None = typer.Option(None, "--executor", help="inline | process | ray | slurm"),
    workers: int | None = typer.Option(None, "--workers"),
    ray_address: str | None = typer.Option(None, "--ray-address"),
    full_model: Path | None = typer.Option(None, "--full-model", help="use this trained model"),
    device: str | None = typer.Option(None, "--device"),
    until_stderr: float | None = typer.Option(
        None, "--until-stderr", help="add coalitions until every player's stderr is below this"
    ),
    max_subsets: int | None = typer.Option(
        None, "--max-subsets", help="budget of coalitions for --until-stderr"
    ),
    sets: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and the jobs; exit"),
    profile: bool = typer.Option(
        False,
        "--profile",
        help="run one coalition job first under the torch profiler: its time split and top "
        "operators go to RUN_DIR/profile.json and profile.txt",
    ),
) -> None:
    """Attribute a global behavior of the model to its data contributors (resumable).

    One run writes to a run directory at a time (RUN_DIR/run.lock); diffattr status and
    report read it meanwhile."""
    from diffattr.config import build_config

    flags = {
        "data.name": dataset,
        "data.path": data,
        "data.players": players,
        "method.name": method,
        "attribution.estimators": list(estimator) if estimator else None,
        "attribution.subsets": subsets,
        "attribution.full_model": str(full_model) if full_model else None,
        "executor.name": executor,
        "device": device,
        "attribution.until_stderr": until_stderr,
        "attribution.max_subsets": max_subsets,
        **_strict_flag(strict, dataset),
    }
    if workers is not None:
        flags["executor.workers"] = workers
    if ray_address is not None:
        flags["executor.address"] = ray_address
    run_dir = out or _default_out("run")
    from diffattr.runner.lock import RunLock
    from diffattr.runner.plan import check_run_dir, make_plan, own_config

    check_run_dir(run_dir)
    lost = None  # a run directory that holds a run but lost its config.toml
    if config is None and preset is None:  # an existing run directory goes on with its own
        try:
            config = own_config(run_dir)
        except DiffattrError as e:
            lost = e
        if config is not None:
            typer.echo(f"note: no config given: using the run's own {config}", err=True)
    cfg = build_config(config, preset, _overrides(sets, **flags))
    if dry_run:
        if lost is not None:
            raise lost
        typer.echo(make_plan(cfg, run_dir).render(), err=True)
        return
    created = not Path(run_dir).exists()
    try:
        with RunLock(run_dir):  # a second run on this directory stops here, before any work
            if lost is not None:  # said after the lock's own word (held, not writable)
                raise lost
            plan = make_plan(cfg, run_dir)
            typer.echo(plan.render(), err=True)
            from diffattr.runner import run_attribution

            summary = run_attribution(cfg, run_dir, profile=profile, resolution=plan.resolution)
    except DiffattrError:
        if created:  # refused before any work: leave no empty run directory behind
            try:
                Path(run_dir).rmdir()
            except OSError:
                pass
        raise
    if summary.profile is not None:
        from diffattr.runner.profile import render

        typer.echo(render(summary.profile) + f"\n(written to {run_dir / 'profile.json'})", err=True)
    print_ranking(summary.attributions, top=25)
    t = summary.timings
    typer.echo(
        f"{summary.jobs} jobs, {summary.failed} failed; {t['total']:.0f} s in all; "
        + (f"values: {run_dir / 'values.csv'}" if summary.values_written else "no values written")
    )
    if summary.failed:  # one line: values.csv is never replaced by a table missing jobs
        _error(
            f"{summary.failed} job(s) failed; first: {summary.first_error}; values.csv not "
            f"written (it needs every planned job); rerun to redo the failed jobs, see "
            f"diffattr status {run_dir}"
        )
    else:
        for err in summary.errors:
            _error(f"estimator not fitted: {err}")
    if summary.failed or summary.errors:
        raise typer.Exit(1)


@app.command("status")
def status_cmd(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """Show done, pending and failed jobs of a run (read-only; works while it runs)."""
    from diffattr.runner.status import run_status

    run_status(run_dir)


def _executor_overrides(
    executor: str | None, workers: int | None, ray_address: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"executor.name": executor}
    if workers is not None:
        out["executor.workers"] = workers
    if ray_address is not None:
        out["executor.address"] = ray_address
    return out


@app.command("lds")
def lds_cmd(
    run_dir: Path = typer.Argument(..., help="run directory of diffattr run"),
    alpha: list[float] | None = typer.Option(
        None, "--alpha", help="share of players kept in test subsets (repeatable; default 0.5)"
    ),
    test_subsets: int | None = typer.Option(
        None, "--test-subsets", help="held-out subsets (default 100; --quick 16)"
    ),
    seeds: int | None = typer.Option(None, "--seeds", help="retraining seeds (default 3)"),
    quick: bool = typer.Option(False, "--quick", help="16 test subsets, 1 seed"),
    method: list[str] | None = typer.Option(None, "--method", help="repeatable"),
    estimator: list[str] | None = typer.Option(None, "--estimator", help="repeatable"),
    subsets: int | None = typer.Option(
        None, "--subsets", help="coalitions per estimator, M (default: the run's); new ones are run"
    ),
    fidelity: bool = typer.Option(True, "--fidelity/--no-fidelity"),
    executor: str | None = typer.Option(None, "--executor"),
    workers: int | None = typer.Option(None, "--workers"),
    ray_address: str | None = typer.Option(None, "--ray-address"),
) -> None:
    """LDS against models retrained from scratch on held-out subsets (+ fidelity)."""
    from diffattr.evaluate.lds import LDSProtocol, run_lds

    if subsets is not None and subsets < 1:
        raise DiffattrError(f"--subsets must be at least 1, got {subsets}")
    protocol = LDSProtocol.from_options(alpha or None, test_subsets, seeds, quick)
    overrides = _executor_overrides(executor, workers, ray_address)
    if subsets is not None:
        overrides["attribution.subsets"] = subsets
    res = run_lds(
        run_dir,
        protocol,
        methods=method or None,
        estimators=estimator or None,
        with_fidelity=fidelity,
        overrides=overrides,
    )
    typer.echo(res.render())
    typer.echo(f"written: {run_dir / 'lds.json'}")
    if res.failed_jobs or res.estimator_errors:  # an asked-for result is missing
        raise typer.Exit(1)


@app.command("counterfactual")
def counterfactual_cmd(
    run_dir: Path = typer.Argument(...),
    remove: str = typer.Option("top", "--remove", help="top | bottom"),
    fraction: float = typer.Option(0.4, "--fraction"),
    seeds: int = typer.Option(3, "--seeds"),
    estimator: list[str] | None = typer.Option(None, "--estimator", help="repeatable"),
    ranked_by: list[str] | None = typer.Option(None, "--ranked-by", help="behavior, repeatable"),
    executor: str | None = typer.Option(None, "--executor"),
    workers: int | None = typer.Option(None, "--workers"),
    ray_address: str | None = typer.Option(None, "--ray-address"),
) -> None:
    """Retrain without the top (bottom) players of each ranking; relative change of F."""
    from diffattr.evaluate.counterfactual import run_counterfactual

    res = run_counterfactual(
        run_dir,
        remove,
        fraction,
        seeds,
        _executor_overrides(executor, workers, ray_address),
        estimators=estimator or None,
        ranked_by=ranked_by or None,
    )
    typer.echo(res.render())
    if res.failed_jobs:
        raise typer.Exit(1)


@app.command("curve")
def curve_cmd(
    run_dir: Path = typer.Argument(...),
    method: list[str] | None = typer.Option(None, "--method", help="default: retrain ft sft"),
    budgets: int = typer.Option(5, "--budgets"),
    retrain_subsets: int | None = typer.Option(
        None,
        "--retrain-subsets",
        help="coalitions retrained for the retrain curve (default 2(n-1))",
    ),
    test_subsets: int | None = typer.Option(None, "--test-subsets"),
    seeds: int | None = typer.Option(None, "--seeds"),
) -> None:
    """Compute-matched curve: Shapley LDS against compute for each method."""
    from diffattr.evaluate.budget import compute_curve

    res = compute_curve(run_dir, method or None, budgets, retrain_subsets, test_subsets, seeds)
    typer.echo(res.render())


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(...),
    out: Path | None = typer.Option(None, "--out", help="default RUN_DIR/report.html"),
) -> None:
    """Write a self-contained report.html with plots of the run and its evaluations."""
    check_report_inputs(run_dir)
    from diffattr.report import write_report

    typer.echo(f"wrote {write_report(run_dir, out)}")


def check_report_inputs(run_dir: Path) -> None:
    """The run's own files, checked first with the run's readers (``read_values``, a
    read-only ``Store``): a broken one is one line naming it and saying what to do. The
    evaluations' files are the report's to check (``report.inputs``)."""
    from diffattr.runner.values import read_values
    from diffattr.store import Store

    if not run_dir.is_dir():
        raise DiffattrError(f"{run_dir} is not a run directory (diffattr run makes one)")
    read_values(run_dir)
    store = run_dir / "store.sqlite"
    if store.exists():
        with Store(store, readonly=True) as s:
            s.count()


def _register_commands() -> None:
    """Commands implemented beside the stage they drive (their modules import lightly)."""
    from diffattr.commands.estimate import estimate
    from diffattr.commands.measure import measure
    from diffattr.commands.prune import prune

    app.command("estimate")(_utf8_table(estimate))
    app.command("measure")(measure)
    app.command("prune")(prune)


def _utf8_table(command):
    """``diffattr estimate`` with the TABLE checked first for UTF-8: a table in another
    encoding gets the remedy the run's data CSV gets (``fileio.not_utf8_error``)."""
    import functools

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        from diffattr.fileio import check_utf8_file

        table = kwargs["table"] if "table" in kwargs else (args[0] if args else None)
        if table is not None:
            check_utf8_file(table)
        return command(*args, **kwargs)

    return checked


_register_commands()


def _error(message: str) -> None:
    """One line on stderr, never wrapped (pipes and logs keep it whole)."""
    sys.stderr.write(f"error: {_one_line(message)}\n")
    sys.stderr.flush()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """User-facing warnings as one ``warning: ...`` line; others as Python shows them."""
    from diffattr.errors import DiffattrWarning

    if issubclass(category, DiffattrWarning):
        sys.stderr.write(f"warning: {_one_line(str(message))}\n")
        sys.stderr.flush()
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def _cli_exceptions() -> tuple[tuple, tuple, tuple]:
    """(usage errors, exits, aborts) of typer -- which vendors click from 0.2x on -- and of
    click itself where it is installed."""
    import typer.exceptions as te

    usage: list = [getattr(te, "TyperException", None)]
    exits: list = [typer.Exit]
    aborts: list = [typer.Abort, KeyboardInterrupt]
    try:
        import click

        usage.append(click.exceptions.ClickException)
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return (
        tuple(c for c in usage if c is not None),
        tuple(set(exits)),
        tuple(set(aborts)),
    )


_default_showwarning = None


def main() -> None:
    import warnings

    global _default_showwarning
    if _default_showwarning is None:
        _default_showwarning = warnings.showwarning
        warnings.showwarning = _show_warning
    usage, exits, aborts = _cli_exceptions()
    try:
        rc = app(standalone_mode=False)
    except DiffattrError as e:
        _error(str(e))
        sys.exit(2)
    except exits as e:
        sys.exit(e.exit_code)
    except aborts:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except usage as e:
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        _error(f"{message}{hint}")
        sys.exit(int(getattr(e, "exit_code", 2) or 2))
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
