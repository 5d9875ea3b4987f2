"""DAS and EK-FAC influence: finite and deterministic on a tiny UNet, the duplicated image
ranked first, EK-FAC's factors fitted once and reused, one-line refusals before any work."""

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from diffattr.baselines import DiffusionTarget, attribute, local_scores
from diffattr.baselines.api import attribute_per_image
from diffattr.baselines.das import residuals
from diffattr.data.players import Players
from diffattr.diffusion.sample import generate
from diffattr.diffusion.unet import make_scheduler, make_unet
from diffattr.errors import DiffattrError

N, G = 7, 3
DAS = {"name": "das", "projection_dim": 24, "timesteps": 3}
EKFAC = {"name": "ekfac-influence", "timesteps": 3}
PLAYERS = Players(
    ("p0", "p1", "p2"), (np.array([0, 3]), np.array([1, 4, 6]), np.array([2, 5])), "contributor", N
)


def _needs(settings):
    if settings["name"] == "ekfac-influence":
        pytest.importorskip("kronfluence")


@pytest.fixture(scope="module")
def target():
    model = make_unet("tiny", 8, 1, seed=2)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N, 1, 8, 8, generator=g) * 2 - 1
    return DiffusionTarget.from_unet(model, x, num_generated=G, ddim_steps=4, seed=0)


@pytest.mark.parametrize("settings", [DAS, {**DAS, "leverage": True}, EKFAC], ids=str)
def test_finite_for_every_player_and_deterministic_for_a_seed(target, settings):
    _needs(settings)
    (a,) = attribute(settings, target, PLAYERS)
    assert a.values.shape == (3,) and np.isfinite(a.values).all()
    assert a.settings["aggregation"] == "sum"
    (b,) = attribute(settings, target, PLAYERS)  # no cache: computed again, the same
    np.testing.assert_array_equal(a.values, b.values)
    (c,) = attribute({**settings, "seed": 1}, target, PLAYERS)  # other probes, other values
    assert not np.allclose(a.values, c.values)
    per = attribute_per_image(settings, target, PLAYERS, ["ssim[pixel]#0", "ssim[pixel]#2"])
    assert [x.behavior for x in per] == ["ssim[pixel]#0", "ssim[pixel]#2"]
    scores = local_scores(settings, target).scores
    np.testing.assert_allclose(per[1].values, [scores[2, m].sum() for m in PLAYERS.members])


def test_das_is_the_kernel_score_times_the_residual(target):
    """DAS = psi_g (Phi^T Phi + lambda I)^-1 phi_i r_i, with the 'mean' output's features."""
    from diffattr.baselines.api import gradient_features
    from diffattr.baselines.settings import DASSettings

    s = DASSettings(**{k: v for k, v in DAS.items() if k != "name"}, regularization=0.1)
    phi, _ = gradient_features(s, target, "train")
    psi, _ = gradient_features(s, target, "gen")
    r = residuals(target, 3, 0, True)
    k = phi.double().T @ phi.double() + 0.1 * torch.eye(phi.shape[1], dtype=torch.float64)
    want = (psi.double() @ torch.linalg.solve(k, phi.double().T)) * r.float().double()
    np.testing.assert_allclose(local_scores(s, target).scores, want.numpy(), rtol=1e-6)
    lev = local_scores(s.model_copy(update={"leverage": True}), target).scores
    h = (phi.double() @ torch.linalg.solve(k, phi.double().T)).diagonal()
    np.testing.assert_allclose(lev, want.numpy() / (1 - h.numpy()), rtol=1e-6)


def test_layers_restrict_what_is_differentiated(target):
    all_layers = local_scores(DAS, target)
    some = local_scores({**DAS, "layers": ["up_blocks.*"]}, target)
    assert (
        some.details["train_features"]["grad_dim"]
        < all_layers.details["train_features"]["grad_dim"]
    )
    with pytest.raises(DiffattrError, match="match none"):
        local_scores({**DAS, "layers": ["no_such_layer*"]}, target)


# ----------------------------------------------------------------------------- duplicates

COPIES, OTHERS = 16, 8


def _patterns(n: int, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, 1, 4, 4, generator=g)
    return torch.nn.functional.interpolate(z, size=8, mode="bilinear").sign() * 0.9


