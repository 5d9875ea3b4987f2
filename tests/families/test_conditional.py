import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from diffattr.config import RunConfig, TrainConfig
from diffattr.counterfactual.settings import METHODS
from diffattr.data import load_dataset
from diffattr.data.base import ImageDataset
from diffattr.diffusion.sample import draw_labels, label_quantile
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelState
from diffattr.families.conditional import NULL, check_class_embedding
from diffattr.families.settings import FAMILIES, family_of


def family(**settings):
    return FAMILIES.parse({"name": "conditional", **settings}).build("cpu")


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset({"name": "digits", "limit_per_class": 12})
    return ds, family().training_set(ds)


@pytest.fixture(scope="module")
def model(digits):
    """A tiny conditional UNet whose class embedding is not zero (labels change eps)."""
    torch.manual_seed(0)
    m = family().init_model(digits[1], seed=3)
    with torch.no_grad():
        m.class_embedding.weight.normal_(0, 1.0)
    return m.eval()


def test_settings_and_registry():
    fam = family()
    assert fam.settings.label_dropout == 0.1 and fam.settings.guidance_scale == 1.4
    assert fam.settings.conditions == "class labels"
    with pytest.raises(DiffattrError, match="null label trained"):
        FAMILIES.parse({"name": "conditional", "label_dropout": 0.0})
    FAMILIES.parse({"name": "conditional", "label_dropout": 0.0, "guidance_scale": 1.0})


def test_training_set_uses_the_classes(digits):
    ds, data = digits
    assert data.cond.dtype == torch.long
    torch.testing.assert_close(data.cond, ds.labels)
    assert data.info["classes"] == 10
    contributed = ImageDataset(
        "folder",
        ds.images[:4],
        torch.tensor([0, 0, 1, 1]),
        ["a", "b", "c", "d"],
        ["alice", "bob"],
        contributors=["alice", "alice", "bob", "bob"],
    )
    with pytest.raises(DiffattrError, match="'label' column"):
        family().check_data(contributed)
    labelled = ImageDataset(
        "folder",
        ds.images[:4],
        torch.tensor([0, 0, 1, 1]),
        ["a", "b", "c", "d"],
        ["alice", "bob"],
        contributors=["alice", "alice", "bob", "bob"],
        semantic_labels=torch.tensor([2, 0, 1, 2]),
        semantic_names=["cat", "dog", "owl"],
    )
    lab = family().training_set(labelled)
    assert lab.cond.tolist() == [2, 0, 1, 2] and lab.info["classes"] == 3


def test_guidance_scale_one_is_the_plain_conditional_prediction(digits, model):
    x = torch.randn(5, 1, 8, 8)
    t = torch.tensor(400)
    y = torch.tensor([0, 3, 7, 9, 1])
    with torch.no_grad():
        cond = family().predict_noise(model, x, t, y)
        null = family().predict_noise(model, x, t, None)
        one = family(guidance_scale=1.0).guided_noise(model, x, t, y)
        zero = family(guidance_scale=0.0).guided_noise(model, x, t, y)
        guided = family(guidance_scale=2.5).guided_noise(model, x, t, y)
    assert (cond - null).abs().max() > 1e-3  # the labels matter to this model
    torch.testing.assert_close(one, cond)
    torch.testing.assert_close(zero, null)
    torch.testing.assert_close(guided, null + 2.5 * (cond - null), atol=1e-5, rtol=1e-4)
    # the null label inside the family is the model's last class embedding
    last = torch.full((5,), model.config.num_class_embeds - 1)
    with torch.no_grad():
        torch.testing.assert_close(
            family().predict_noise(model, x, t, torch.full((5,), NULL)), null
        )
        torch.testing.assert_close(family().predict_noise(model, x, t, last), null)


