"""``attribute``: run one baseline on a :class:`DiffusionTarget` and aggregate to players.

>>> from diffattr.baselines import DiffusionTarget, attribute
>>> target = DiffusionTarget.from_unet(ema_unet, dataset.images, num_generated=100,
...                                    ddim_steps=100, seed=0)
>>> attribute("trak", target, players, cache_dir=run_dir / "cache")   # -> [Attribution]
>>> local_scores("pixel-similarity", target).scores                    # (G, N)

Every attribution's ``settings`` holds the baseline's settings, its ``label``
(``name[aggregation]``), ``seconds`` = ``{featurize, score, wall}`` (featurize: the compute
cost of the features, read from the cache record on a hit, so compute-matched comparisons
see the real cost; score: kernel, scores and aggregation of this call; wall: this call),
``cache`` (hit / miss / off per feature set) and details of the computation.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffattr.baselines.cache import FeatureCache, stable_key
from diffattr.baselines.clip import ClipFeatures
from diffattr.baselines.gradients import (
    basic_block_size,
    fixed_timesteps,
    journey_probes,
    noise_probes,
    project_gradients,
    resolve_projector,
)
from diffattr.baselines.scores import (
    aggregate_local,
    cosine_scores,
    gradient_scores,
    player_members,
)
from diffattr.baselines.settings import (
    BaselineSettings,
    FeatureSimilaritySettings,
    GradientSettings,
    JourneyTrakSettings,
    PixelSimilaritySettings,
    PropertyHeuristicSettings,
    parse_baseline,
)
from diffattr.baselines.target import DiffusionTarget, tensor_digest
from diffattr.behaviors.keys import BehaviorKey, split_image_key
from diffattr.behaviors.settings import LOCAL
from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import Attribution

Features = Callable[[torch.Tensor], Any]
Measure = Callable[[torch.Tensor], dict[str, float]]


class Baseline:
    """A baseline built from its settings (``BASELINES.parse("trak").build()``), in traker's
    phases on a :class:`DiffusionTarget`: :meth:`featurize` computes the training or the
    generated examples' features (content-keyed cache), :meth:`score` scores every
    generated example against every training example from them, :meth:`local_scores` runs
    both; :meth:`attribute` aggregates those scores to players (the property heuristic
    instead measures each player's own images). The module's functions of the same names
    take the settings instead of the object."""

    def __init__(self, settings: BaselineSettings | dict[str, Any] | str) -> None:
        self.settings = parse_baseline(settings)

    @property
    def name(self) -> str:
        return self.settings.name

    def featurize(
        self, target: DiffusionTarget, role: str = "train", **options: Any
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """``featurize(settings, target, role, features=, cache_dir=, progress=)``."""
        return featurize(self.settings, target, role, **options)

    def score(
        self,
        train_features: torch.Tensor,
        gen_features: torch.Tensor,
        device: torch.device | str = "cpu",
    ) -> np.ndarray:
        """``score(settings, train_features, gen_features, device)``."""
        return score(self.settings, train_features, gen_features, device)

    def local_scores(self, target: DiffusionTarget, **options: Any) -> LocalScores:
        """``local_scores(settings, target, features=, cache_dir=, progress=)``: both
        phases (``featurize`` train and generated, then ``score``) or the baseline's own."""
        return local_scores(self.settings, target, **options)

    def attribute(self, target: DiffusionTarget, players: Any, **options: Any) -> list[Attribution]:
        """``attribute(settings, target, players, behaviors=, features=, measure=,
        cache_dir=, progress=)``: one Attribution per behavior."""
        return attribute(self.settings, target, players, **options)

    def attribute_per_image(
        self, target: DiffusionTarget, players: Any, keys: Sequence[str], **options: Any
    ) -> list[Attribution]:
        """``attribute_per_image(settings, target, players, keys, ...)``."""
        return attribute_per_image(self.settings, target, players, keys, **options)

    def __repr__(self) -> str:
        return f"Baseline({self.settings!r})"


def attribute(
    settings: BaselineSettings | dict[str, Any] | str,
    target: DiffusionTarget,
    players: Any,
    *,
    behaviors: Sequence[str] | None = None,
    features: Features | None = None,
    measure: Measure | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> list[Attribution]:
    """Values of ``players`` under the baseline ``settings`` (settings object, registry name
    or ``{name = ..., ...}`` table).

    Args:
        target: model, schedule, training and generated examples.
        players: a ``Players`` (``members[i]`` = indices into ``target.x0_train``) or a list
            of index arrays.
        behaviors: behaviour keys to return attributions for. Gradient and similarity
            scores do not depend on the behaviour: the same values are returned once per
            key (``behavior`` set), or once with ``behavior=None`` when not given. The
            heuristic returns one attribution per key (default: every key ``measure``
            returns).
        features: ``features(images (N, C, H, W) in [-1, 1]) -> (N, d)`` for
            ``feature-similarity`` (e.g. ``get_extractor(...).features``; its ``key``, or
            that of the object it is bound to, keys the cache), unless ``space`` is
            ``clip:<dir>``.
        measure: ``measure(images) -> {behavior_key: value}`` for ``property-heuristic``.
        cache_dir: folder of the content-keyed feature cache (None: no cache).
    """
    s = parse_baseline(settings)
    if not isinstance(target, DiffusionTarget):
        raise DiffattrError("baselines need a DiffusionTarget")
    names, members = player_members(players, target.n_train)
    t0 = time.perf_counter()
    if isinstance(s, PropertyHeuristicSettings):
        return _heuristic(s, target, names, members, measure, behaviors, t0)
    local = local_scores(s, target, features=features, cache_dir=cache_dir, progress=progress)
    t_agg = time.perf_counter()
    values, stderr = aggregate_local(
        local.scores, members, s.aggregation, s.aggregate_per_generated
    )
    info = _local_info(s, target, local, t0, t_agg)
    keys: list[str | None] = list(behaviors) if behaviors else [None]
    return [
        orient_local(
            Attribution(values, stderr, names, s.name, settings=copy.deepcopy(info), behavior=k)
        )
        for k in keys
    ]


def attribute_per_image(
    settings: BaselineSettings | dict[str, Any] | str,
    target: DiffusionTarget,
    players: Any,
    keys: Sequence[str],
    *,
    features: Features | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> list[Attribution]:
    """One attribution per key ``name[space]#i`` of a local behavior attributed per
    generated image: the players' values for generated image i alone (its row of the local
    scores, aggregated over each player's images). The scores do not depend on the behavior:
    keys of the same image get the same values."""

    s = parse_baseline(settings)
    if isinstance(s, PropertyHeuristicSettings):
        raise DiffattrError(
            "property-heuristic measures each player's own images, not generated images: it "
            "has no attribution per generated image"
        )
    names, members = player_members(players, target.n_train)
    t0 = time.perf_counter()
    local = local_scores(s, target, features=features, cache_dir=cache_dir, progress=progress)
    t_agg = time.perf_counter()
    rows: dict[int, np.ndarray] = {}
    for key in keys:
        _, image = split_image_key(key)
        if image is None or not 0 <= image < local.scores.shape[0]:
            raise DiffattrError(
                f"{key!r} names no generated image of the target (it has {target.n_gen})"
            )
        if image not in rows:
            rows[image] = aggregate_local(
                local.scores[image : image + 1], members, s.aggregation, s.aggregate_per_generated
            )[0]
    info = _local_info(s, target, local, t0, t_agg)
    nan = np.full(len(names), np.nan)
    return [
        orient_local(
            Attribution(
                rows[split_image_key(k)[1]].copy(),
                nan,
                names,
                s.name,
                settings=copy.deepcopy(info),
                behavior=k,
            )
        )
        for k in keys
    ]


def orient_local(a: Attribution) -> Attribution:
    """A baseline's attribution of a local behavior, oriented as the behavior's change.

    A local score is larger where the generated image depends more on the training image
    (a first-order estimate: keeping the image lowers the generated image's loss). For a
    local behavior that is a loss or a distance to the full model's image (``mse``,
    ``nrmse``, ``denoising-loss``: lower is better) keeping such an image *lowers* the
    behavior, so its attribution is the negated score; for a similarity (``ssim``, CLIP) the
    score as it is. Applied to per-image keys and to a local behavior's mean (known by its
    name); global behaviors (FID, IS) get the behavior-independent scores unchanged."""

    if a.behavior is None:
        return a
    key = BehaviorKey.parse(a.behavior)
    if key.name in LOCAL and key.lower_is_better:
        a.values = -a.values
        a.settings = {**a.settings, "orientation": "negated (lower is better: a loss or distance)"}
    return a


@dataclass
class LocalScores:
    """Scores (G, N) of every generated example against every training example, with the
    compute cost of the features (``featurize_seconds``, from the cache record on a hit) and
    of the scores, the cache outcome per feature set and details of the computation."""

    scores: np.ndarray
    featurize_seconds: float
    score_seconds: float
    cache: dict[str, str]
    details: dict[str, Any]


def local_scores(
    settings: BaselineSettings | dict[str, Any] | str,
    target: DiffusionTarget,
    *,
    features: Features | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> LocalScores:
    """Local scores (generated x training) of a gradient or similarity baseline; larger =
    the training example is more responsible for / more similar to the generated one."""
    s = parse_baseline(settings)
    if s.local_implementation is not None:  # DAS, EK-FAC: modules of their own
        import importlib

        module, _, name = s.local_implementation.partition(":")
        return getattr(importlib.import_module(module), name)(s, target, cache_dir, progress)
    if isinstance(s, GradientSettings):
        return _gradient_local(s, target, cache_dir, progress)
    if isinstance(s, PixelSimilaritySettings):
        t0 = time.perf_counter()
        gen = target.pixels_gen().float().cpu()
        train = target.pixels_train().float().cpu()
        t1 = time.perf_counter()
        scores = cosine_scores(gen, train)
        details = {"space": "pixel", "pixel_shape": list(train.shape[1:])}
        return LocalScores(scores, t1 - t0, time.perf_counter() - t1, {}, details)
    if isinstance(s, FeatureSimilaritySettings):
        return _feature_local(s, target, features, cache_dir)
    raise DiffattrError(f"{s.name!r} has no local scores (it scores players directly)")


def featurize(
    settings: BaselineSettings | dict[str, Any] | str,
    target: DiffusionTarget,
    role: str = "train",
    *,
    features: Features | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """traker's first phase: the per-example features (N, d) of the training (``role =
    "train"``) or generated (``"gen"``) examples, and a record (``seconds``, ``cache``).
    Gradient baselines: projected loss gradients (Journey-TRAK's generated side is its
    trajectory, ``"journey"``, also reached as ``"gen"``); similarity baselines: pixels or
    the extractor's features. DAS, EK-FAC and the heuristic have no separate phases."""
    s = parse_baseline(settings)
    if isinstance(s, GradientSettings) and s.local_implementation is None:
        if role == "gen" and isinstance(s, JourneyTrakSettings):
            role = "journey"
        return gradient_features(s, target, role, cache_dir, progress)
    if isinstance(s, PixelSimilaritySettings):
        if role not in ("train", "gen"):
            raise DiffattrError(f"pixel-similarity featurizes 'train' or 'gen', not {role!r}")
        t0 = time.perf_counter()
        px = (target.pixels_train() if role == "train" else target.pixels_gen()).float().cpu()
        return px.reshape(px.shape[0], -1), {"seconds": time.perf_counter() - t0, "cache": "off"}
    if isinstance(s, FeatureSimilaritySettings):
        return similarity_features(s, target, role, features, cache_dir)
    raise DiffattrError(
        f"{s.name!r} has no separate featurize phase; use local_scores or attribute"
    )


def score(
    settings: BaselineSettings | dict[str, Any] | str,
    train_features: torch.Tensor,
    gen_features: torch.Tensor,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """traker's second phase: scores (G, N) of the generated examples' features against the
    training examples' (``featurize``'s output): the gradient baseline's score variant, or
    cosine similarity for the similarity baselines."""
    s = parse_baseline(settings)
    if isinstance(s, GradientSettings) and s.local_implementation is None:
        return gradient_scores(train_features, gen_features, s.score, s.regularization, device)
    if isinstance(s, PixelSimilaritySettings | FeatureSimilaritySettings):
        return cosine_scores(gen_features, train_features)
    raise DiffattrError(f"{s.name!r} has no separate score phase; use local_scores or attribute")


# ----------------------------------------------------------------------------- gradients


def gradient_features(
    s: GradientSettings,
    target: DiffusionTarget,
    role: str,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Projected gradient features of ``role`` (``train``, ``gen`` or ``journey``) and a
    record ``{cache, seconds, key, ...}``; cached under ``cache_dir/baselines/gradients``."""

    device = torch.device(target.device)
    projector = resolve_projector(s.projector, device, s.projection_dim)
    output = s.train_output if role == "train" else s.gen_output
    fields: dict[str, Any] = {
        "kind": "gradients",
        "role": role,
        "output": output,
        "model": target.digest("model"),
        "function": target.function_id(),
        "schedule": target.digest("schedule"),
        "projector": projector,
        "projection_dim": None if projector == "none" else s.projection_dim,
        "projection_seed": s.seed,
        "device_type": device.type,
    }
    if getattr(s, "layers", None) is not None:  # DAS: a subset of the parameters
        fields["layers"] = list(s.layers)
    if projector == "basic":
        grad_dim = sum(p.numel() for p in target.named_params().values())
        fields["projector_block"] = basic_block_size(grad_dim, s.projection_dim)
    if role in ("train", "gen"):
        fields["data"] = target.digest(role)
        fields["timesteps"] = s.timesteps
        fields["noise_seed"] = s.seed
        fields["shared_noise"] = s.shared_noise
    elif role == "journey":
        assert isinstance(s, JourneyTrakSettings)
        fields["data"] = target.digest("gen")
        fields["journey_points"] = s.journey_points
        if target.trajectory is not None:
            traj = target.trajectory.select(s.journey_points)
            fields["trajectory"] = tensor_digest(traj.states) + ":" + tensor_digest(traj.timesteps)
        else:
            fields["trajectory"] = [target.ddim_steps, target.sample_seed, target.sample_start]
    else:
        raise DiffattrError(f"unknown feature role {role!r}")
    key = stable_key(fields)
    cache = FeatureCache(cache_dir, "gradients")
    hit = cache.load(key)
    if hit is not None:
        feats, record = hit
        return feats, dict(record, cache="hit")
    t0 = time.perf_counter()
    if role == "journey":
        traj = target.get_trajectory(s.journey_points)
        source = journey_probes(traj, target.cond_gen, target.scheduler)
    else:
        x0 = target.x0_train if role == "train" else target.x0_gen
        cond = target.cond_train if role == "train" else target.cond_gen
        ts = fixed_timesteps(s.timesteps, target.num_train_timesteps)
        source = noise_probes(x0, cond, target.scheduler, ts, s.seed, role, s.shared_noise)
    result = project_gradients(
        target,
        source,
        output,
        projection_dim=s.projection_dim,
        seed=s.seed,
        projector=s.projector,
        buffer_mb=s.buffer_mb,
        batch_size=s.batch_size,
        per_example=s.per_example,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    record = {"fields": fields, "seconds": seconds, **result.info}
    cache.save(key, result.features, record)
    return result.features, dict(record, key=key, cache="miss" if cache.enabled else "off")


def _gradient_local(s: GradientSettings, target, cache_dir, progress):
    train, r_train = gradient_features(s, target, "train", cache_dir, progress)
    gen_role = "journey" if isinstance(s, JourneyTrakSettings) else "gen"
    gen, r_gen = gradient_features(s, target, gen_role, cache_dir, progress)
    t_score = time.perf_counter()
    device = target.device if torch.device(target.device).type == "cuda" else "cpu"
    scores = gradient_scores(train, gen, s.score, s.regularization, device)
    featurize = float(r_train["seconds"]) + float(r_gen["seconds"])
    cache = {"train": r_train["cache"], gen_role: r_gen["cache"]}
    details = {
        "score": s.score,
        "train_output": s.train_output,
        "gen_output": s.gen_output,
        "train_features": _summary(r_train),
        f"{gen_role}_features": _summary(r_gen),
    }
    return LocalScores(scores, featurize, time.perf_counter() - t_score, cache, details)


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("key", "seconds", "per_example", "projector", "feature_dim", "grad_dim")
    out = {k: record[k] for k in keep if k in record}
    out.update({k: v for k, v in record.items() if k == "vmap_failed"})
    out["probes_per_example"] = record.get("probes_per_example")
    return out


# ----------------------------------------------------------------------------- features


def _extractor_key(features: Any) -> str | None:
    for obj in (features, getattr(features, "__self__", None)):
        key = getattr(obj, "key", None)
        if isinstance(key, str) and key:
            return key
    return None


def _resolve_extractor(s: FeatureSimilaritySettings, target, features):
    if features is not None:
        return features
    if s.space.startswith("clip:"):
        return ClipFeatures(s.space[len("clip:") :], device=target.device)
    raise DiffattrError(
        f"feature-similarity in space {s.space!r} needs the features callable "
        "(features=extractor.features), or space 'clip:<local model dir>'"
    )


def similarity_features(
    s: FeatureSimilaritySettings,
    target: DiffusionTarget,
    role: str,
    features: Features | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Extractor features of the ``train`` or ``gen`` images and a record ``{cache,
    seconds, ...}``; cached under ``cache_dir/baselines/features`` when the extractor has a
    ``key``."""
    if role not in ("train", "gen"):
        raise DiffattrError(f"feature-similarity featurizes 'train' or 'gen', not {role!r}")
    features = _resolve_extractor(s, target, features)
    ext_key = _extractor_key(features)
    cache = FeatureCache(cache_dir if ext_key else None, "features")
    fields = {
        "kind": "features",
        "space": s.space,
        "extractor": ext_key,
        "data": target.digest(f"pixels_{role}"),
    }
    key = stable_key(fields)
    hit = cache.load(key)
    if hit is not None:
        feats, meta = hit
        return feats, {"seconds": float(meta["seconds"]), "extractor": ext_key, "cache": "hit"}
    t0 = time.perf_counter()
    images = target.pixels_train() if role == "train" else target.pixels_gen()
    feats = _run_features(features, images, s.batch_size)
    sec = time.perf_counter() - t0
    cache.save(key, feats, {"fields": fields, "seconds": sec})
    return feats, {
        "seconds": sec,
        "extractor": ext_key,
        "cache": "miss" if cache.enabled else "off",
    }


def _feature_local(s: FeatureSimilaritySettings, target, features, cache_dir):
    features = _resolve_extractor(s, target, features)
    train, r_train = similarity_features(s, target, "train", features, cache_dir)
    gen, r_gen = similarity_features(s, target, "gen", features, cache_dir)
    t_score = time.perf_counter()
    scores = cosine_scores(gen, train)
    seconds = float(r_train["seconds"]) + float(r_gen["seconds"])
    record = {"train": r_train["cache"], "gen": r_gen["cache"]}
    details = {
        "space": s.space,
        "extractor": r_train["extractor"],
        "feature_dim": int(train.shape[1]),
    }
    return LocalScores(scores, seconds, time.perf_counter() - t_score, record, details)


def _run_features(features: Features, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    parts = []
    for lo in range(0, images.shape[0], batch_size):
        with torch.no_grad():
            f = features(images[lo : lo + batch_size])
        f = torch.as_tensor(np.asarray(f.detach().cpu() if isinstance(f, torch.Tensor) else f))
        if f.ndim != 2 or f.shape[0] != min(batch_size, images.shape[0] - lo):
            raise DiffattrError(
                f"features(images) must return one row per image, got shape {tuple(f.shape)}"
            )
        parts.append(f.float())
    out = torch.cat(parts)
    if not torch.isfinite(out).all():
        raise DiffattrError("the feature extractor returned non-finite features")
    return out


# ----------------------------------------------------------------------------- heuristic


def _heuristic(s, target, names, members, measure, behaviors, t0):
    if measure is None:
        raise DiffattrError("property-heuristic needs measure(images) -> {behavior: value}")
    images = target.pixels_train()
    per_player: list[list[dict[str, float]]] = []
    for m in members:
        size = len(m) if s.chunk_size == 0 else s.chunk_size
        chunks = [m[i : i + size] for i in range(0, len(m), size)]
        results = []
        for c in chunks:
            out = measure(images[torch.as_tensor(c)])
            if not isinstance(out, dict) or not out:
                raise DiffattrError("measure(images) must return a non-empty {behavior: value}")
            results.append(out)
        per_player.append(results)
    featurize = time.perf_counter() - t0
    keys = list(behaviors) if behaviors else list(per_player[0][0])
    t_score = time.perf_counter()
    table: dict[str, np.ndarray] = {}
    for key in keys:
        vals = []
        for name, results in zip(names, per_player):
            try:
                chunk_vals = np.array([float(r[key]) for r in results])
            except KeyError:
                raise DiffattrError(f"measure returned no behavior {key!r}") from None
            if not np.isfinite(chunk_vals).all():
                raise DiffattrError(f"behavior {key!r} is not finite on player {name!r}'s images")
            vals.append(
                {"sum": chunk_vals.sum, "mean": chunk_vals.mean, "max": chunk_vals.max}[
                    s.aggregation
                ]()
            )
        table[key] = np.array(vals)
    now = time.perf_counter()
    info = _info(
        s,
        target,
        seconds={"featurize": featurize, "score": now - t_score, "wall": now - t0},
        cache={},
        details={"chunks": int(sum(len(r) for r in per_player))},
    )
    nan = np.full(len(names), np.nan)
    return [
        Attribution(table[k], nan, names, s.name, settings=copy.deepcopy(info), behavior=k)
        for k in keys
    ]


# ----------------------------------------------------------------------------- records


def _local_info(s, target, local, t0: float, t_agg: float) -> dict:
    """``_info`` of scores from ``local_scores``: its featurize and score seconds (the
    aggregation, from ``t_agg``, counted as scoring) and the wall time since ``t0``."""
    now = time.perf_counter()
    seconds = {
        "featurize": local.featurize_seconds,
        "score": local.score_seconds + (now - t_agg),
        "wall": now - t0,
    }
    return _info(s, target, seconds=seconds, cache=local.cache, details=local.details)


def _info(s: BaselineSettings, target: DiffusionTarget, **extra: Any) -> dict[str, Any]:
    info = s.to_dict()
    info.update(
        label=s.label,
        baseline=s.family,
        n_train=target.n_train,
        n_generated=target.n_gen,
        exact=False,
    )
    info.update(extra)
    return _plain(info)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
