"""Baselines in a run: each scores the full model directly (TRAK-type, similarity,
heuristic, DAS, EK-FAC), on the run's generated samples (the same seeds as the jobs), its
features cached under the run's cache folder; aggregated to the run's players. What a
baseline cost (featurize / score / wall seconds, cache hits) goes to the run's
``baseline_costs`` (summary.json), not to the values, so a resumed run writes the same
values.json."""

from __future__ import annotations

from typing import Any

from diffattr.baselines.settings import BaselineSettings
from diffattr.errors import DiffattrError
from diffattr.runner.job import worker_for


def score_baseline(run: Any, jobs: Any, est: BaselineSettings, errors: list[str] | None) -> list:
    """The attributions of baseline ``est`` for ``run`` (a ``Run``) and its ``jobs``: one per
    global behavior, and one per attributed generated image of each local behavior (per
    image); with ``errors`` given, a failure is reported there instead of raised."""
    baseline = est.build()
    try:
        family, dataset, players, data, full_dir, _ = run._base_models()
        target = baseline_target(run)
        full = run.reference_records(jobs)["full"]
        keys = sorted(full.behaviors) if full else None
        per_image = run.per_image_columns(full) if full else []
        if per_image:
            keys = [k for k in keys if k not in full.local]
        worker = worker_for(jobs.prepared.ctx)
        extractors = list(worker.suite.extractors.values())
        if (
            not extractors
            and est.name == "feature-similarity"
            and not est.space.startswith("clip:")  # a CLIP encoder the baseline loads itself
        ):
            # a run that measures only local behaviors has no feature space of its own:
            # compare images in the one its dataset's default behaviors would use
            from diffattr.behaviors.suite import build_suite

            default = build_suite(None, dataset, device=run.cfg.device, cache_dir=run.cache_dir)
            extractors = list(default.extractors.values())
        feature_fn = extractors[0].features if extractors else None
        attrs = []
        if keys:
            attrs = baseline.attribute(
                target,
                players,
                behaviors=keys,
                features=feature_fn,
                measure=worker.measure,
                cache_dir=run.cache_dir,
                progress=run.progress,
            )
        if per_image:
            try:
                attrs += baseline.attribute_per_image(
                    target,
                    players,
                    per_image,
                    features=feature_fn,
                    cache_dir=run.cache_dir,
                    progress=run.progress,
                )
            except DiffattrError as e:
                if errors is None or not attrs:
                    raise
                errors.append(f"{est.name} (per generated image): {e}")
    except DiffattrError as e:
        if errors is None:
            raise
        errors.append(f"{est.name}: {e}")
        return []
    for a in attrs:
        cost = {k: a.settings.pop(k) for k in ("seconds", "cache") if k in a.settings}
        if cost:
            label = str(a.settings.get("label", est.name))
            if (a.behavior or "").partition("#")[2]:  # one per generated image: one cost
                label += " (per generated image)"
            run.baseline_costs[label] = cost
        a.settings = {**a.settings, "method": "full model (no coalitions)"}
    return attrs


def baseline_target(run: Any):
    """The run's full model as a baseline target (built once per ``Run``)."""
    if getattr(run, "_target", None) is None:
        family, dataset, players, data, full_dir, _ = run._base_models()
        s = run.cfg.sample
        state = family.load(full_dir)
        run._target = family.baseline_target(
            state.model, data, num_samples=s.num_samples, seed=s.seed, ddim_steps=s.ddim_steps
        )
    return run._target