def test_label_dropout_trains_the_null_label(digits):
    _, data = digits
    cfg = TrainConfig(steps=6, batch_size=16, lr=1e-2)
    null_rows = {}
    for p in (0.0, 0.5):
        fam = family(label_dropout=p, guidance_scale=1.0)
        m = fam.init_model(data, seed=0)
        before = m.class_embedding.weight.detach().clone()
        result = fam.fit(m, data, cfg)
        after = result.unet.class_embedding.weight.detach()
        null_rows[p] = (after[-1] - before[-1]).abs().max().item()
        assert (after[:-1] - before[:-1]).abs().max() > 0  # the class rows train either way
    assert null_rows[0.0] == 0.0  # no gradient ever reaches the null row
    assert null_rows[0.5] > 1e-4


def test_label_dropout_is_seeded_and_resumes(tmp_path, digits):
    """Dropout draws from its own seeded stream: a resumed training continues it, so 2 + 2
    steps from a checkpoint give the model of 4 steps in one go."""
    from diffattr.families.base import FamilyCheckpoint

    _, data = digits
    fam = family(label_dropout=0.5)
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2)
    straight = fam.fit(fam.init_model(data, 0), data, cfg).unet
    ckpt = FamilyCheckpoint(fam, tmp_path / "ckpt", {"kind": "test"})
    fam.fit(fam.init_model(data, 0), data, cfg.model_copy(update={"steps": 2}), checkpoint=ckpt)
    resumed = fam.fit(fam.init_model(data, 0), data, cfg, checkpoint=ckpt).unet
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)
    other = fam.fit(fam.init_model(data, 0), data, cfg.model_copy(update={"seed": 1})).unet
    assert not torch.equal(other.class_embedding.weight, straight.class_embedding.weight)


def test_labels_follow_the_coalition_frequencies():
    counts = np.array([30, 0, 10, 60, 0])
    labels = draw_labels(counts, 500, seed=4)
    got = np.bincount(labels.numpy(), minlength=5)
    assert got[1] == got[4] == 0
    np.testing.assert_allclose(got, counts / counts.sum() * 500, atol=3)
    # sample i's label depends only on (seed, i): batches and offsets agree
    torch.testing.assert_close(draw_labels(counts, 7, seed=4, start=5), labels[5:12])
    # one class: every sample has it; the empty coalition: the null label
    assert set(draw_labels([0, 0, 5, 0, 0], 50, seed=4).tolist()) == {2}
    assert set(draw_labels([0, 0, 0], 9, seed=4, null_label=-1).tolist()) == {-1}
    with pytest.raises(DiffattrError, match="null label"):
        draw_labels([0, 0], 3, seed=0)
    # common random numbers: a close label mix changes few samples' labels
    near = draw_labels(np.array([32, 0, 10, 58, 0]), 500, seed=4)
    assert (near != labels).float().mean() < 0.05
    assert not np.allclose(label_quantile(4, range(10)), label_quantile(5, range(10)))


def test_generation_conditions_of_a_coalition(digits):
    _, data = digits
    fam = family()
    kept = np.flatnonzero(data.cond.numpy() == 7)
    assert set(fam.generation_conditions(data, kept, 40, seed=0).tolist()) == {7}
    two = np.flatnonzero(np.isin(data.cond.numpy(), [2, 5]))
    assert set(fam.generation_conditions(data, two, 40, seed=0).tolist()) == {2, 5}
    empty = fam.generation_conditions(data, np.array([], dtype=int), 5, seed=0)
    assert set(empty.tolist()) == {NULL}
    everyone = fam.generation_conditions(data, None, 100, seed=0)
    # low discrepancy: each class within one sample of its share
    np.testing.assert_allclose(np.bincount(everyone.numpy()), np.full(10, 10), atol=1)


