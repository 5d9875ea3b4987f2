"""The text-to-image family on a tiny Stable Diffusion pipeline assembled here from configs
(random weights; the tokenizer's vocabulary and merges are written by the test)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffattr.config import RunConfig, TrainConfig
from diffattr.counterfactual.settings import SFTSettings
from diffattr.data.folder import load_folder
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelState
from diffattr.families.settings import TextToImageSettings

WORDS = ["a", "photo", "of", "cat", "dog", "bird"]


def write_vocab(directory: Path, words):
    """A CLIP BPE vocabulary in which each word is one token (characters otherwise)."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        cur = parts[0]
        for p in parts[1:]:
            if f"{cur} {p}" not in merges:
                merges.append(f"{cur} {p}")
            cur += p
            vocab.setdefault(cur, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def tiny_pipeline(root: Path) -> Path:
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    write_vocab(root / "vocab", WORDS)
    tok = CLIPTokenizer(
        str(root / "vocab" / "vocab.json"), str(root / "vocab" / "merges.txt"), model_max_length=8
    )
    v = tok.get_vocab()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(v),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=8,
                bos_token_id=v["<|startoftext|>"],
                eos_token_id=v["<|endoftext|>"],
                pad_token_id=v["<|endoftext|>"],
            )
        )
        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 8),
            latent_channels=4,
            norm_num_groups=4,
            layers_per_block=1,
            sample_size=8,
        )
        unet = UNet2DConditionModel(
            sample_size=4,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16,
            attention_head_dim=4,
            norm_num_groups=4,
        )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "base")
    return root / "base"


def write_csv(root: Path, who=("ann", "bob", "cy", "dee"), per=4, captions=True, empty=False):
    rng = np.random.default_rng(0)
    header = "path,contributor" + (",caption" if captions else "")
    rows = [header]
    for k, name in enumerate(who):
        for i in range(per):
            arr = (rng.random((8, 8)) * 60 + 50 * k).astype(np.uint8)
            p = root / "img" / f"{name}{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(p)
            cap = "" if (empty and i == 0) else f"a photo of a {WORDS[3 + k % 3]}"
            rows.append(f"img/{name}{i}.png,{name}" + (f",{cap}" if captions else ""))
    path = root / ("data.csv" if captions else "nocaps.csv")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    return tiny_pipeline(root), write_csv(root), root


def family(base, **kw):
    return TextToImageSettings(base=str(base), rank=4, **kw).build()


