"""Every baseline end to end on a tiny random-weight UNet: shapes, finiteness, the sign
convention, the feature cache, compute-time records and the heuristic."""

import numpy as np
import pytest
import torch

from diffattr.baselines import DiffusionTarget, attribute, local_scores
from diffattr.baselines.settings import BASELINES
from diffattr.data.players import Players
from diffattr.diffusion.sample import generate
from diffattr.diffusion.unet import make_unet
from diffattr.errors import DiffattrError

N, G = 7, 3
GRAD = {"projection_dim": 24, "timesteps": 3}
SETTINGS = {
    "trak": GRAD,
    "d-trak": GRAD,
    "journey-trak": {**GRAD, "journey_points": 2},
    "relative-influence": GRAD,
    "renormalized-influence": GRAD,
    "gradient-similarity": GRAD,
    "pixel-similarity": {},
    "feature-similarity": {},
    "das": GRAD,
    "ekfac-influence": {"timesteps": 3},
}


def _features(images):
    x = torch.as_tensor(images)
    return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[:, :, :4].mean((1, 2, 3))], 1)


def _measure(images):
    return {"brightness": float(images.mean()), "contrast": float(images.std())}


@pytest.fixture(scope="module")
def target():
    model = make_unet("tiny", 8, 1, seed=2)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N, 1, 8, 8, generator=g) * 2 - 1
    return DiffusionTarget.from_unet(model, x, num_generated=G, ddim_steps=4, seed=0)


PLAYERS = Players(
    ("p0", "p1", "p2"), (np.array([0, 3]), np.array([1, 4, 6]), np.array([2, 5])), "contributor", N
)


@pytest.mark.parametrize("name", [n for n in BASELINES.names() if n != "property-heuristic"])
def test_every_baseline_has_finite_scores_of_the_right_shape(target, name):
    if name == "ekfac-influence":
        pytest.importorskip("kronfluence")
    table = {"name": name, **SETTINGS[name]}
    local = local_scores(table, target, features=_features)
    assert local.scores.shape == (G, N) and np.isfinite(local.scores).all()
    attrs = attribute(table, target, PLAYERS, features=_features, behaviors=["is", "fid"])
    assert [a.behavior for a in attrs] == ["is", "fid"]
    a = attrs[0]
    assert a.estimator == name and a.names == ["p0", "p1", "p2"]
    assert a.values.shape == (3,) and np.isfinite(a.values).all()
    np.testing.assert_array_equal(a.values, attrs[1].values)
    seconds = a.settings["seconds"]
    assert set(seconds) == {"featurize", "score", "wall"} and min(seconds.values()) >= 0
    assert a.settings["label"].startswith(name + "[")
    # aggregation: mean over generated images, then over the player's images
    how = a.settings["aggregation"]
    mean = local.scores.mean(0)
    red = {"sum": np.sum, "mean": np.mean, "max": np.max}[how]
    np.testing.assert_allclose(a.values, [red(mean[m]) for m in PLAYERS.members], rtol=1e-10)
    single = attribute(table, target, PLAYERS, features=_features)
    assert len(single) == 1 and single[0].behavior is None


KERNEL_AND_COSINE = [
    "trak",
    "d-trak",
    "relative-influence",
    "renormalized-influence",
    "gradient-similarity",
]


@pytest.mark.parametrize("name", KERNEL_AND_COSINE)
def test_gradient_sign_convention_a_copy_attributes_to_its_source(target, name):
    # a generated image identical to training image 4 (same fixed noises): image 4 scores
    # highest, and positive — larger means more responsible for the generated image
    copy = DiffusionTarget(target.model, target.scheduler, target.x0_train, target.x0_train[4:5])
    table = {"name": name, "projection_dim": 64, "timesteps": 3, "regularization": 1e-3}
    scores = local_scores(table, copy).scores[0]
    assert int(np.argmax(scores)) == 4 and scores[4] > 0


@pytest.mark.parametrize("name", ["pixel-similarity", "feature-similarity"])
def test_similarity_sign_convention(target, name):
    copy = DiffusionTarget(target.model, target.scheduler, target.x0_train, target.x0_train[[2]])
    scores = local_scores(name, copy, features=_features).scores[0]
    assert int(np.argmax(scores)) == 2 and np.isclose(scores[2], 1.0)
    players = [np.array([0, 1]), np.array([2]), np.array([3, 4, 5, 6])]
    a = attribute({"name": name, "aggregation": "max"}, copy, players, features=_features)[0]
    assert int(np.argmax(a.values)) == 1


