"""Influence functions with (E)K-FAC curvature for diffusion models (Mlodozeniec, Eschenhagen,
Bae, Immer, Krueger & Turner, "Influence Functions for Scalable Data Attribution in
Diffusion Models", ICLR 2025, arXiv 2410.13850), computed with ``kronfluence`` (Bae et al.;
Grosse et al. 2023), the maintained EK-FAC library: ``pip install 'diffattr[ekfac]'``.

The diffusion loss is an average over noise levels and noises, so each image is probed at
``timesteps`` fixed timesteps with a fixed noise each (the same probes as the TRAK-family
features, :func:`diffattr.baselines.gradients.noise_probes`), and every probe is one row of
kronfluence's data:

* the curvature is the generalised Gauss-Newton of the training loss over the training
  images' probes: kronfluence fits its Kronecker factors (and, for EK-FAC, the eigenvalue
  correction) from the gradients of the probe loss ``mean((eps_theta(x_t, t) - y)^2)`` with
  ``y`` drawn from the model's Gaussian ``N(eps_theta, D/2)`` (D = values per image), whose
  Fisher equals that loss's Gauss-Newton matrix;
* the score of training image i for generated image g is the average over their probe pairs
  of kronfluence's ``grad f^T (G + damping I)^-1 grad L`` -- that is, by linearity, the
  score of their probe-averaged gradients -- with ``f`` the generated image's probe loss:
  positive when upweighting image i lowers the loss of the generated image.

The factors depend only on the model, the training images and the probe settings; they are
fitted once and kept under ``<cache_dir>/baselines/ekfac/<key>/`` (``<key>.json`` records
what they hash and the seconds they took), so every later score -- other generated images,
another damping -- reuses them. Measured before choosing the library: ``kronfluence`` 1.0.1
imports and runs beside this project's CPU build of torch, but its declared dependency on
torchvision makes ``pip install kronfluence`` replace a CPU torch 2.13 with torch 2.14.1 and
the CUDA wheels (torchvision 0.29.1 pins that torch); kronfluence itself never imports
torchvision, so on a CPU build install it with ``--no-deps`` beside einops, einconv and
opt-einsum (the extra's error says so).

kronfluence's pairwise scores recompute every training probe's gradient once per batch of
generated probes it holds; with its default (one batch) the training gradients were the
cost, growing with the number of generated probes (256 generated images x 10 timesteps on
the digits game did not finish in half an hour). ``query_gb`` sets how many batches'
preconditioned gradients are held at once (``query_batches_at_once``), so a pass over the
training probes serves all of them; the scores are unchanged.

kronfluence tracks ``nn.Linear`` and ``nn.Conv2d`` modules: the pixel, class-conditional and
latent UNets. The text-to-image family applies its LoRA as plain matrices, so the run's
config refuses ``ekfac-influence`` there in one line (``EKFACSettings.family_problem``).
"""

from __future__ import annotations

import copy
import fnmatch
import gc
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffattr.baselines.api import LocalScores
from diffattr.baselines.cache import FeatureCache, stable_key, training_probe_fields
from diffattr.baselines.gradients import ProbeSource, fixed_timesteps, noise_probes
from diffattr.baselines.settings import EKFACSettings
from diffattr.baselines.target import DiffusionTarget
from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text

TRACKED = (nn.Linear, nn.Conv2d)


class ProbeRows(torch.utils.data.Dataset):
    """The probes of ``source`` as rows: row ``j`` is probe ``j % k`` of example ``j // k``."""

    def __init__(self, source: ProbeSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.n * self.source.k

    def __getitem__(self, j: int) -> dict[str, Any]:
        i, k = divmod(int(j), self.source.k)
        b = self.source.get(i, i + 1)
        row = {"x_t": b.x_t[0, k], "t": b.t[0, k], "eps": b.target[0, k]}
        if b.cond is not None:
            row["cond"] = torch.utils._pytree.tree_map(lambda v: v[0], b.cond)
        return row


def tracked_modules(model: nn.Module, layers: list[str] | None) -> list[str]:
    """Names of the ``nn.Linear`` / ``nn.Conv2d`` modules to track (fnmatch ``layers``)."""
    names = [n for n, m in model.named_modules() if isinstance(m, TRACKED)]
    if layers is not None:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in layers)]
    if not names:
        what = f"layers {layers} match none of" if layers is not None else "there are no"
        raise DiffattrError(f"ekfac-influence: {what} the model's nn.Linear / nn.Conv2d modules")
    return names


