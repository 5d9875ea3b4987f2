"""Which feature spaces see quality? Behaviors of clean vs corrupted image sets (JSON).

A folder dataset is built from sklearn's digits: ten contributors ``digit0`` .. ``digit9``
(their real images) plus corrupted contributors (``noise``: uniform noise; ``blur``:
box-blurred digits; ``invert``: inverted digits), each as many images as one digit class.
It is written twice: as contributor subfolders (no semantic labels) and as a CSV with a
``label`` column (the digit; the noise contributor's images carry random digit labels, as
an uploader's claims would).

For every feature space each behavior is measured on

* ``clean``: a seeded set of real digits, and
* ``mixed``: the same set with a share of its images replaced by the corrupted
  contributors' images -- their share of the training data (``--share`` overrides it),

against two references: ``train`` (the whole folder, corrupted contributors included: the
paper's choice) and ``curated`` (a folder of the clean digits only). A space "sees quality"
for a behavior when the clean set scores better than the mixed one.

Spaces: ``digits-cnn`` (classifier of the digit classes), ``label-cnn`` (classifier of the
CSV label column), ``autoencoder`` (label-free, what ``auto`` picks for an unlabeled
folder), ``contributor-cnn`` (a classifier of the contributors: the trap the package never
picks), and ``inception`` when ``--inception-weights`` is given.

    python benchmarks/behaviors_noise.py --out behaviors_noise.json --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffattr.behaviors import build_suite
from diffattr.behaviors.features import ClassifierExtractor, module_digest, train_classifier
from diffattr.behaviors.settings import BEHAVIORS
from diffattr.behaviors.suite import suite_for_extractor
from diffattr.data.digits import load_digits
from diffattr.data.folder import load_folder

WITH_PROBS = ["fid", "is", "precision", "recall", "density", "coverage", "diversity-entropy"]
LABEL_FREE = [b for b in WITH_PROBS if b != "is"]
PER_CONTRIBUTOR = 180  # images of each corrupted contributor: about one digit class


def corrupt(kind: str, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if kind == "noise":
        return torch.rand(images.shape, generator=gen) * 2 - 1
    if kind == "blur":
        x = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return x.clamp(-1, 1)
    if kind == "invert":
        return -images
    raise SystemExit(f"unknown corruption {kind!r}; use noise, blur, invert")


def save_png(x: torch.Tensor, path: Path) -> None:
    a = ((x[0].numpy() + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(a, mode="L").save(path)


def build_folder(root: Path, kinds: list[str], per: int, seed: int):
    """Write the contributor folder, the labelled CSV and the curated folder."""
    digits = load_digits()
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = ["path,contributor,label"]
    corrupted = {}
    (root / "curated").mkdir(parents=True, exist_ok=True)
    for i in range(len(digits)):
        who = f"digit{int(digits.labels[i])}"
        rel = Path("by_contributor") / who / f"{i:04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        save_png(digits.images[i], root / rel)
        save_png(digits.images[i], root / "curated" / f"{i:04d}.png")
        rows.append(f"{rel},{who},{int(digits.labels[i])}")
    for kind in kinds:
        idx = torch.as_tensor(np.sort(rng.choice(len(digits), per, replace=False)))
        imgs = corrupt(kind, digits.images[idx], gen)
        corrupted[kind] = imgs
        for j, x in enumerate(imgs):
            rel = Path("by_contributor") / kind / f"{j:04d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            save_png(x, root / rel)
            label = int(rng.integers(10)) if kind == "noise" else int(digits.labels[idx[j]])
            rows.append(f"{rel},{kind},{label}")
    (root / "labelled.csv").write_text("\n".join(rows) + "\n")
    return digits, corrupted


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corruptions", default="noise,blur,invert")
    p.add_argument("--num", type=int, default=500, help="images per measured set")
    p.add_argument("--share", type=float, default=None, help="corrupted share of 'mixed'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inception-weights", default=None)
    p.add_argument("--work", default=None, help="folder for the images and caches (temp)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--markdown", action="store_true", help="print a markdown table to stderr")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    kinds = [k.strip() for k in args.corruptions.split(",") if k.strip()]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.work or tmp)
        cache = root / "cache"
        digits, corrupted = build_folder(root, kinds, per=PER_CONTRIBUTOR, seed=args.seed)
        folder = load_folder(root / "by_contributor")
        labelled = load_folder(root / "labelled.csv")
        n_bad = sum(len(v) for v in corrupted.values())
        share = args.share if args.share is not None else n_bad / len(folder)
        rng = np.random.default_rng(args.seed + 1)
        clean = folder.images[
            torch.as_tensor(rng.choice(np.flatnonzero(_clean_mask(folder, kinds)), args.num))
        ]
        n_mixed = int(round(share * args.num))
        bad = torch.cat(list(corrupted.values()))
        mixed = torch.cat(
            [clean[: args.num - n_mixed], bad[torch.as_tensor(rng.choice(len(bad), n_mixed))]]
        )
        references = {"train": "train", "curated": str(root / "curated")}
        spaces: dict[str, dict] = {}

        def record(space: str, ref: str, suite) -> None:
            a, b = suite.measure(clean), suite.measure(mixed)
            out = {}
            for key in suite.keys():
                name = key.split("[")[0]
                hib = BEHAVIORS.get(name).higher_is_better
                better = a[key] > b[key] if hib else a[key] < b[key]
                out[name] = {"clean": a[key], "mixed": b[key], "sees_quality": bool(better)}
            spaces.setdefault(space, {})[ref] = out
            d = suite.describe()["spaces"][0]
            spaces[space]["space"] = {
                k: d[k] for k in ("heldout_accuracy", "heldout_mse") if d.get(k) is not None
            }

        for ref_name, ref in references.items():
            for name, data, measure in (
                ("digits-cnn", folder, WITH_PROBS),
                ("label-cnn", labelled, WITH_PROBS),
                ("autoencoder", folder, LABEL_FREE),
            ):
                table = {"features": name, "reference": ref, "measure": measure}
                record(name, ref_name, build_suite(table, data, cache_dir=cache))
            if args.inception_weights:
                table = {
                    "features": {"name": "inception", "path": args.inception_weights},
                    "reference": ref,
                    "measure": WITH_PROBS,
                }
                record("inception", ref_name, build_suite(table, folder, cache_dir=cache))
        # The trap: a classifier of the contributors (never chosen by the package).
        model, rec = train_classifier(
            folder.images, folder.labels, len(folder.class_names), seed=args.seed
        )
        trap = ClassifierExtractor(model, "contributor-cnn", module_digest(model), rec)
        for ref_name in references:
            ref_images = folder.images if ref_name == "train" else digits.images
            suite = suite_for_extractor(trap, ref_images, WITH_PROBS, cache_dir=cache)
            record("contributor-cnn", ref_name, suite)
        result = {
            "setup": {
                "contributors": folder.class_names,
                "corruptions": kinds,
                "images": len(folder),
                "corrupted_images": n_bad,
                "measured_set": args.num,
                "mixed_share": round(share, 4),
                "seed": args.seed,
            },
            "spaces": spaces,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.markdown:
        print(markdown(result), file=sys.stderr)
    return result


def _clean_mask(ds, kinds: list[str]) -> np.ndarray:
    return np.array([c not in kinds for c in ds.contributor_of()])


def markdown(result: dict) -> str:
    names = WITH_PROBS
    lines = [
        "| space | reference | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for space, refs in result["spaces"].items():
        for ref in ("train", "curated"):
            cells = []
            for n in names:
                v = refs[ref].get(n)
                if v is None:
                    cells.append("—")
                    continue
                mark = "✓" if v["sees_quality"] else "✗"
                cells.append(f"{v['clean']:.3g} → {v['mixed']:.3g} {mark}")
            lines.append(f"| {space} | {ref} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
