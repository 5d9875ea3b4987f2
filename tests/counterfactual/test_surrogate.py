"""The training-free ``surrogate`` counterfactual: the full conditional model sampled with the
labels of each coalition's data (one sampling rule for every method)."""

import csv
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from diffattr.config import RunConfig, build_config
from diffattr.counterfactual.settings import METHODS, SurrogateSettings
from diffattr.errors import DiffattrError, DiffattrWarning
from diffattr.runner.job import record_for, worker_for
from diffattr.runner.plan import make_plan
from diffattr.runner.run import Run

sys.path.insert(0, str(Path(__file__).parents[1] / "runner"))
from tiny import error_lines, run_cli, write_images  # noqa: E402

TINY = {
    "data": {"name": "digits", "limit_per_class": 8},
    "family": {"name": "conditional"},
    "train.steps": 12,
    "train.batch_size": 16,
    "sample.num_samples": 24,
    "sample.ddim_steps": 3,
    "sample.batch_size": 24,
    "attribution.subsets": 24,
    "method": {"name": "surrogate"},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = RunConfig().with_overrides(**TINY)
    run = Run(cfg, tmp_path_factory.mktemp("surrogate") / "run", progress=False)
    p = run.prepare()
    yield run, p
    run.close()


def test_registered_with_its_family_rule():
    assert "surrogate" in METHODS
    assert isinstance(METHODS.parse("surrogate"), SurrogateSettings)
    cfg = RunConfig().with_overrides(**TINY)
    assert cfg.method.family_problem(cfg.family) is None


def test_all_players_reproduce_the_full_models_samples(prepared):
    run, p = prepared
    worker = worker_for(p.ctx)
    n = p.n_players
    full = worker.family.load(p.full_dir).model
    spec = run.reference_specs(p)["method"]
    assert spec.method == "surrogate" and spec.mask == "1" * n
    rec = record_for(spec)
    model = worker.model_for(spec, rec)
    assert rec.extra["training_free"] is True and rec.t_train < 1.0
    torch.testing.assert_close(worker.sample(model, spec.mask), worker.sample(full, "1" * n))


def test_one_player_generates_only_its_labels(prepared, monkeypatch):
    run, p = prepared
    worker = worker_for(p.ctx)
    n = p.n_players
    seen = {}
    real = worker.family.sample

    def spy(model, num_samples, **kw):
        seen["labels"] = kw["conditions"]
        return real(model, num_samples, **kw)

    monkeypatch.setattr(worker.family, "sample", spy)
    images = {}
    for player in (0, 3, 7):
        mask = "".join("1" if i == player else "0" for i in range(n))
        spec = run.spec(p, mask, p.method, 0, "fit")
        model = worker.model_for(spec, record_for(spec))
        images[player] = worker.sample(model, spec.mask)
        own = set(worker.data.cond[p.players.members[player]].tolist())
        assert set(seen["labels"].tolist()) == own == {player}
    assert not torch.allclose(images[0], images[3])  # the labels reach the samples
    two = "".join("1" if i in (2, 5) else "0" for i in range(n))
    spec = run.spec(p, two, p.method, 0, "fit")
    worker.sample(worker.model_for(spec, record_for(spec)), spec.mask)
    assert set(seen["labels"].tolist()) == {2, 5}


def test_surrogate_on_an_unconditional_run_is_one_line_before_any_work(tmp_path):
    with pytest.raises(DiffattrError) as err:
        build_config(overrides={"method.name": "surrogate"})
    assert "\n" not in str(err.value)
    assert "'unconditional' family generates without conditions" in str(err.value)
    out = tmp_path / "cli"
    res = run_cli("run", "--method", "surrogate", "--out", out)
    assert res.returncode == 2, res.stderr[-1000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and error_lines(res.stderr) == lines, res.stderr
    assert "'unconditional' family" in lines[0]
    assert not out.exists()
    # an evaluation that asks an unconditional run for the surrogate: refused before the
    # full model is trained
    cfg = RunConfig().with_overrides(**{"train.steps": 3})
    with Run(cfg, tmp_path / "api", progress=False) as run:
        with pytest.raises(DiffattrError, match="'unconditional' family"):
            run.prepare("surrogate")
    assert not (tmp_path / "api" / "full").exists()


def labelled_folder(root: Path, labels_of: dict[str, list[int]]) -> Path:
    """A folder CSV ``path,contributor,label``: each contributor's images with the labels
    given."""
    rows = []
    for c, (who, labels) in enumerate(labels_of.items()):
        write_images(root / who, len(labels), 40 + 60 * c, seed=c)
        rows += [(f"{who}/{i}.png", who, str(lab)) for i, lab in enumerate(labels)]
    path = root / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "contributor", "label"])
        w.writerows(rows)
    return path


def test_players_the_label_mix_cannot_tell_apart(tmp_path):
    same = labelled_folder(tmp_path / "same", {"ann": [0, 1] * 6, "bo": [1, 0] * 6})
    cfg = RunConfig().with_overrides(
        **{**TINY, "data": {"name": "folder", "path": str(same)}, "attribution.subsets": 8}
    )
    with pytest.raises(DiffattrError, match="cannot tell the players apart"):
        make_plan(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(DiffattrError, match="cannot tell the players apart"):
        with Run(cfg, tmp_path / "api", progress=False) as run:
            run.prepare()
    assert not (tmp_path / "api" / "full").exists()
    some = labelled_folder(tmp_path / "some", {"ann": [0, 1] * 4, "bo": [1, 0] * 4, "cy": [2] * 8})
    cfg = cfg.with_overrides(**{"data.path": str(some)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_plan(cfg, tmp_path / "run2")
    msgs = [str(w.message) for w in caught if issubclass(w.category, DiffattrWarning)]
    assert any("2 of 3 players share their distribution of class labels" in m for m in msgs), msgs
    # the same data under sFT: no complaint (it trains on each coalition)
    sft = cfg.with_overrides(**{"method": {"name": "sft"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiffattrWarning)
        make_plan(sft, tmp_path / "run3")


@pytest.mark.slow
def test_surrogate_and_sft_jobs_on_one_run(tmp_path):
    """End to end: the surrogate's all-players job measures exactly the full model; its
    jobs cost no training; sFT on the same run prunes the conditional model and fine-tunes
    it per coalition."""
    cfg = RunConfig().with_overrides(
        **{**TINY, "method": {"name": "sft", "finetune_steps": 4, "steps": 2}}
    )
    with Run(cfg, tmp_path / "run", progress=False) as run:
        for method in ("surrogate", "sft"):
            plan = run.jobs(method)
            ex = run.execute(plan.specs())
            assert ex.failed == 0, ex.first_error
            refs = run.reference_records(plan)
            fit = run.store.records([s.key for s in plan.specs() if s.kind == "fit"])
            assert len(fit) >= 10
            if method == "surrogate":
                assert refs["method"].behaviors == refs["full"].behaviors
                assert max(r.t_train for r in fit) < 0.5
                values = {k: [r.behaviors[k] for r in fit] for k in fit[0].behaviors}
                assert all(np.std(v) > 0 for v in values.values())
            else:
                assert min(r.t_train for r in fit) > 0
                pruning = json.loads((plan.prepared.work_dir / "prepared.json").read_text())
                assert pruning["pruning"]["params_after"] < pruning["pruning"]["params_before"]
            est = run.estimate(plan)
            assert est.attributions and all(np.isfinite(a.values).all() for a in est.attributions)
