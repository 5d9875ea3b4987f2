"""The ``diffattr`` command line (typer)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from diffattr.config import RunConfig, home
from diffattr.errors import DiffattrError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Credit the training data of diffusion models (Shapley values via sparsified unlearning).",
)
console = Console(stderr=True)


def load_config(config: Path | None) -> RunConfig:
    return RunConfig.from_toml(config) if config is not None else RunConfig()


@app.command()
def init(
    path: Path = typer.Argument(Path("diffattr.toml"), help="where to write the config"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write a commented default configuration file (the `default` run preset)."""
    from diffattr.runner import build_config

    if path.exists() and not force:
        raise DiffattrError(f"{path} exists; pass --force to overwrite it")
    path.write_text(build_config(None, "default").commented_toml())
    typer.echo(f"wrote {path}")


@app.command("train")
def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file"),
    dataset: str | None = typer.Option(None, "--dataset", help="digits | fashion-mnist | ..."),
    data: str | None = typer.Option(None, "--data", help="local data path"),
    image_size: int | None = typer.Option(None, "--image-size"),
    preset: str | None = typer.Option(None, "--preset", help="tiny | small | ddpm-cifar"),
    steps: int | None = typer.Option(None, "--steps"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    seed: int | None = typer.Option(None, "--seed"),
    device: str | None = typer.Option(None, "--device"),
    out: Path | None = typer.Option(
        None, "--out", help="model directory (default $DIFFATTR_HOME/model)"
    ),
) -> None:
    """Train the full model theta* on all data; resumable; writes samples.png."""
    from diffattr.models import train_full_model

    cfg = load_config(config).with_overrides(
        **{
            "data.dataset": dataset,
            "data.path": data,
            "data.image_size": image_size,
            "model.preset": preset,
            "train.steps": steps,
            "train.batch_size": batch_size,
            "train.lr": lr,
            "train.seed": seed,
            "device": device,
        }
    )
    out = out or home() / "model"
    path = train_full_model(cfg, out)
    typer.echo(f"model: {path}\nsamples: {path / 'samples.png'}")


def lower_is_better(behavior_key: str) -> bool:
    """Whether smaller values of a behavior (e.g. ``fid[digits-cnn]``) are better."""
    from diffattr.behaviors import BEHAVIORS

    name = behavior_key.split("[")[0]
    return name in BEHAVIORS and not BEHAVIORS.get(name).higher_is_better


def print_ranking(attributions: list, top: int | None = None) -> None:
    """One table per estimator: players ranked by the first behavior (best first)."""
    from rich.markup import escape
    from rich.table import Table

    out = Console()
    by_est: dict[str, list] = {}
    for a in attributions:
        by_est.setdefault(a.estimator, []).append(a)
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
    method: str | None = typer.Option(None, "--method", help="sft | retrain | ft | ga | lora"),
    estimator: list[str] | None = typer.Option(None, "--estimator", help="repeatable"),
    subsets: int | None = typer.Option(None, "--subsets", help="coalitions per estimator (M)"),
    executor: str | None = typer.Option(None, "--executor", help="inline | process | ray"),
    workers: int | None = typer.Option(None, "--workers"),
    ray_address: str | None = typer.Option(None, "--ray-address"),
    full_model: Path | None = typer.Option(None, "--full-model", help="use this trained model"),
    device: str | None = typer.Option(None, "--device"),
) -> None:
    """Attribute a global behavior of the model to its data contributors (resumable)."""
    from diffattr.runner import build_config, run_attribution

    cfg = build_config(config, preset).with_overrides(
        **{
            "data.dataset": dataset,
            "data.path": data,
            "data.players": players,
            "attribution.method": method,
            "attribution.estimators": estimator or None,
            "attribution.subsets": subsets,
            "attribution.full_model": str(full_model) if full_model else None,
            "executor.name": executor,
            "executor.workers": workers,
            "executor.ray_address": ray_address,
            "device": device,
        }
    )
    run_dir = out or home() / "run"
    summary = run_attribution(cfg, run_dir)
    print_ranking(summary.attributions, top=25)
    t = summary.timings
    typer.echo(
        f"{summary.jobs} jobs, {summary.failed} failed; {t['total']:.0f} s in all; "
        f"values: {run_dir / 'values.csv'}"
    )
    for err in summary.errors:
        console.print(f"[red]estimator not fitted:[/red] {err}", highlight=False)
    if summary.failed:
        console.print(f"[red]{summary.failed} job(s) failed[/red]; see diffattr status {run_dir}")
    if summary.failed or summary.errors:
        raise typer.Exit(1)