def _task(eps_fn, modules: list[str]):
    from kronfluence.task import Task

    class DiffusionLossTask(Task):
        """kronfluence's view of the diffusion loss: one probe per row."""

        def _predict(self, batch: dict[str, Any], model: nn.Module) -> torch.Tensor:
            return eps_fn(model, batch["x_t"], batch["t"], batch.get("cond")).float()

        def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
            eps = self._predict(batch, model)
            if sample:  # y ~ N(eps_theta, D/2): the Fisher is the loss's Gauss-Newton
                with torch.no_grad():
                    d = eps[0].numel()
                    y = eps + torch.randn_like(eps) * math.sqrt(d / 2)
            else:
                y = batch["eps"]
            return (eps - y).pow(2).flatten(1).mean(1).sum()

        def compute_measurement(self, batch, model) -> torch.Tensor:
            return self.compute_train_loss(batch, model)

        def get_influence_tracked_modules(self) -> list[str]:
            return modules

    return DiffusionLossTask()


def query_batches_at_once(model: nn.Module, modules: list[str], s: EKFACSettings) -> int:
    """How many query batches kronfluence accumulates before each pass over the training
    probes: as many as ``s.query_gb`` holds of their preconditioned gradients (float32, one
    per tracked parameter and probe). Each pass recomputes every training probe's gradient,
    so with one batch per pass (kronfluence's default) the cost of the training gradients
    grows with the number of generated probes; the scores are the same either way."""
    found = dict(model.named_modules())
    params = sum(p.numel() for name in modules for p in found[name].parameters(recurse=False))
    per_batch = 4 * max(params, 1) * s.batch_size
    return max(1, int(s.query_gb * 2**30 // per_batch))


def _require_kronfluence() -> None:
    EKFACSettings.check_available()


def ekfac_local(
    s: EKFACSettings,
    target: DiffusionTarget,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
):
    """EK-FAC influence scores (G, N) of every generated example against every training
    example, as :class:`diffattr.baselines.api.LocalScores`."""

    _require_kronfluence()
    from kronfluence import __version__ as kf_version
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    modules = tracked_modules(target.model, s.layers)
    ts = fixed_timesteps(s.timesteps, target.num_train_timesteps)
    factor_fields = {
        "kind": "ekfac-factors",
        "kronfluence": kf_version,
        "strategy": s.strategy,
        **training_probe_fields(target, s),
        "modules": modules,
    }
    fkey = stable_key(factor_fields)
    score_fields = {
        "kind": "ekfac-scores",
        "factors": fkey,
        "gen": target.digest("gen"),
        "damping": s.damping,
    }
    skey = stable_key(score_fields)
    score_cache = FeatureCache(cache_dir, "ekfac-scores")
    tmp = None
    if cache_dir is None:
        tmp = tempfile.mkdtemp(prefix="diffattr-ekfac-")
        root = Path(tmp)
    else:
        root = Path(cache_dir) / "baselines" / "ekfac"
    record_path = root / f"{fkey}.json"
    train_src = noise_probes(
        target.x0_train, target.cond_train, target.scheduler, ts, s.seed, "train", s.shared_noise
    )
    gen_src = noise_probes(
        target.x0_gen, target.cond_gen, target.scheduler, ts, s.seed, "gen", s.shared_noise
    )
    k = len(ts)
    cache_state: dict[str, str] = {}
    frozen = False
    try:
        hit = score_cache.load(skey)
        factors = _read_record(record_path)
        if hit is not None and factors is not None:
            scores = hit[0].double().numpy()
            cache_state = {"factors": "hit", "scores": "hit"}
            return LocalScores(
                scores,
                float(factors["seconds"]),
                0.0,
                cache_state,
                _details(s, modules, factors, score_fields),
            )
        # kronfluence calls gc.collect() after every stage; with the many objects of a run
        # alive that took most of its time (measured: 3 of 4.6 s on a tiny UNet, over 100 s
        # inside a test session). The objects alive now are not its garbage: collections
        # skip them until the end of this call.
        gc.freeze()
        frozen = True
        device = torch.device(target.device)
        model = prepare_model(copy.deepcopy(target.model).eval(), _task(target.eps_fn, modules))
        analyzer = Analyzer(
            fkey,
            model,
            _task(target.eps_fn, modules),
            cpu=device.type != "cuda",
            disable_tqdm=not progress,
            output_dir=str(root),
            log_level=logging.WARNING,
        )
        factor_args = FactorArguments(strategy=s.strategy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if factors is None:
                t0 = time.perf_counter()
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(s.seed)
                    analyzer.fit_all_factors(
                        "factors",
                        ProbeRows(train_src),
                        per_device_batch_size=s.batch_size,
                        factor_args=factor_args,
                        overwrite_output_dir=True,
                    )
                factors = {"fields": factor_fields, "seconds": time.perf_counter() - t0}
                atomic_write_text(record_path, json.dumps(factors, indent=2, sort_keys=True))
                cache_state["factors"] = "miss" if tmp is None else "off"
            else:
                cache_state["factors"] = "hit"
            t1 = time.perf_counter()
            steps = query_batches_at_once(target.model, modules, s)
            passes = math.ceil(math.ceil(gen_src.n * k / s.batch_size) / steps)
            raw = analyzer.compute_pairwise_scores(
                f"scores-{skey}",
                "factors",
                query_dataset=ProbeRows(gen_src),
                train_dataset=ProbeRows(train_src),
                per_device_query_batch_size=s.batch_size,
                per_device_train_batch_size=s.batch_size,
                score_args=ScoreArguments(
                    damping_factor=s.damping, query_gradient_accumulation_steps=steps
                ),
                overwrite_output_dir=True,
            )
        if raw is None:
            raw = analyzer.load_pairwise_scores(f"scores-{skey}")
        per_probe = raw["all_modules"].double().cpu()
        g, n = gen_src.n, train_src.n
        # float32 as cached, so a hit returns the very same values
        scores = per_probe.reshape(g, k, n, k).mean(dim=(1, 3)).float().double()
        if not torch.isfinite(scores).all():
            raise DiffattrError("ekfac-influence: non-finite scores (raise damping?)")
        score_cache.save(skey, scores.float(), {"fields": score_fields, "seconds": 0.0})
        cache_state["scores"] = "miss" if score_cache.enabled else "off"
        shutil.rmtree(root / fkey / f"scores_scores-{skey}", ignore_errors=True)
        details = _details(s, modules, factors, score_fields)
        details["passes_over_training_probes"] = passes
        return LocalScores(
            scores.numpy(),
            float(factors["seconds"]),
            time.perf_counter() - t1,
            cache_state,
            details,
        )
    finally:
        if frozen:
            gc.unfreeze()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _read_record(path: Path) -> dict[str, Any] | None:
    """The factors' record when kronfluence finished writing them (else None: refit)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or "seconds" not in record:
        return None
    factors_dir = path.with_suffix("") / "factors_factors"
    return record if factors_dir.is_dir() else None


def _details(s: EKFACSettings, modules, factors, score_fields) -> dict[str, Any]:
    return {
        "score": "influence",
        "strategy": s.strategy,
        "damping": s.damping,
        "modules": len(modules),
        "factors_key": stable_key(factors["fields"]),
        "factor_seconds": float(factors["seconds"]),
        "scores_key": stable_key(score_fields),
        "probes_per_example": s.timesteps,
        "library": "kronfluence",
        "kronfluence_version": factors["fields"].get("kronfluence"),
    }
