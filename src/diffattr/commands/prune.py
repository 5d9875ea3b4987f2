"""``diffattr prune``: prune a trained model, fine-tune it on its data, save it.

The same preparation ``sft`` makes once per run (prune the full model's EMA weights,
fine-tune the pruned model on all data with the full model's recipe), as a command: it runs
the ``sft`` method's ``prepare`` into ``--out`` and reports parameters and MACs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from diffattr.errors import DiffattrError


def prune(
    base_dir: Path = typer.Argument(..., help="model directory to prune (e.g. from train)"),
    pruner: str = typer.Option(
        "magnitude", "--pruner", help="magnitude | taylor | random | diff-pruning"
    ),
    ratio: float = typer.Option(0.3, "--ratio", help="share of channels removed, in (0, 1)"),
    finetune_steps: int = typer.Option(
        1000, "--finetune-steps", help="fine-tuning steps on all data after pruning (0: none)"
    ),
    out: Path = typer.Option(..., "--out", help="directory of the pruned model"),
    device: str = typer.Option("cpu", "--device", help="torch device"),
    seed: int = typer.Option(0, "--seed", help="seed of the pruning batch and fine-tuning"),
    samples: int = typer.Option(64, "--samples", help="images in samples.png (0: none)"),
) -> None:
    """Prune a model (Diff-Pruning / torch-pruning), fine-tune it on all data, save it."""
    from diffattr.config import RunConfig
    from diffattr.counterfactual.base import build_method
    from diffattr.counterfactual.settings import METHODS
    from diffattr.data import load_dataset
    from diffattr.diffusion.checkpoint import read_meta
    from diffattr.fileio import check_dir_path
    from diffattr.images import save_grid
    from diffattr.torchutils import check_device

    out = check_dir_path(out, "--out")  # a file there is one line, before any work
    check_device(device)
    meta = read_meta(base_dir)
    stored = meta.get("config") or {}
    if "data" not in stored:
        raise DiffattrError(f"{base_dir}/diffattr.json records no [data] config")
    cfg = RunConfig.from_dict(
        {k: v for k, v in stored.items() if k in ("data", "family", "train", "sample")},
        source=f"{base_dir}/diffattr.json",
    )
    settings = METHODS.parse(
        {
            "name": "sft",
            "pruner": pruner,
            "ratio": ratio,
            "finetune_steps": finetune_steps,
            "seed": seed,
        },
        "prune",
    )
    family = cfg.family.build(device)
    dataset = load_dataset(cfg.data)
    family.check_model(base_dir, dataset)
    data = family.training_set(dataset, out / "cache")
    method = build_method(settings, family, base_dir, out)
    method.prepare(data)
    prepared = method._read_prepared() or {}
    report = prepared.get("pruning", {})
    path = out / "pruned"
    if samples:
        images = family.sample(
            method.pruned_model, samples, seed=cfg.sample.seed, ddim_steps=cfg.sample.ddim_steps
        )
        save_grid(images, path / "samples.png")
    before, after = report.get("params_before", 0), report.get("params_after", 0)
    macs0, macs1 = report.get("macs_before") or 0.0, report.get("macs_after") or 0.0
    typer.echo(
        f"parameters: {before:,} -> {after:,} "
        f"({100 * (1 - after / max(before, 1)):.1f} % removed)\n"
        f"MACs:       {macs0 / 1e6:,.2f} M -> {macs1 / 1e6:,.2f} M "
        f"({100 * (1 - macs1 / max(macs0, 1e-12)):.1f} % removed)\n"
        + (
            f"conv widths: {', '.join(map(str, report['conv_widths']))}\n"
            if report.get("conv_widths")
            else ""
        )
        + f"model: {path}"
    )