@app.command("status")
def status_cmd(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """Show done, pending and failed jobs of a run."""
    from diffattr.runner.status import run_status

    run_status(run_dir)


def _executor_overrides(executor: str | None, workers: int | None, ray_address: str | None):
    return {
        "executor.name": executor,
        "executor.workers": workers,
        "executor.ray_address": ray_address,
    }


@app.command("lds")
def lds_cmd(
    run_dir: Path = typer.Argument(..., help="run directory of diffattr run"),
    alpha: float = typer.Option(0.5, "--alpha", help="share of players kept in test subsets"),
    test_subsets: int = typer.Option(32, "--test-subsets"),
    seeds: int = typer.Option(1, "--seeds", help="retraining seeds per test subset"),
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
    from rich.markup import escape
    from rich.table import Table

    from diffattr.evaluate.protocol import run_lds

    if not 0 < alpha < 1:
        raise DiffattrError(f"--alpha must be in (0, 1), got {alpha}")
    if subsets is not None and subsets < 1:
        raise DiffattrError(f"--subsets must be at least 1, got {subsets}")
    overrides = _executor_overrides(executor, workers, ray_address)
    if subsets is not None:
        overrides["attribution.subsets"] = subsets
    res = run_lds(
        run_dir,
        alpha,
        test_subsets,
        seeds,
        method or None,
        estimator or None,
        fidelity,
        overrides,
    )
    table = Table(title=f"LDS (alpha={alpha}, {test_subsets} test subsets, {seeds} seed(s))")
    for c in ("method", "estimator", "behavior", "LDS", "95% (seeds)", "bootstrap 95%"):
        table.add_column(c)
    for r in res["results"]:
        lo, hi = r["bootstrap_95"]
        table.add_row(
            r["method"],
            r["estimator"],
            escape(r["behavior"]),
            f"{r['lds']:.1f}",
            f"± {r['ci95']:.1f}",
            f"[{lo:.1f}, {hi:.1f}]",
        )
    Console().print(table)
    for f in res["fidelity"]:
        typer.echo(
            f"fidelity {f['method']} {f['behavior']}: pearson {f['pearson']:.3f} "
            f"spearman {f['spearman']:.3f} mae {f['mae']:.4g}"
        )
    typer.echo(f"written: {run_dir / 'lds.json'}")
    if res["failed_jobs"]:
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
    from diffattr.evaluate.protocol import run_counterfactual

    res = run_counterfactual(
        run_dir,
        remove,
        fraction,
        seeds,
        _executor_overrides(executor, workers, ray_address),
        estimators=estimator or None,
        ranked_by=ranked_by or None,
    )
    for r in res["results"]:
        changes = ", ".join(f"{b} {c['mean']:+.1f}%" for b, c in r["relative_change_pct"].items())
        typer.echo(
            f"{r['estimator']} (ranked by {r['ranked_by']}), without "
            f"{', '.join(r['removed'])}: {changes}"
        )
    if res["failed_jobs"]:
        raise typer.Exit(1)


@app.command("curve")
def curve_cmd(
    run_dir: Path = typer.Argument(...),
    method: list[str] | None = typer.Option(None, "--method", help="default: retrain ft sft"),
    budgets: int = typer.Option(5, "--budgets"),
    retrain_subsets: int = typer.Option(8, "--retrain-subsets"),
) -> None:
    """Compute-matched curve: Shapley LDS against compute for each method."""
    from diffattr.evaluate.protocol import compute_curve

    res = compute_curve(run_dir, method or None, budgets, retrain_subsets)
    for m, pts in res["curves"].items():
        for p in pts:
            typer.echo(
                f"{m}: {p['budget_seconds']:.0f} s, {p['subsets']} subsets, "
                f"{p['behavior']} LDS {p['lds']:.1f}"
            )


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(...),
    out: Path | None = typer.Option(None, "--out", help="default RUN_DIR/report.html"),
) -> None:
    """Write a self-contained report.html with plots of the run and its evaluations."""
    from diffattr.report import write_report

    typer.echo(f"wrote {write_report(run_dir, out)}")


def _register_optional() -> None:
    """Commands implemented in their own modules (kept there so each stage owns its CLI)."""
    import importlib

    for module, name, attr in [
        ("diffattr.estimators.cli", "estimate", "estimate"),
        ("diffattr.behaviors.cli", "measure", "measure"),
        ("diffattr.sparsify.cli", "prune", "prune"),
    ]:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        app.command(name)(getattr(mod, attr))


_register_optional()


def main() -> None:
    try:
        rc = app(standalone_mode=False)
    except DiffattrError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