def test_sampling_is_fixed_per_sample(model):
    fam = family()
    labels = torch.tensor([1, 4, 4, 9, 0])
    a = fam.sample(model, 5, seed=2, ddim_steps=3, batch_size=2, conditions=labels)
    b = fam.sample(model, 5, seed=2, ddim_steps=3, batch_size=5, conditions=labels)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    tail = fam.sample(model, 2, seed=2, ddim_steps=3, start=3, conditions=labels[3:])
    torch.testing.assert_close(tail, a[3:], atol=1e-5, rtol=1e-5)
    other = fam.sample(model, 5, seed=2, ddim_steps=3, conditions=torch.tensor([2] * 5))
    assert not torch.allclose(other, a)
    assert a.min() >= -1 and a.max() <= 1
    with pytest.raises(DiffattrError, match="one label per sample"):
        fam.sample(model, 5, seed=2, ddim_steps=3, conditions=labels[:2])


def test_round_trip_through_save_load_and_diffusers(tmp_path, digits, model):
    fam = family()
    fam.save(tmp_path / "m", ModelState(model), {"kind": "test"})
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([10, 500, 900]), torch.tensor([0, 5, 9])
    unet = UNet2DModel.from_pretrained(tmp_path / "m", subfolder="unet")
    assert unet.config.num_class_embeds == 11
    DDPMScheduler.from_pretrained(tmp_path / "m", subfolder="scheduler")
    loaded = fam.load(tmp_path / "m").model
    with torch.no_grad():
        want = model(x, t, class_labels=y).sample
        torch.testing.assert_close(unet(x, t, class_labels=y).sample, want)
        torch.testing.assert_close(loaded(x, t, class_labels=y).sample, want)
    fam.check_model(tmp_path / "m", digits[0])
    fewer = load_dataset({"name": "digits", "classes": [0, 1, 2], "limit_per_class": 12})
    with pytest.raises(DiffattrError, match="11 class embeddings"):
        fam.check_model(tmp_path / "m", fewer)
    with pytest.raises(DiffattrError, match="not a diffattr model"):
        fam.load(tmp_path)


@pytest.mark.parametrize("pruner", ["magnitude", "taylor"])
def test_pruning_keeps_the_class_embedding_consistent(tmp_path, digits, model, pruner):
    _, data = digits
    fam = family()
    settings = METHODS.parse({"name": "sft", "ratio": 0.3, "pruner": pruner, "prune_timesteps": 4})
    pruned, report = fam.prune(model, settings, data.subset(np.arange(16)))
    emb = pruned.class_embedding
    assert emb.num_embeddings == 11  # every label and the null label keep their row
    assert emb.embedding_dim == pruned.time_embedding.linear_2.out_features
    assert emb.embedding_dim < model.class_embedding.embedding_dim
    assert report["params_after"] < report["params_before"]
    assert report["layers"]["class_embedding"]["after"] == [11, emb.embedding_dim]
    check_class_embedding(pruned)
    x = torch.randn(11, 1, 8, 8)
    labels = torch.arange(11)
    with torch.no_grad():
        out = pruned(x, torch.tensor(300), class_labels=labels).sample
        per_label = pruned(x[:1].repeat(11, 1, 1, 1), torch.tensor(300), class_labels=labels)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert per_label.sample.std(0).max() > 1e-4  # labels still reach the network
    # a pruned conditional model saves and loads (not as a dense diffusers config)
    fam.save(tmp_path / pruner, ModelState(pruned), {"kind": "pruned"})
    back = fam.load(tmp_path / pruner).model
    with torch.no_grad():
        torch.testing.assert_close(back(x, torch.tensor(300), class_labels=labels).sample, out)
    # and trains on with labels and label dropout
    fam.fit(back.train(), data, TrainConfig(steps=2, batch_size=8))


def test_train_full_records_the_family(tmp_path, digits):
    ds, data = digits
    cfg = RunConfig().with_overrides(
        **{"family.name": "conditional", "train.steps": 4, "train.batch_size": 8}
    )
    fam = cfg.family.build("cpu")
    path = fam.train_full(cfg, tmp_path / "full", ds, data, progress=False, grid_samples=4)
    assert (path / "samples.png").exists()
    assert family_of(path).settings == cfg.family
    null = fam.load(fam.make_null(cfg, tmp_path / "null", ds, data)).model
    assert null.config.num_class_embeds == 11
