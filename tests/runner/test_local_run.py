"""A run with local behaviors end to end: per-image values in the store, the full model's job
exact against itself, one attribution per generated image (or for their mean), resumed and
refitted like a global behavior, per-image LDS, the report's section."""

import json

import numpy as np
import pytest

from conftest import small_cfg


@pytest.mark.slow
def test_a_run_with_local_behaviors_resumes_refits_and_scores_per_image(tmp_path, full_model):
    from diffattr.evaluate.lds import LDSProtocol, run_lds
    from diffattr.report import write_report
    from diffattr.runner import run_attribution
    from diffattr.runner.run import Run
    from diffattr.store import Store

    run_dir = tmp_path / "run"
    extra = {
        "behaviors.measure": ["fid", "ssim", "mse"],
        "attribution.estimators": ["datamodel", {"name": "pixel-similarity"}],
        "attribution.local_images": 3,
        "sample.num_samples": 16,
        "sample.batch_size": 16,
    }
    cfg = small_cfg(full_model, **extra)
    first = run_attribution(cfg, run_dir, progress=False)
    assert first.failed == 0 and first.values_written
    # the full model's images are cached once in the run directory
    (cached,) = (run_dir / "cache" / "full-samples").glob("*.safetensors")
    with Store(run_dir / "store.sqlite", readonly=True) as s:
        recs = s.records()
        finished = {r.key: r.finished for r in recs}
    with Run(cfg, run_dir, progress=False) as run:
        plan = run.jobs()
        full = run.reference_records(plan)["full"]
        null = run.reference_records(plan)["null"]
    assert set(full.local) == {"ssim[pixel]", "mse[pixel]"}
    assert (full.local["ssim[pixel]"] == 1).all() and (full.local["mse[pixel]"] == 0).all()
    assert full.local["ssim[pixel]"].shape == (16,)
    assert full.behaviors["ssim[pixel]"] == 1.0 and full.behaviors["mse[pixel]"] == 0.0
    assert (null.local["ssim[pixel]"] < 1).all()
    coalition = next(r for r in recs if r.kind == "fit")
    assert coalition.behaviors["mse[pixel]"] == pytest.approx(coalition.local["mse[pixel]"].mean())
    values = json.loads((run_dir / "values.json").read_text())
    behaviors = {(a["estimator"], a["behavior"]) for a in values["attributions"]}
    for est in ("datamodel", "pixel-similarity"):
        assert {(est, f"ssim[pixel]#{i}") for i in range(3)} <= behaviors
        assert (est, "ssim[pixel]") not in behaviors  # per image, not the mean
        assert any(b.startswith("fid[") for e, b in behaviors if e == est)
    # a baseline's score lowers a distance and raises a similarity: mse gets -score
    by_key = {(a["estimator"], a["behavior"]): a["values"] for a in values["attributions"]}
    for i in range(3):
        sim = np.array(by_key[("pixel-similarity", f"ssim[pixel]#{i}")])
        assert np.array(by_key[("pixel-similarity", f"mse[pixel]#{i}")]) == pytest.approx(-sim)
    # resumed: nothing runs again, the same values
    again = run_attribution(cfg, run_dir, progress=False)
    assert again.failed == 0
    with Store(run_dir / "store.sqlite", readonly=True) as s:
        assert {r.key: r.finished for r in s.records()} == finished
    assert (
        json.loads((run_dir / "values.json").read_text())["attributions"] == values["attributions"]
    )
    # a baseline's timings and cache use live in summary.json, not in the values
    costs = json.loads((run_dir / "summary.json").read_text())["baseline_costs"]
    assert any(k.startswith("pixel-similarity") for k in costs)
    assert all({"seconds", "cache"} <= set(c) for c in costs.values())
    # per-image LDS: each image's LDS, averaged, with its interval
    lds = run_lds(run_dir, LDSProtocol((0.5,), 4, 1), progress=False).to_dict()
    by = {(r["estimator"], r["behavior"]): r for r in lds["results"]}
    r = by[("datamodel", "ssim[pixel]")]
    assert r["images"] == 3 and len(r["per_image_lds"]) == 3
    finite = [v for v in r["per_image_lds"] if np.isfinite(v)]
    assert r["lds"] == pytest.approx(np.mean(finite))  # one seed: the mean over images
    assert ("pixel-similarity", "mse[pixel]") in by and ("datamodel", "ssim[pixel]#0") not in by
    html = write_report(run_dir).read_text()
    assert "Credit for single generated images" in html
    # refitted for the mean instead: no job runs, one attribution per behavior
    mean_cfg = small_cfg(full_model, **extra, **{"attribution.local": "mean"})
    refit = run_attribution(mean_cfg, run_dir, progress=False)
    assert refit.failed == 0
    with Store(run_dir / "store.sqlite", readonly=True) as s:
        n_jobs = s.count()
        assert {r.key: r.finished for r in s.records() if r.key in finished} == finished
    behaviors = {a.behavior for a in refit.attributions if a.estimator == "datamodel"}
    assert {"ssim[pixel]", "mse[pixel]"} <= behaviors and not any("#" in b for b in behaviors)
    # more coalitions extend the run: only the new jobs run, and it refits
    more = run_attribution(
        small_cfg(full_model, **extra, **{"attribution.subsets": 28}), run_dir, progress=False
    )
    assert more.failed == 0
    with Store(run_dir / "store.sqlite", readonly=True) as s:
        assert s.count() > n_jobs
        assert {r.key: r.finished for r in s.records() if r.key in finished} == finished
    assert cached.is_file() and len(list(cached.parent.glob("*.safetensors"))) == 1


@pytest.mark.slow
def test_feature_similarity_in_a_run_of_local_behaviors_only(tmp_path, full_model):
    """No global behavior, so no feature space of the run's own: feature similarity compares
    images in the space the dataset's default behaviors use, per generated image."""
    from diffattr.runner import run_attribution

    cfg = small_cfg(
        full_model,
        **{
            "behaviors.measure": ["ssim"],
            "attribution.estimators": [{"name": "feature-similarity"}],
            "attribution.local_images": 2,
            "sample.num_samples": 8,
            "sample.batch_size": 8,
        },
    )
    summary = run_attribution(cfg, tmp_path / "run", progress=False)
    assert summary.failed == 0 and summary.values_written
    got = {a.behavior: a.values for a in summary.attributions}
    assert set(got) == {"ssim[pixel]#0", "ssim[pixel]#1"}
    assert all(np.isfinite(v).all() for v in got.values())
    assert not np.allclose(got["ssim[pixel]#0"], got["ssim[pixel]#1"])