def random_b(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in model.B:
            b.copy_(torch.randn(b.shape, generator=g) * 0.3)
    return model


def test_settings_registry_and_presets():
    from diffattr.config import build_config

    cfg = RunConfig.from_dict({"family": {"name": "text-to-image", "base": "/x", "rank": 16}})
    assert cfg.family.name == "text-to-image" and cfg.family.lora_alpha() == 16.0
    with pytest.raises(DiffattrError, match="URL"):
        RunConfig.from_dict({"family": {"name": "text-to-image", "base": "https://hub/x"}})
    for preset in ("t2i-quick", "t2i", "t2i-captions-quick"):
        c = build_config(preset=preset)
        assert c.family.name == "text-to-image" and c.data.name == "t2i-demo"
        assert c.method.name == "sft" and c.method.ratio == 0.5
        assert c.attribution.subsets >= 2 * (c.data.contributors - 1)
    c = build_config(preset="t2i-captions-quick")
    # every artist draws a class of their own, so the captions tell them apart
    assert c.family.conditions == "captions" and c.data.caption == "class"
    assert len(c.data.classes) == c.data.contributors


def test_training_set_caches_latents_and_caption_embeddings(setup, monkeypatch):
    base, csv, root = setup
    ds = load_folder(csv)
    assert ds.captions[0] == "a photo of a cat" and len(ds.captions) == 16
    assert ds.subset([0, 5]).captions == [ds.captions[0], ds.captions[5]]
    cache = root / "cache-ts"
    fam = family(base)
    data = fam.training_set(ds, cache)
    assert data.x0.shape == (16, 4, 4, 4) and data.cond.shape == (16, 8, 16)
    assert not data.info["latents"]["cached"] and not data.info["captions"]["cached"]
    assert data.info["prompts"] == ["a photo of a bird", "a photo of a cat", "a photo of a dog"]
    # a second encoding runs neither the autoencoder nor the text encoder
    b = fam.base

    def boom(*a, **k):
        raise AssertionError("an encoder ran on a cache hit")

    monkeypatch.setattr(b.vae, "encode", boom)
    monkeypatch.setattr(b.text_encoder, "forward", boom)
    again = family(base).training_set(ds, cache)
    assert again.info["latents"]["cached"] and again.info["captions"]["cached"]
    assert torch.equal(again.x0, data.x0) and torch.equal(again.cond, data.cond)
    # captions that differ make a new entry (and would run the encoder)
    ds2 = load_folder(csv)
    ds2.captions = ["a photo of a dog"] * len(ds2)
    with pytest.raises(AssertionError, match="encoder ran"):
        family(base).training_set(ds2, cache)


def test_saved_lora_loads_with_load_lora_weights_and_round_trips(setup, tmp_path):
    from diffusers import StableDiffusionPipeline

    base, csv, root = setup
    fam = family(base, alpha=2.0)  # scale alpha / r = 0.5: folded into lora_B on disk
    data = fam.training_set(load_folder(csv), root / "cache")
    model = random_b(fam.init_model(data, 0))
    fam.save(tmp_path / "lora", ModelState(model), {"note": "test"})
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    loaded = fam.load(tmp_path / "lora").model
    x = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([5, 300, 900])
    c = data.cond[:3]
    mine = fam.predict_noise(model, x, t, c)
    assert torch.allclose(fam.predict_noise(loaded, x, t, c), mine, atol=1e-6)
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    plain = pipe.unet(x, t, encoder_hidden_states=c).sample
    pipe.load_lora_weights(tmp_path / "lora")
    theirs = pipe.unet(x, t, encoder_hidden_states=c).sample
    assert (plain - mine).abs().max() > 1e-3  # the LoRA changes the UNet ...
    assert torch.allclose(theirs, mine, atol=1e-5)  # ... as diffusers applies it
    # pruned: whole components removed, ranks differ per layer, still loads identically
    pruned, report = fam.prune(model, SFTSettings(ratio=0.5), data)
    assert report["kept_share"] <= 0.5 and report["params_after"] == sum(
        p.numel() for p in pruned.parameters()
    )
    assert len(set(pruned.ranks().values())) > 1
    fam.save(tmp_path / "pruned", ModelState(pruned), {})
    again = fam.load(tmp_path / "pruned").model
    assert again.ranks() == pruned.ranks()
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    pipe.load_lora_weights(tmp_path / "pruned")
    out = pipe.unet(x, t, encoder_hidden_states=c).sample
    assert torch.allclose(out, fam.predict_noise(pruned, x, t, c), atol=1e-5)
    # the pipeline generates with the pruned LoRA
    img = pipe(prompt="a photo of a cat", num_inference_steps=2, height=8, width=8).images
    assert len(img) == 1


def test_ema_and_copies_hold_only_the_adapters(setup):
    base, csv, root = setup
    fam = family(base)
    data = fam.training_set(load_folder(csv), root / "cache")
    before = {k: v.clone() for k, v in fam.base.unet.state_dict().items()}
    model = fam.init_model(data, 0)
    n_lora = sum(p.numel() for p in model.parameters())
    assert n_lora == fam.parameter_count(model) == 4 * sum(i + o for _, i, o in fam.base.targets)
    res = fam.fit(model, data, TrainConfig(steps=4, batch_size=8, lr=1e-2, checkpoint_every=4))
    assert sum(p.numel() for p in res.ema.model.parameters()) == n_lora
    assert not any(isinstance(m, torch.nn.Conv2d) for m in res.ema.model.modules())
    assert all(torch.equal(v, fam.base.unet.state_dict()[k]) for k, v in before.items())
    assert any(b.abs().sum() > 0 for b in res.unet.B)  # the adapters trained
    # the null model is the base without LoRA
    null = fam.null_model(data)
    assert sum(p.numel() for p in null.parameters()) == 0
    x, t, c = torch.randn(2, 4, 4, 4), torch.tensor([10, 20]), data.cond[:2]
    plain = fam.base.unet(x, t, encoder_hidden_states=c).sample
    assert torch.equal(fam.predict_noise(null, x, t, c), plain)


def test_sampling_fixed_seeds_prompts_and_guidance(setup):
    base, csv, root = setup
    fam = family(base, prompts=["a photo of a cat", "a photo of a dog"])
    data = fam.training_set(load_folder(csv), root / "cache")
    model = random_b(fam.init_model(data, 0))
    a = fam.sample(model, 5, seed=3, ddim_steps=4, batch_size=2)
    b = fam.sample(model, 5, seed=3, ddim_steps=4, batch_size=5)
    assert a.shape == (5, 1, 8, 8) and a.abs().max() <= 1
    assert torch.allclose(a, b, atol=1e-5)  # per-sample noise, whatever the batch
    tail = fam.sample(model, 2, seed=3, ddim_steps=4, start=3)
    assert torch.allclose(tail, a[3:], atol=1e-5)
    emb = fam.prompt_embeddings(4)
    assert torch.equal(emb[0], emb[2]) and not torch.equal(emb[0], emb[1])
    guided = family(base, prompts=["a photo of a cat", "a photo of a dog"], guidance_scale=3.0)
    guided.training_set(load_folder(csv), root / "cache")
    g = guided.sample(model, 5, seed=3, ddim_steps=4)
    assert not torch.allclose(g, a, atol=1e-4)


def test_one_line_errors(setup, tmp_path):
    import shutil

    base, csv, root = setup
    nov = tmp_path / "no-vae"
    shutil.copytree(base, nov)
    shutil.rmtree(nov / "vae")
    with pytest.raises(DiffattrError, match="has no vae") as e:
        family(nov).training_set(load_folder(csv), tmp_path / "c")
    assert "\n" not in str(e.value)
    nocaps = write_csv(tmp_path, captions=False)
    with pytest.raises(DiffattrError, match="no caption column.*prompt is not set") as e:
        family(base).check_data(load_folder(nocaps))
    assert "\n" not in str(e.value)
    ok = family(base, prompt="a photo of a bird").training_set(load_folder(nocaps), tmp_path / "c")
    assert ok.info["prompts"] == ["a photo of a bird"]
    partly = write_csv(tmp_path / "p", empty=True)
    with pytest.raises(DiffattrError, match="empty captions"):
        family(base).check_data(load_folder(partly))
    # a LoRA saved with rank 4 does not load as rank 8
    fam = family(base)
    data = fam.training_set(load_folder(csv), root / "cache")
    fam.save(tmp_path / "r4", ModelState(fam.init_model(data, 0)), {})
    other = TextToImageSettings(base=str(base), rank=8).build()
    with pytest.raises(DiffattrError, match="rank 4 but \\[family\\] rank = 8") as e:
        other.load(tmp_path / "r4")
    assert "\n" not in str(e.value)
    with pytest.raises(DiffattrError, match="target_modules"):
        family(base, target_modules=["to_q", "nope"]).training_set(load_folder(csv), None)
    with pytest.raises(DiffattrError, match="round_to"):
        fam.prune(fam.init_model(data, 0), SFTSettings(round_to=2), data)


def tiny_clip(root: Path) -> tuple[dict, Path]:
    """A local CLIP checkpoint (768-d projection, as ViT-L/14) and a LAION-style head."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    small = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1}
    text = {**small, "num_attention_heads": 2, "vocab_size": 64, "max_position_embeddings": 16}
    vision = {**small, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))
    model.save_pretrained(root / "clip")
    processor = {
        "do_resize": True,
        "size": {"shortest_edge": 32},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    (root / "clip" / "preprocessor_config.json").write_text(json.dumps(processor))
    g = torch.Generator().manual_seed(0)
    head = root / "sa_0_4_vit_l_14_linear.safetensors"
    save_file({"weight": torch.randn(1, 768, generator=g), "bias": torch.tensor([5.0])}, head)
    return {"name": "clip", "path": str(root / "clip")}, head


def test_run_attributes_end_to_end_with_sft_on_pruned_lora(setup, tmp_path):
    """train LoRA -> prune LoRA -> fine-tune -> sFT per coalition -> sample -> measure, with
    FID in a label-free space and the aesthetic score in (a local) CLIP space."""
    from diffattr.runner.run import Run

    base, _, _ = setup
    csv = write_csv(tmp_path, per=5)  # a run needs 20 images (reference statistics)
    clip, head = tiny_clip(tmp_path)
    cfg = RunConfig.from_dict(
        {
            "data": {"name": "folder", "path": str(csv)},
            "family": {"name": "text-to-image", "base": str(base), "rank": 4},
            "train": {"steps": 20, "batch_size": 8, "lr": 5e-3, "checkpoint_every": 20},
            "sample": {"num_samples": 16, "ddim_steps": 3, "batch_size": 16},
            "method": {"name": "sft", "ratio": 0.5, "finetune_steps": 8, "steps": 4},
            "methods": {"ft": {"steps": 4}, "retrain": {"steps": 6}},
            "attribution": {"subsets": 10, "estimators": ["shapley"]},
            "behaviors": {
                "features": {"name": "autoencoder", "steps": 30, "dim": 4},
                "measure": [
                    "fid",
                    {"name": "aesthetic-p90", "head": str(head), "features": clip},
                ],
            },
        }
    )
    with Run(cfg, tmp_path / "run", progress=False) as run:
        summary = run.attribute()
        assert summary.failed == 0 and not summary.errors, (summary.first_error, summary.errors)
        payload = json.loads((tmp_path / "run" / "values.json").read_text())
        assert {a.behavior for a in summary.attributions} == {
            "fid[autoencoder]",
            "aesthetic-p90[clip]",
        }
        for a in summary.attributions:
            assert len(a.values) == 4 and np.isfinite(a.values).all()
            diff = payload["v1"][a.behavior] - payload["v0"][a.behavior]
            assert a.values.sum() == pytest.approx(diff, abs=1e-6)
        prepared = json.loads(
            next((tmp_path / "run" / "shared").glob("sft-*/prepared.json")).read_text()
        )
        rep = prepared["pruning"]
        assert rep["pruner"] == "magnitude" and rep["params_after"] <= 0.5 * rep["params_before"]
        # the full model is a diffusers LoRA beside its training state
        full = tmp_path / "run" / "full"
        assert (full / "pytorch_lora_weights.safetensors").is_file()
        assert (full / "training" / "pytorch_lora_weights.safetensors").is_file()
        # ft and retrain run through the same family on a coalition
        mask = np.array([1, 0, 1, 1], dtype=bool)
        for name in ("ft", "retrain"):
            p = run.prepare(name)
            spec = run.spec(p, mask, run.cfg.method_settings(name), 0, "fit")
            ex = run.execute([spec], name)
            assert ex.failed == 0, ex.first_error
            assert np.isfinite(list(run.store.get(spec.key).behaviors.values())).all()


def test_baseline_target_differentiates_only_the_adapters(setup):
    """TRAK's per-example gradients (vmap through the LoRA hooks, and the loop) and
    Journey-TRAK on the trajectory recorded with the family's own DDIM scheduler."""
    from diffattr.baselines import local_scores

    base, csv, root = setup
    fam = family(base, guidance_scale=2.0)
    data = fam.training_set(load_folder(csv), root / "cache")
    model = random_b(fam.init_model(data, 0))
    target = fam.baseline_target(model, data, num_samples=3, seed=0, ddim_steps=4)
    assert target.x0_gen.shape == (3, 4, 4, 4) and target.images_gen.shape == (3, 1, 8, 8)
    assert torch.allclose(
        fam.decode(target.x0_gen), fam.sample(model, 3, seed=0, ddim_steps=4), atol=1e-5
    )
    table = {"name": "trak", "timesteps": 2, "projector": "none"}
    vm = local_scores({**table, "per_example": "vmap"}, target)
    lp = local_scores({**table, "per_example": "loop"}, target)
    assert vm.details["train_features"]["grad_dim"] == sum(p.numel() for p in model.parameters())
    np.testing.assert_allclose(vm.scores, lp.scores, rtol=1e-4, atol=1e-7)
    journey = local_scores({"name": "journey-trak", "journey_points": 2, "timesteps": 2}, target)
    assert journey.scores.shape == (3, 16) and np.isfinite(journey.scores).all()


def test_mixed_precision_keeps_adapters_float32(setup):
    base, csv, root = setup
    fam = family(base, dtype="bfloat16")
    data = fam.training_set(load_folder(csv), root / "cache")
    assert fam.base.unet.dtype == torch.bfloat16 and fam.base.vae.dtype == torch.float32
    model = fam.init_model(data, 0)
    res = fam.fit(model, data, TrainConfig(steps=2, batch_size=4, lr=1e-2, checkpoint_every=2))
    assert res.unet.A[0].dtype == torch.float32 and np.isfinite(res.losses).all()
    x = fam.predict_noise(res.unet, torch.randn(2, 4, 4, 4), torch.tensor([1, 2]), data.cond[:2])
    assert x.dtype == torch.float32
    assert fam.sample(res.ema.model, 2, seed=0, ddim_steps=2).dtype == torch.float32


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_demo_base_is_a_cached_stable_diffusion_pipeline(tmp_path):
    from diffusers import StableDiffusionPipeline

    from diffattr.data.settings import T2IDemoData
    from diffattr.families import tiny_t2i
    from diffattr.families.settings import DemoBaseSettings

    demo = DemoBaseSettings(vae_steps=2, unet_steps=2, per_class=4, batch_size=4)
    ds = T2IDemoData().load()
    assert len(set(ds.contributors)) == 20 and set(ds.captions) == {"a photo of a shoe"}
    assert ds.semantic_names == ["sandal", "sneaker", "ankle-boot"]
    by_class = T2IDemoData(caption="class").load()
    assert {c.split()[-1] for c in by_class.captions} == {"sandal", "sneaker", "ankle-boot"}
    assert all(i.startswith("fashion-mnist-test-") for i in ds.ids)  # the base uses train
    assert sorted(ds.meta["noisy_contributors"]) == [f"artist-{k}" for k in range(17, 21)]
    fam = TextToImageSettings(demo=demo, rank=2).build()
    data = fam.training_set(ds, tmp_path / "cache")
    assert data.x0.shape == (len(ds), 4, 8, 8)
    first = tiny_t2i.demo_base_dir(demo, tmp_path / "cache")
    assert tiny_t2i.is_demo_base(first) and fam.base.path == first.resolve()
    stamp = (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    tiny_t2i.ensure_demo_base(demo, tmp_path / "cache")  # cached: not rebuilt
    assert (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    other = DemoBaseSettings(vae_steps=3, unet_steps=2, per_class=4, batch_size=4)
    assert tiny_t2i.demo_base_dir(other, tmp_path / "cache") != first
    pipe = StableDiffusionPipeline.from_pretrained(first, safety_checker=None)
    img = pipe("a photo of a sneaker", num_inference_steps=2, output_type="np").images
    assert img.shape == (1, 16, 16, 1)


# --------------------------------------------------------------- prompted with captions


def captions_run(base, csv, out, **family_kw):
    from diffattr.runner.run import Run

    cfg = RunConfig.from_dict(
        {
            "data": {"name": "folder", "path": str(csv)},
            "family": {"name": "text-to-image", "base": str(base), "rank": 4, **family_kw},
            "train": {"steps": 6, "batch_size": 8, "lr": 5e-3, "checkpoint_every": 6},
            "sample": {"num_samples": 12, "ddim_steps": 3, "batch_size": 12},
            "method": {"name": "surrogate"},
            "attribution": {"subsets": 6, "estimators": ["shapley"]},
        }
    )
    return Run(cfg, out, progress=False)


def test_caption_prompts_follow_each_coalitions_captions(setup):
    """One rule for every method: sample i takes the caption at its fixed quantile of the
    coalition's caption frequencies; the empty coalition takes the empty prompt."""
    base, csv, root = setup
    fam = family(base, generate_with="captions")
    ds = load_folder(csv)  # ann, dee: cat; bob: dog; cy: bird (4 images each)
    assert fam.condition_keys(ds) == ds.captions
    assert family(base).condition_keys(ds) is None  # fixed prompts: no conditions
    data = fam.training_set(ds, root / "cache")
    full = fam.generation_conditions(data, None, 40, seed=0)
    counts = [full.count(f"a photo of a {w}") for w in ("cat", "dog", "bird")]
    assert sum(counts) == 40 and np.abs(np.array(counts) - [20, 10, 10]).max() <= 1, counts
    bob = np.arange(4, 8)
    assert set(fam.generation_conditions(data, bob, 40, seed=0)) == {"a photo of a dog"}
    assert fam.generation_conditions(data, np.array([], dtype=int), 5, seed=0) == [""] * 5
    tail = fam.generation_conditions(data, None, 10, seed=0, start=30)
    assert tail == full[30:]  # per-sample quantiles, whatever the batch
    # common random numbers: a sample keeps its caption when its coalition still has it
    bob_cy = fam.generation_conditions(data, np.arange(4, 12), 40, seed=0)
    for f, s in zip(full, bob_cy):
        assert f == s or f == "a photo of a cat"
    model = random_b(fam.init_model(data, 0))
    x = fam.sample(model, 4, seed=1, ddim_steps=3, conditions=full[:4])
    emb = fam.prompt_embeddings(4, prompts=full[:4])
    assert x.shape == (4, 1, 8, 8) and emb.shape == (4, 8, 16)
    # a prompt's embedding does not depend on the prompts a worker met before it
    fresh = family(base, generate_with="captions")
    fresh.training_set(ds, root / "cache")
    dog = ["a photo of a dog"] * 2
    assert torch.equal(
        fresh.prompt_embeddings(2, prompts=dog), fam.prompt_embeddings(2, prompts=dog)
    )
    with pytest.raises(DiffattrError, match="one prompt per sample"):
        fam.sample(model, 5, seed=1, ddim_steps=3, conditions=full[:4])
    with pytest.raises(DiffattrError, match="prompts: a list of strings"):
        fam.sample(model, 4, seed=1, ddim_steps=3, conditions=torch.zeros(4))
    with pytest.raises(Exception, match="leave prompts unset"):
        TextToImageSettings(base=str(base), generate_with="captions", prompts=["a photo"])


def test_surrogate_on_captions_reproduces_the_full_model_and_one_artists_captions(
    setup, tmp_path, monkeypatch
):
    from diffattr.runner.job import record_for, worker_for

    base, _, _ = setup
    csv = write_csv(tmp_path, who=("ann", "bob", "cy"), per=7)  # cat, dog, bird
    with captions_run(base, csv, tmp_path / "run", generate_with="captions") as run:
        p = run.prepare()
        worker = worker_for(p.ctx)
        full = worker.family.load(p.full_dir).model
        spec = run.reference_specs(p)["method"]
        assert spec.method == "surrogate" and spec.mask == "111"
        rec = record_for(spec)
        model = worker.model_for(spec, rec)
        assert rec.extra["training_free"] is True
        torch.testing.assert_close(worker.sample(model, "111"), worker.sample(full, "111"))
        seen = {}
        real = worker.family.sample

        def spy(model, num_samples, **kw):
            seen["prompts"] = kw["conditions"]
            return real(model, num_samples, **kw)

        monkeypatch.setattr(worker.family, "sample", spy)
        spec = run.spec(p, "010", p.method, 0, "fit")
        one = worker.sample(worker.model_for(spec, record_for(spec)), spec.mask)
        assert set(seen["prompts"]) == {"a photo of a dog"}
        worker.sample(full, "111")
        assert set(seen["prompts"]) == {f"a photo of a {w}" for w in ("cat", "dog", "bird")}
        assert not torch.allclose(one, worker.sample(full, "111"))


def test_surrogate_refuses_fixed_prompts_and_one_shared_caption(setup, tmp_path):
    from diffattr.runner.plan import make_plan

    base, _, _ = setup
    csv = write_csv(tmp_path, who=("ann", "bob", "cy"), per=7)
    with pytest.raises(DiffattrError, match="generate_with = 'captions'") as e:
        captions_run(base, csv, tmp_path / "fixed")
    assert "\n" not in str(e.value) and not (tmp_path / "fixed").exists()
    same = write_csv(tmp_path / "same", who=("ann", "bob", "cy"), per=7)
    lines = same.read_text().splitlines()
    same.write_text(
        "\n".join([lines[0]] + [ln.rsplit(",", 1)[0] + ",a photo of a cat" for ln in lines[1:]])
        + "\n"
    )
    with captions_run(base, same, tmp_path / "same-run", generate_with="captions") as run:
        with pytest.raises(DiffattrError, match="cannot tell the players apart") as e:
            make_plan(run.cfg, tmp_path / "same-run")
        assert "\n" not in str(e.value) and "captions" in str(e.value)
        with pytest.raises(DiffattrError, match="cannot tell the players apart"):
            run.prepare()
    assert not (tmp_path / "same-run" / "full").exists()


def test_the_demo_data_are_known_wherever_data_settings_are_read():
    """The report and the results read a run's [data] with the data registry alone: the
    t2i-demo data must be registered there, not only once the families are imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from diffattr.data.settings import DATASETS\n"
        "s = DATASETS.parse({'name': 't2i-demo', 'caption': 'class'}, 'data')\n"
        "assert 'diffattr.families.settings' not in sys.modules\n"
        "print(s.name, s.caption)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["t2i-demo", "class"]