def test_property_heuristic_avg_max_and_whole_set(target):
    images = target.x0_train
    res = attribute("property-heuristic", target, PLAYERS, measure=_measure)
    assert [a.behavior for a in res] == ["brightness", "contrast"]
    means = [np.mean([float(images[i].mean()) for i in m]) for m in PLAYERS.members]
    np.testing.assert_allclose(res[0].values, means, rtol=1e-6)
    mx = attribute(
        {"name": "heuristic", "aggregation": "max"},
        target,
        PLAYERS,
        measure=_measure,
        behaviors=["contrast"],
    )
    assert len(mx) == 1 and mx[0].behavior == "contrast"
    maxes = [max(float(images[i].std()) for i in m) for m in PLAYERS.members]
    np.testing.assert_allclose(mx[0].values, maxes, rtol=1e-6)
    whole = attribute({"name": "heuristic", "chunk_size": 0}, target, PLAYERS, measure=_measure)
    sets = [float(images[torch.as_tensor(m)].std()) for m in PLAYERS.members]
    np.testing.assert_allclose(whole[1].values, sets, rtol=1e-6)
    # sign: a player whose images are brighter gets the larger value
    bright = DiffusionTarget(
        target.model,
        target.scheduler,
        torch.cat([images[:3] * 0 - 0.5, images[:3] * 0 + 0.5]),
        target.x0_gen,
    )
    b = attribute("heuristic", bright, [[0, 1, 2], [3, 4, 5]], measure=_measure)[0]
    assert b.values[1] > b.values[0]
    with pytest.raises(DiffattrError, match="measure"):
        attribute("heuristic", target, PLAYERS)
    with pytest.raises(DiffattrError, match="no behavior 'is'"):
        attribute("heuristic", target, PLAYERS, measure=_measure, behaviors=["is"])


def test_gradient_cache_hit_and_miss(target, tmp_path, monkeypatch):
    table = {"name": "trak", **GRAD}
    first = attribute(table, target, PLAYERS, cache_dir=tmp_path)[0]
    assert first.settings["cache"] == {"train": "miss", "gen": "miss"}
    files = sorted(p.name for p in (tmp_path / "baselines" / "gradients").iterdir())
    assert len(files) == 4 and sum(f.endswith(".json") for f in files) == 2

    def boom(*args, **kwargs):
        raise AssertionError("features were recomputed")

    import diffattr.baselines.api as api

    monkeypatch.setattr(api, "project_gradients", boom)  # where the features are computed
    again = attribute(table, target, PLAYERS, cache_dir=tmp_path)[0]
    assert again.settings["cache"] == {"train": "hit", "gen": "hit"}
    np.testing.assert_array_equal(again.values, first.values)
    # the featurize cost is the recorded compute cost, not the cache read
    assert again.settings["seconds"]["featurize"] == pytest.approx(
        first.settings["seconds"]["featurize"]
    )
    # features shared with the other loss-gradient baselines; aggregation is not in the key
    rel = attribute({"name": "relative-influence", **GRAD}, target, PLAYERS, cache_dir=tmp_path)
    assert rel[0].settings["cache"] == {"train": "hit", "gen": "hit"}
    attribute({**table, "aggregation": "max"}, target, PLAYERS, cache_dir=tmp_path)
    for change in ({"projection_dim": 16}, {"timesteps": 2}, {"seed": 1}):
        with pytest.raises(AssertionError, match="recomputed"):
            attribute({**table, **change}, target, PLAYERS, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="recomputed"):
        attribute({**GRAD, "name": "d-trak"}, target, PLAYERS, cache_dir=tmp_path)
    monkeypatch.undo()
    other = DiffusionTarget(target.model, target.scheduler, target.x0_train.flip(0), target.x0_gen)
    moved = attribute(table, other, PLAYERS, cache_dir=tmp_path)[0]
    assert moved.settings["cache"] == {"train": "miss", "gen": "hit"}


