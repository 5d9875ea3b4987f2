"""K models of one architecture trained and sampled side by side (``torch.func``).

The parameters of K copies of a model are stacked (``stack_module_state``: one tensor of
shape (K, ...) per parameter) and the model is called once per step through
``vmap(functional_call)``, so K coalition models cost one call per operator instead of K.
Each model keeps everything a one-at-a-time job gives it (``diffusion.train.train``): its
own data, its own seeded stream of batches, timesteps, noise, flips and condition dropout,
its own gradient-norm clipping, Adam moments and EMA. Adam and the EMA are elementwise, so
one optimizer over the stacked tensors is K optimizers; the gradient of the sum of the K
losses with respect to model k's slice is model k's gradient.

What differs from K separate runs is float summation order only: under ``vmap`` a
convolution becomes a grouped one, GroupNorm runs through aten's kernel and attention as
plain tensor arithmetic (``VmapSafe``: torch's GroupNorm wrapper asks for a memory format
inside vmap, which vmap cannot answer), and losses and gradient norms reduce over
differently shaped tensors. The tests
state the tolerance this leaves after a fine-tune (``tests/diffusion/test_stacked.py``).

Whether this pays depends on the hardware: on a CPU a small UNet's step is arithmetic
bound and stacking costs as much or more per model (BENCHMARKS.md, "Coalition models side
by side"); on a GPU, where a small model is launch bound, it is the way to fill the device.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.overrides import TorchFunctionMode

from diffattr.diffusion.ema import EMA
from diffattr.diffusion.sample import ddim_run
from diffattr.diffusion.settings import TrainConfig
from diffattr.diffusion.train import DROPOUT_SEED_OFFSET, Denoiser, Examples, TrainResult, _draw
from diffattr.errors import DiffattrError
from diffattr.torchutils import adam

#: The settings of a recipe that K stacked models must share (their seeds may differ).
SHARED_RECIPE = ("steps", "batch_size", "lr", "grad_clip", "ema_decay", "hflip")


def _group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *_, **__):
    # aten's own kernel, which has a batching rule, instead of F.group_norm's wrapper (it
    # asks for a memory format, which vmap cannot answer): 4x faster than the arithmetic.
    # The kernel needs a contiguous input (a no-op where it already is).
    input = input.contiguous()
    n, c = input.shape[:2]
    hw = 1
    for d in input.shape[2:]:
        hw *= d
    return torch.ops.aten.native_group_norm(input, weight, bias, n, c, hw, num_groups, eps)[0]


def _attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    if attn_mask is not None or is_causal or dropout_p:
        raise DiffattrError("stacked models support plain attention only (no mask, no dropout)")
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    return torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v


class VmapSafe(TorchFunctionMode):
    """GroupNorm through aten's kernel and scaled-dot-product attention as plain tensor
    arithmetic (the same functions, computed in another order), so that a diffusers UNet
    runs under ``vmap``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.group_norm, torch.group_norm):
            return _group_norm(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            return _attention(*args, **kwargs)
        return func(*args, **kwargs)


class _Predict(nn.Module):
    """A noise prediction ``fn(model, x_t, t, cond)`` as a module, so ``functional_call`` can
    swap the model's weights (its parameters are named ``model.<name>``)."""

    def __init__(self, fn: Callable, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._fn = fn

    def forward(self, x_t, t, cond=None):
        return self._fn(self.model, x_t, t, cond)


class Stack:
    """K models of one architecture as stacked tensors, called through ``vmap``.

    ``params`` / ``buffers``: name -> (K, ...) tensors, named as in ``template``
    (``named_parameters`` order). ``predict(x, t, cond)`` maps (K, B, ...) inputs to the K
    models' (K, B, ...) noise predictions -- ``denoiser.predict_noise``, or ``fn(model, x_t,
    t, cond)`` when given (e.g. a guided prediction for sampling); ``module(k)`` is model k
    as an ordinary module.
    """

    def __init__(self, template: nn.Module, params: dict, buffers: dict, denoiser: Denoiser):
        self.template = template
        self.params = params
        self.buffers = buffers
        self.denoiser = denoiser
        self.k = next(iter(params.values())).shape[0] if params else 0

    @classmethod
    def of(cls, models: Sequence[nn.Module], denoiser: Denoiser) -> Stack:
        """Stack ``models`` (same architecture and shapes: ``stack_reason`` says why not)."""
        reason = stack_reason(models)
        if reason is not None:
            raise DiffattrError(f"cannot stack these models: {reason}")
        params, buffers = stack_module_state(list(models))
        template = copy.deepcopy(models[0])
        # stack_module_state's tensors may share memory with nothing; make them leaves of
        # our own so an optimizer can own them
        params = {n: p.detach().clone() for n, p in params.items()}
        buffers = {n: b.detach().clone() for n, b in buffers.items()}
        return cls(template, params, buffers, denoiser)

    def predict(
        self, x: torch.Tensor, t: torch.Tensor, cond: Any = None, fn: Callable | None = None
    ) -> torch.Tensor:
        p = {f"model.{n}": v for n, v in self.params.items()}
        b = {f"model.{n}": v for n, v in self.buffers.items()}
        call = _Predict(fn or self.denoiser.predict_noise, self.template)

        def one(p, b, x, t, c):
            with VmapSafe():
                return functional_call(call, (p, b), (x, t, c))

        if cond is None:
            return vmap(lambda p, b, x, t: one(p, b, x, t, None))(p, b, x, t)
        return vmap(one)(p, b, x, t, cond)

    def module(self, k: int) -> nn.Module:
        """Model ``k`` as a module of the template's class (a copy of its tensors)."""
        m = copy.deepcopy(self.template)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_(self.params[n][k])
            for n, b in m.named_buffers():
                b.copy_(self.buffers[n][k])
        return m


def stack_reason(models: Sequence[nn.Module]) -> str | None:
    """Why ``models`` cannot be stacked, or None: they must be at least one, of one class,
    with the same parameter and buffer names and shapes."""
    if not models:
        return "no models"
    first = models[0]

    def shapes(m: nn.Module) -> list:
        return [(n, tuple(v.shape)) for n, v in (*m.named_parameters(), *m.named_buffers())]

    ref = shapes(first)
    for m in models[1:]:
        if type(m) is not type(first):
            return f"models of different classes ({type(first).__name__}, {type(m).__name__})"
        if shapes(m) != ref:
            return "models with different parameter shapes"
    return None


def check_recipes(cfgs: Sequence[TrainConfig]) -> None:
    """Stacked models train in lockstep: their recipes may differ in the seed only."""
    first = cfgs[0]
    for c in cfgs[1:]:
        diff = [k for k in SHARED_RECIPE if getattr(c, k) != getattr(first, k)]
        if diff:
            raise DiffattrError(
                f"stacked models must share their training recipe but for the seed; "
                f"they differ in {', '.join(diff)}"
            )


def _stack_optimizer_state(states: Sequence[dict | None], names: list[str]) -> dict | None:
    """One Adam state over stacked tensors from K states over the models' own tensors."""
    if all(s is None for s in states):
        return None
    if any(s is None for s in states):
        raise DiffattrError("stacked models must all continue an optimizer state, or none")
    first = states[0]
    out_state = {}
    for i in range(len(names)):
        per = [s["state"].get(i) for s in states]
        if any(p is None for p in per):
            if any(p is not None for p in per):
                raise DiffattrError("stacked optimizer states cover different parameters")
            continue
        steps = {float(p["step"]) for p in per}
        if len(steps) > 1:
            raise DiffattrError("stacked models must continue optimizer states of one step")
        out_state[i] = {
            "step": per[0]["step"].clone(),
            "exp_avg": torch.stack([p["exp_avg"] for p in per]),
            "exp_avg_sq": torch.stack([p["exp_avg_sq"] for p in per]),
        }
    groups = copy.deepcopy(first["param_groups"])
    return {"state": out_state, "param_groups": groups}


def _unstack_optimizer_state(state: dict, k: int) -> dict:
    out = {}
    for i, s in state["state"].items():
        out[i] = {
            "step": s["step"].clone(),
            "exp_avg": s["exp_avg"][k].clone(),
            "exp_avg_sq": s["exp_avg_sq"][k].clone(),
        }
    return {"state": out, "param_groups": copy.deepcopy(state["param_groups"])}


def train_stacked(
    models: Sequence[nn.Module],
    datas: Sequence[Examples],
    cfgs: Sequence[TrainConfig],
    *,
    denoiser: Denoiser,
    device: str | torch.device = "cpu",
    emas: Sequence[EMA] | None = None,
    optimizer_states: Sequence[dict | None] | None = None,
) -> list[TrainResult]:
    """Train K models side by side, model k on ``datas[k]`` with ``cfgs[k]`` -- what
    ``train(models[k], datas[k], cfgs[k], ...)`` computes, to float tolerance (module
    docstring). ``emas`` / ``optimizer_states``: each model's EMA and Adam state to
    continue (as ``train`` takes them); the recipes may differ only in their seeds.

    Returns one ``TrainResult`` per model; its ``seconds`` is the batch's time divided by K
    (each model's share). The models passed in are not changed.
    """
    k_models = len(models)
    if not (len(datas) == len(cfgs) == k_models) or k_models == 0:
        raise DiffattrError("train_stacked needs one data set and one recipe per model")
    check_recipes(cfgs)
    for d in datas:
        if len(d.x0) == 0:
            raise DiffattrError("cannot train on an empty set of examples")
    names = [n for n, _ in models[0].named_parameters()]
    trainable = {id(p) for p in denoiser.trainable_parameters(models[0])}
    if len(trainable) != len(names):
        raise DiffattrError("stacked training needs every parameter of the model to train")
    cfg = cfgs[0]
    device = torch.device(device)
    stack = Stack.of([m.to(device) for m in models], denoiser)
    stack.template.to(device).train()
    for v in stack.params.values():
        v.requires_grad_(True)
    params = [stack.params[n] for n in names]
    opt = adam(params, cfg.lr)
    state = _stack_optimizer_state(optimizer_states or [None] * k_models, names)
    if state is not None:
        opt.load_state_dict(state)
        for group in opt.param_groups:
            group["lr"] = cfg.lr

    emas = list(emas) if emas is not None else [EMA(m, cfg.ema_decay) for m in models]
    if len({e.step for e in emas}) > 1:
        raise DiffattrError("stacked models must continue EMAs of one step")
    ema_stack = Stack.of([e.model.to(device) for e in emas], denoiser)
    ema_step = emas[0].step

    scheduler = denoiser.noise_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    T = scheduler.config.num_train_timesteps
    x0_all = [d.x0.to(device) for d in datas]
    cond_all = [d.cond.to(device) if isinstance(d.cond, torch.Tensor) else None for d in datas]
    has_cond = [c is not None for c in cond_all]
    if any(has_cond) and not all(has_cond):
        raise DiffattrError("stacked models must all have conditions, or none")
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    p_drop = float(getattr(denoiser, "condition_dropout", 0.0) or 0.0)
    drop_gens = None
    if p_drop > 0 and all(has_cond):
        drop_gens = [torch.Generator().manual_seed(c.seed + DROPOUT_SEED_OFFSET) for c in cfgs]

    shape = x0_all[0].shape[1:]
    losses: list[list[float]] = [[] for _ in range(k_models)]
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        x0s, ts, noises, conds = [], [], [], []
        for j in range(k_models):
            idx, t, noise, flip = _draw(gens[j], len(x0_all[j]), cfg, T, shape)
            idx_d = idx.to(device)
            x0 = x0_all[j][idx_d]
            if flip is not None:
                x0 = torch.where(flip.to(device)[:, None, None, None], x0.flip(-1), x0)
            cond = cond_all[j][idx_d] if cond_all[j] is not None else None
            if drop_gens is not None:
                dropped = torch.rand(cfg.batch_size, generator=drop_gens[j]) < p_drop
                cond = denoiser.drop_conditions(cond, dropped.to(device))
            x0s.append(x0)
            ts.append(t.to(device))
            noises.append(noise.to(device))
            conds.append(cond)
        x0, t, noise = torch.stack(x0s), torch.stack(ts), torch.stack(noises)
        xt = scheduler.add_noise(x0.flatten(0, 1), noise.flatten(0, 1), t.flatten())
        cond = torch.stack(conds) if all(has_cond) else None
        pred = stack.predict(xt.view_as(x0), t, cond)
        per_model = ((pred.float() - noise.float()) ** 2).flatten(1).mean(1)
        opt.zero_grad(set_to_none=True)
        per_model.sum().backward()
        _clip_per_model(params, cfg.grad_clip)
        opt.step()
        _ema_update(ema_stack, stack, min(cfg.ema_decay, (1 + ema_step) / (10 + ema_step)))
        ema_step += 1
        for j, v in enumerate(per_model.detach().tolist()):
            losses[j].append(v)
    seconds = (time.perf_counter() - t0) / k_models

    full_state = opt.state_dict()
    out = []
    for j in range(k_models):
        raw = stack.module(j)
        for p in raw.parameters():
            p.requires_grad_(True)
        ema = EMA(ema_stack.module(j), cfg.ema_decay, step=ema_step)
        state_j = _unstack_optimizer_state(full_state, j)
        out.append(TrainResult(raw, ema, state_j, cfg.steps, seconds, losses[j]))
    return out


@torch.no_grad()
def _clip_per_model(params: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` of each model's own gradients (the slices k of every tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.flatten(1).norm(2, dim=1) for g in grads])  # (P, K)
    total = norms.norm(2, dim=0)  # (K,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


@torch.no_grad()
def _ema_update(ema: Stack, model: Stack, decay: float) -> None:
    names = list(ema.params)
    torch._foreach_lerp_(
        [ema.params[n] for n in names], [model.params[n].detach() for n in names], 1.0 - decay
    )
    for n, b in ema.buffers.items():
        b.copy_(model.buffers[n])


def stacked_eps(
    stack: Stack, fn: Callable | None = None
) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """``eps_fn`` of ``ddim_run`` for K stacked models: x_t is (K, B, ...), ``cond`` (if
    any) (B, K) -- per-sample rows, one column per model -- and t a scalar timestep;
    ``fn(model, x_t, t, cond)`` the prediction (default: the denoiser's)."""

    def eps(x, t, cond):
        tt = t.reshape(1).expand(x.shape[0], x.shape[1])
        c = None if cond is None else cond.transpose(0, 1)
        return stack.predict(x, tt, c, fn)

    return eps


def sample_stacked(
    models: Sequence[nn.Module],
    denoiser: Denoiser,
    num_samples: int,
    *,
    seed: int,
    ddim_steps: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    cond: torch.Tensor | None = None,
    fn: Callable | None = None,
    scheduler_config: dict | None = None,
) -> list[torch.Tensor]:
    """DDIM samples of each of ``models`` (one architecture), sampled side by side in one
    loop (``ddim_run`` with ``copies``): model k's sample i starts from the noise of
    (seed, i), as one at a time. ``cond``: per-sample conditions, (N, K); ``fn(model, x_t,
    t, cond)`` the prediction (default: the denoiser's). A sampling batch holds
    ``batch_size`` images in all, ``batch_size // K`` per model. Unclamped, on the CPU."""
    stack = Stack.of([m.to(device) for m in models], denoiser)
    stack.template.eval()
    cfg = models[0].config
    size = cfg.sample_size[0] if isinstance(cfg.sample_size, list | tuple) else cfg.sample_size
    shape = (int(cfg.in_channels), int(size), int(size))
    x = ddim_run(
        stacked_eps(stack, fn),
        shape,
        num_samples,
        ddim_steps=ddim_steps,
        seed=seed,
        batch_size=max(1, batch_size // len(models)),
        device=device,
        cond=cond,
        scheduler_config=scheduler_config,
        copies=len(models),
    ).final
    return list(x.unbind(0))
