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
    """Write a commented default configuration file."""
    if path.exists() and not force:
        raise DiffattrError(f"{path} exists; pass --force to overwrite it")
    path.write_text(RunConfig().commented_toml())
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
        app(standalone_mode=False)
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


if __name__ == "__main__":
    main()