def test_feature_cache_needs_an_extractor_key(target, tmp_path):
    class Extractor:
        key = "toy-v1"
        calls = 0

        def features(self, images):
            Extractor.calls += 1
            return _features(images)

    ext = Extractor()
    a = attribute("feature-similarity", target, PLAYERS, features=ext.features, cache_dir=tmp_path)
    b = attribute("feature-similarity", target, PLAYERS, features=ext.features, cache_dir=tmp_path)
    assert a[0].settings["cache"] == {"train": "miss", "gen": "miss"}
    assert b[0].settings["cache"] == {"train": "hit", "gen": "hit"} and Extractor.calls == 2
    c = attribute("feature-similarity", target, PLAYERS, features=_features, cache_dir=tmp_path)
    assert c[0].settings["cache"] == {"train": "off", "gen": "off"}
    with pytest.raises(DiffattrError, match="features"):
        attribute("feature-similarity", target, PLAYERS)


def test_journey_trak_uses_a_given_or_recorded_trajectory(target):
    table = {"name": "journey-trak", **GRAD, "journey_points": 2}
    recorded = local_scores(table, target).scores
    traj = target.get_trajectory()
    given = DiffusionTarget(
        target.model, target.scheduler, target.x0_train, target.x0_gen, trajectory=traj
    )
    np.testing.assert_allclose(local_scores(table, given).scores, recorded, rtol=1e-5, atol=1e-7)
    bare = DiffusionTarget(target.model, target.scheduler, target.x0_train, target.x0_gen)
    with pytest.raises(DiffattrError, match="trajectory"):
        local_scores(table, bare)


def test_attribute_rejects_bad_input(target):
    with pytest.raises(DiffattrError) as err:
        attribute({"name": "trak", "projection_dim": 0}, target, PLAYERS)
    assert "\n" not in str(err.value)
    with pytest.raises(DiffattrError, match="aggregation"):
        attribute({"name": "pixel-similarity", "aggregation": "median"}, target, PLAYERS)
    with pytest.raises(DiffattrError, match="DiffusionTarget"):
        attribute("trak", target.model, PLAYERS)
    with pytest.raises(DiffattrError, match="outside"):
        attribute("pixel-similarity", target, [[0], [N]])


def test_from_unet_uses_generate(target):
    gen = generate(target.model, G, ddim_steps=4, seed=0)
    torch.testing.assert_close(target.x0_gen, gen)
    assert target.n_train == N and target.n_gen == G


def test_clip_feature_space_from_a_local_directory(target, tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=12,
    )
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    table = {"name": "feature-similarity", "space": f"clip:{tmp_path / 'clip'}"}
    local = local_scores(table, target)
    assert local.scores.shape == (G, N) and local.details["feature_dim"] == 12
    with pytest.raises(DiffattrError, match="does not exist"):
        local_scores({**table, "space": "clip:/nonexistent/clip"}, target)


@pytest.mark.parametrize("name", ["trak", "journey-trak", "pixel-similarity"])
def test_featurize_then_score_equals_local_scores(name, target, tmp_path):
    from diffattr.baselines import featurize, score
    from diffattr.baselines.settings import BASELINES

    table = {"name": name, **(GRAD if name != "pixel-similarity" else {})}
    if name == "journey-trak":
        table["journey_points"] = 2
    b = BASELINES.parse(table).build()
    train, r_train = b.featurize(target, "train", cache_dir=tmp_path)
    gen, _ = featurize(table, target, "gen", cache_dir=tmp_path)
    assert train.shape[0] == target.x0_train.shape[0] and gen.shape[0] == target.x0_gen.shape[0]
    assert "seconds" in r_train
    whole = b.local_scores(target, cache_dir=tmp_path).scores
    np.testing.assert_allclose(score(table, train, gen), whole, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b.score(train, gen), whole, rtol=1e-6, atol=1e-9)


def test_baselines_without_separate_phases_say_so(target):
    from diffattr.baselines import featurize, score

    with pytest.raises(DiffattrError, match="no separate featurize phase"):
        featurize("das", target, "train")
    with pytest.raises(DiffattrError, match="no separate score phase"):
        score("property-heuristic", torch.zeros(2, 3), torch.zeros(1, 3))