@pytest.fixture(scope="module")
def memorized():
    """A small UNet trained on 16 copies of image A and 8 other images; the generated
    samples that reproduce A (the setting of test_baselines_trak_duplicates)."""
    g = torch.Generator().manual_seed(0)
    a = _patterns(1, g)
    x = torch.cat([a.repeat(COPIES, 1, 1, 1), _patterns(OTHERS, g)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNet2DModel(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
    sched = make_scheduler()
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    for _ in range(200):
        idx = torch.randint(0, len(x), (32,), generator=g)
        t = torch.randint(0, 1000, (32,), generator=g)
        noise = torch.randn(32, 1, 8, 8, generator=g)
        loss = ((model(sched.add_noise(x[idx], noise, t), t).sample - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen = generate(model, 16, ddim_steps=10, seed=0)
    close = ((gen - a) ** 2).flatten(1).mean(1) < 0.1
    assert close.any(), "the trained model reproduces none of its duplicated image"
    return DiffusionTarget(model, sched, x, gen[close])


DUPLICATES = [
    {"name": "das", "projection_dim": 64, "timesteps": 8},
    {"name": "ekfac-influence", "timesteps": 4},
]


@pytest.mark.parametrize("settings", DUPLICATES, ids=lambda s: s["name"])
def test_a_training_image_that_duplicates_a_generated_sample_ranks_first(target, settings):
    _needs(settings)
    x = target.x0_train.clone()
    x[4] = target.x0_gen[1]  # training image 4 is generated sample 1
    dup = DiffusionTarget(target.model, target.scheduler, x, target.x0_gen)
    scores = local_scores(settings, dup).scores
    assert int(np.argmax(scores[1])) == 4, scores[1]


@pytest.mark.parametrize("settings", DUPLICATES, ids=lambda s: s["name"])
def test_the_owner_of_the_memorized_image_ranks_first(memorized, settings):
    """16 copies of A: each copy's credit is small (removing one of 16 copies changes little:
    DAS also weighs them by their small residual), their owner's sum is the largest."""
    _needs(settings)
    copies = local_scores(settings, memorized).scores.mean(0)[:COPIES]
    assert np.allclose(copies, copies[0], rtol=1e-4)  # identical images, identical credit
    players = [np.arange(COPIES)] + [np.array([COPIES + i]) for i in range(OTHERS)]
    (attr,) = attribute(settings, memorized, players)
    assert int(attr.ranking()[0]) == 0, attr.values


# ----------------------------------------------------------------------------- EK-FAC factors


def test_ekfac_factors_are_fitted_once_and_reused(target, tmp_path, monkeypatch):
    pytest.importorskip("kronfluence")
    from kronfluence.analyzer import Analyzer

    fits = []
    original = Analyzer.fit_all_factors

    def counted(self, *args, **kwargs):
        fits.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Analyzer, "fit_all_factors", counted)
    (first,) = attribute(EKFAC, target, PLAYERS, cache_dir=tmp_path)
    assert first.settings["cache"] == {"factors": "miss", "scores": "miss"} and len(fits) == 1
    (again,) = attribute(EKFAC, target, PLAYERS, cache_dir=tmp_path)
    assert again.settings["cache"] == {"factors": "hit", "scores": "hit"}
    np.testing.assert_array_equal(first.values, again.values)
    # another damping or other generated images: new scores, the same factors
    (damped,) = attribute({**EKFAC, "damping": 10.0}, target, PLAYERS, cache_dir=tmp_path)
    assert damped.settings["cache"] == {"factors": "hit", "scores": "miss"}
    assert not np.allclose(damped.values, first.values)
    per = attribute_per_image(EKFAC, target, PLAYERS, ["mse[pixel]#1"], cache_dir=tmp_path)
    assert per[0].settings["cache"]["factors"] == "hit" and len(fits) == 1
    # the seconds the factors took are charged to every use (compute-matched tables)
    assert again.settings["seconds"]["featurize"] == first.settings["seconds"]["featurize"] > 0


def test_ekfac_query_batches_held_at_once_leave_the_scores_unchanged(target):
    """One pass over the training probes per query batch (kronfluence's default) or one
    pass for all of them: the same scores."""
    pytest.importorskip("kronfluence")
    small = {**EKFAC, "batch_size": 2}
    one = local_scores({**small, "query_gb": 1e-9}, target)  # one batch per pass
    all_ = local_scores(small, target)  # every batch in one pass
    assert one.details["passes_over_training_probes"] == -(-G * 3 // 2)  # ceil(9 / 2)
    assert all_.details["passes_over_training_probes"] == 1
    np.testing.assert_allclose(one.scores, all_.scores, rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------------------- refusals


def test_ekfac_is_refused_for_the_text_to_image_family_in_one_line():
    from diffattr.config import RunConfig

    with pytest.raises(DiffattrError) as e:
        RunConfig.from_dict(
            {"family": {"name": "text-to-image"}, "attribution": {"estimators": ["ekfac"]}}
        )
    msg = str(e.value)
    assert "ekfac-influence" in msg and "text-to-image" in msg and "\n" not in msg
    ok = RunConfig.from_dict(
        {"family": {"name": "text-to-image"}, "attribution": {"estimators": ["das"]}}
    )
    assert ok.attribution.estimators[0].name == "das"


def test_a_missing_kronfluence_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    from diffattr.config import RunConfig
    from diffattr.runner.plan import check_config

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "kronfluence" else real(name)
    )
    cfg = RunConfig.from_dict({"attribution": {"estimators": ["ekfac"]}})
    with pytest.raises(DiffattrError, match=r"diffattr\[ekfac\]") as e:
        check_config(cfg)
    assert "\n" not in str(e.value)


def test_local_losses_and_distances_get_the_negated_score_similarities_the_score(target):
    """Keeping an image the generated image depends on lowers its loss or distance to the
    full model's image: those keys get -score, a similarity keeps +score."""
    keys = ["ssim[pixel]#1", "mse[pixel]#1", "denoising-loss[model]#1"]
    ssim, mse, loss = attribute_per_image(DAS, target, PLAYERS, keys)
    scores = local_scores(DAS, target).scores
    want = [scores[1, m].sum() for m in PLAYERS.members]
    np.testing.assert_allclose(ssim.values, want)
    np.testing.assert_allclose(mse.values, -np.array(want))
    np.testing.assert_allclose(loss.values, -np.array(want))
    assert "orientation" in loss.settings and "orientation" not in ssim.settings
    # a local behavior's mean likewise; a global behavior keeps the score
    means = attribute(DAS, target, PLAYERS, behaviors=["fid[digits-cnn]", "mse[pixel]"])
    total = [scores[:, m].sum(axis=1).mean() for m in PLAYERS.members]
    np.testing.assert_allclose(means[0].values, total)
    np.testing.assert_allclose(means[1].values, -np.array(total))
