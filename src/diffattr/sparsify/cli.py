"""``diffattr prune``: prune a trained model, fine-tune it on its data, save it.

Prunes the EMA weights of a model directory (see ``diffattr.sparsify.prune``), fine-tunes
the pruned model on the base model's dataset with the base model's recipe for
``--finetune-steps`` steps (fresh Adam and EMA), and writes a model directory that
``load_model`` reads like any other (the pruned UNet is stored by
``diffattr.sparsify.checkpoint``: config + widths + safetensors, no pickle).
"""

from __future__ import annotations

from pathlib import Path

import torch
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
    from diffattr.config import DataConfig, TrainConfig
    from diffattr.data import load_dataset
    from diffattr.diffusion.checkpoint import load_model, save_model
    from diffattr.diffusion.sample import generate
    from diffattr.diffusion.train import train
    from diffattr.images import save_grid
    from diffattr.sparsify.prune import prune_unet

    if finetune_steps < 0:
        raise DiffattrError(f"--finetune-steps must be >= 0, got {finetune_steps}")
    base = load_model(base_dir, device)
    meta = base.meta
    config = meta.get("config") or {}
    if "data" not in config:
        raise DiffattrError(f"{base_dir}/diffattr.json records no [data] config")
    dataset = load_dataset(DataConfig(**config["data"]))
    size = meta.get("dataset", {}).get("size")
    if size is not None and size != len(dataset):
        raise DiffattrError(
            f"the base model was trained on {size} images but its dataset now has {len(dataset)}"
        )
    train_cfg = meta.get("train_config") or config.get("train") or {}
    cfg = TrainConfig(**{**train_cfg, "seed": seed})
    gen = torch.Generator().manual_seed(seed)
    batch = dataset.images[torch.randperm(len(dataset), generator=gen)[: cfg.batch_size]]

    pruned, report = prune_unet(
        base.unet, ratio=ratio, pruner=pruner, example_images=batch.to(device), seed=seed
    )
    typer.echo(report.summary())
    out_meta = {
        **meta,
        "kind": "pruned",
        "base_model": str(base_dir),
        "pruning": {k: v for k, v in report.to_dict().items() if k not in ("layers", "groups")},
        "finetune_steps": finetune_steps,
    }
    if finetune_steps > 0:
        cfg = cfg.model_copy(update={"steps": finetune_steps})
        result = train(pruned, dataset.images, cfg, device=device, desc="fine-tune pruned model")
        out_meta.update(finetune_config=cfg.model_dump(), finetune_seconds=round(result.seconds, 3))
        path = result.save(out, out_meta)
        sampled = result.ema.model
    else:
        path = save_model(out, pruned, meta=out_meta)
        sampled = pruned
    if samples:
        sample_cfg = config.get("sample", {})
        images = generate(
            sampled,
            samples,
            ddim_steps=int(sample_cfg.get("ddim_steps", 100)),
            seed=int(sample_cfg.get("seed", 0)),
            device=device,
        )
        save_grid(images, path / "samples.png")
    typer.echo(
        f"parameters: {report.params_before:,} -> {report.params_after:,} "
        f"({100 * report.param_ratio:.1f} % removed)\n"
        f"MACs:       {report.macs_before / 1e6:,.2f} M -> {report.macs_after / 1e6:,.2f} M "
        f"({100 * report.mac_ratio:.1f} % removed)\n"
        f"model: {path}"
    )
