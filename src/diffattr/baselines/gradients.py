"""Projected per-example gradients of diffusion output functions (the TRAK-family features).

An example ``i`` is probed at ``K`` points ``(x_t, t, target)``; its feature is the gradient,
with respect to the chosen parameters, of the output averaged over its probes, randomly
projected to ``projection_dim`` dimensions with traker's projectors:

* TRAK / D-TRAK probes (:func:`noise_probes`): fixed timesteps ``t_k = k T / K``, each
  with one fixed Gaussian noise shared by all examples (or, ``shared_noise = False``, a
  noise per (example, k) seeded by ``(seed, role, index)``); a feature depends on neither
  the batch size nor the other examples;
* Journey-TRAK probes (:func:`journey_probes`): the states ``x_t`` of the example's own
  DDIM trajectory at their own ``t``, with the noise that maps the final sample to that
  ``x_t`` as the target.

Output functions: ``loss`` = mean squared error between predicted and target noise (the
training loss of Ho et al.), ``squared-norm`` = mean squared predicted noise (D-TRAK),
``mean`` = mean predicted noise (DAS's scalar summary of the predicted noise).

Per-example gradients are taken with ``torch.func`` (``functional_call`` + ``vmap(grad)``),
or with one backward pass per example (``loop``); ``auto`` tries vmap on the first batch and
falls back to the loop when it fails.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from diffattr.baselines.target import DiffusionTarget, Trajectory
from diffattr.errors import DiffattrError

OUTPUTS = ("loss", "squared-norm", "mean")
PROJECTORS = ("auto", "basic", "cuda", "none")


# ----------------------------------------------------------------------------- probes


@dataclass
class ProbeBatch:
    """Probes of ``b`` examples: ``x_t`` and ``target`` (b, K, C, H, W), ``t`` (b, K),
    ``cond`` a tensor / dict of tensors with first dimension b, or None."""

    x_t: torch.Tensor
    t: torch.Tensor
    target: torch.Tensor
    cond: Any


@dataclass
class ProbeSource:
    """``n`` examples with ``k`` probes each; ``get(lo, hi)`` builds those of lo..hi-1."""

    n: int
    k: int
    get: Callable[[int, int], ProbeBatch]


def fixed_timesteps(count: int, num_train_timesteps: int) -> list[int]:
    """``count`` timesteps ``k * T // count`` (D-TRAK's uniform scheme)."""
    if count <= 0 or count > num_train_timesteps:
        raise DiffattrError(f"timesteps must lie in 1..{num_train_timesteps}, got {count}")
    return [k * num_train_timesteps // count for k in range(count)]


def probe_seed(seed: int, role: str, index: int) -> int:
    h = hashlib.blake2b(f"{seed}:{role}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def _alphas(scheduler: Any, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ac = torch.as_tensor(scheduler.alphas_cumprod).to(torch.float32)[t.cpu()]
    return ac**0.5, (1 - ac) ** 0.5


def noise_probes(
    x0: torch.Tensor,
    cond: Any,
    scheduler: Any,
    timesteps: Sequence[int],
    seed: int,
    role: str,
    shared_noise: bool = True,
) -> ProbeSource:
    """TRAK / D-TRAK probes of the examples ``x0`` (N, C, H, W).

    ``shared_noise``: one fixed noise per timestep, the same for every example of every
    role (common random numbers, as D-TRAK's reseeding per timestep); else a noise per
    (example, timestep) seeded by ``(seed, role, index)``.
    """
    ts = torch.as_tensor(list(timesteps), dtype=torch.long)
    k = len(ts)
    sa, sb = _alphas(scheduler, ts)
    shape = tuple(x0.shape[1:])
    view = (1, k) + (1,) * len(shape)
    common = None
    if shared_noise:
        gen = torch.Generator().manual_seed(probe_seed(seed, "shared", 0))
        common = torch.randn((1, k, *shape), generator=gen)

    def get(lo: int, hi: int) -> ProbeBatch:
        if common is not None:
            noise = common.expand(hi - lo, *common.shape[1:])
        else:
            noise = torch.empty((hi - lo, k, *shape))
            for row, i in enumerate(range(lo, hi)):
                g = torch.Generator().manual_seed(probe_seed(seed, role, i))
                noise[row] = torch.randn((k, *shape), generator=g)
        x = x0[lo:hi].float().cpu()[:, None]
        x_t = sa.view(view) * x + sb.view(view) * noise
        c = None if cond is None else tree_map(lambda v: v[lo:hi], cond)
        return ProbeBatch(x_t, ts.expand(hi - lo, k), noise.contiguous(), c)

    return ProbeSource(int(x0.shape[0]), k, get)


def journey_probes(traj: Trajectory, cond: Any, scheduler: Any) -> ProbeSource:
    """Journey-TRAK probes: sample ``g`` is probed at its recorded states ``x_t``; the
    target is the noise ``(x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)`` that reaches that
    state from its final sample ``x_0``."""
    ts = traj.timesteps.long()
    k = len(ts)
    sa, sb = _alphas(scheduler, ts)
    shape = tuple(traj.final.shape[1:])
    view = (1, k) + (1,) * len(shape)

    def get(lo: int, hi: int) -> ProbeBatch:
        x_t = traj.states[:, lo:hi].transpose(0, 1).float()
        x0 = traj.final[lo:hi].float()[:, None]
        target = (x_t - sa.view(view) * x0) / sb.view(view)
        c = None if cond is None else tree_map(lambda v: v[lo:hi], cond)
        return ProbeBatch(x_t, ts.expand(hi - lo, k), target, c)

    return ProbeSource(int(traj.final.shape[0]), k, get)


# ----------------------------------------------------------------------------- gradients


class _EpsModule(nn.Module):
    """``eps_fn(model, x_t, t, cond)`` as a module, so ``functional_call`` can swap weights."""

    def __init__(self, model: nn.Module, eps_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self._eps_fn = eps_fn

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return self._eps_fn(self.model, x_t, t, cond)


def _output(eps: torch.Tensor, target: torch.Tensor | None, output: str) -> torch.Tensor:
    """Per-probe output, shape (K,)."""
    if output == "loss":
        return (eps - target).pow(2).flatten(1).mean(1)
    if output == "mean":
        return eps.flatten(1).mean(1)
    return eps.pow(2).flatten(1).mean(1)


class PerExampleGradients:
    """Flat per-example gradients (b, P) of an output averaged over each example's probes."""

    def __init__(self, target: DiffusionTarget, output: str, mode: str = "auto") -> None:
        if output not in OUTPUTS:
            raise DiffattrError(
                f"unknown output function {output!r}; choose one of: {', '.join(OUTPUTS)}"
            )
        if mode not in ("auto", "vmap", "loop"):
            raise DiffattrError(f"unknown per_example mode {mode!r}; use auto, vmap or loop")
        self.target = target
        self.output = output
        self.mode = mode
        self.device = target.device
        self.named = target.named_params()
        self.names = list(self.named)
        self.shapes = [p.shape for p in self.named.values()]
        self.numel = sum(p.numel() for p in self.named.values())
        self.module = _EpsModule(target.model, target.eps_fn)
        self.used: str | None = None
        self.fallback_reason: str | None = None

    # one example's averaged output, for torch.func
    def _example_output(self, params, x_t, t, target, cond, scale: float) -> torch.Tensor:
        k = x_t.shape[0]
        c = None if cond is None else tree_map(lambda v: v.unsqueeze(0).expand(k, *v.shape), cond)
        full = {f"model.{n}": p for n, p in params.items()}
        eps = torch.func.functional_call(self.module, full, (x_t, t, c), strict=False)
        return _output(eps, target, self.output).sum() * scale

    def _vmap(self, batch: ProbeBatch, scale: float) -> torch.Tensor:
        params = {n: p.detach() for n, p in self.named.items()}
        tgt = batch.target if self.output == "loss" else None
        in_dims = (
            None,
            0,
            0,
            0 if tgt is not None else None,
            0 if batch.cond is not None else None,
        )

        def fn(p, x_t, t, target, cond):
            return self._example_output(p, x_t, t, target, cond, scale)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            grads = torch.func.vmap(torch.func.grad(fn), in_dims=in_dims)(
                params, batch.x_t, batch.t, tgt, batch.cond
            )
        b = batch.x_t.shape[0]
        return torch.cat([grads[n].reshape(b, -1) for n in self.names], dim=1)

    def _loop(self, batch: ProbeBatch, scale: float) -> torch.Tensor:
        params = list(self.named.values())
        rows = []
        for i in range(batch.x_t.shape[0]):
            x_t, t = batch.x_t[i], batch.t[i]
            c = None if batch.cond is None else _expand_row(batch.cond, i, x_t.shape[0])
            with torch.enable_grad():
                eps = self.module(x_t, t, c)
                out = _output(eps, batch.target[i], self.output).sum() * scale
                grads = torch.autograd.grad(out, params, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, params)
                    ]
                )
            )
        return torch.stack(rows)

    def __call__(self, batch: ProbeBatch, scale: float) -> torch.Tensor:
        batch = ProbeBatch(
            batch.x_t.to(self.device),
            batch.t.to(self.device),
            batch.target.to(self.device),
            None if batch.cond is None else tree_map(lambda v: v.to(self.device), batch.cond),
        )
        if self.used == "loop" or self.mode == "loop":
            self.used = "loop"
            return self._loop(batch, scale)
        try:
            out = self._vmap(batch, scale)
            self.used = "vmap"
            return out
        except Exception as exc:  # vmap has no rule for some op of this model
            if self.mode == "vmap" or self.used == "vmap":
                raise DiffattrError(
                    f"per-example gradients with vmap failed: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc
            self.used = "loop"
            self.fallback_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            return self._loop(batch, scale)


def _expand_row(cond: Any, i: int, k: int) -> Any:
    """Row ``i`` of every conditioning tensor, repeated for ``k`` probes."""
    return tree_map(lambda v: v[i].unsqueeze(0).expand(k, *v[i].shape), cond)


class _grad_context:
    """Eval mode, and ``requires_grad`` on exactly the chosen parameters (restored after)."""

    def __init__(self, model: nn.Module, chosen: dict[str, nn.Parameter]) -> None:
        self.model = model
        self.chosen = set(chosen)

    def __enter__(self) -> None:
        self.training = self.model.training
        self.flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self.model.eval()
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in self.chosen)

    def __exit__(self, *exc: Any) -> None:
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.flags[n])
        self.model.train(self.training)


# ----------------------------------------------------------------------------- projection


def fast_jl_available() -> bool:
    try:
        import fast_jl  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_projector(kind: str, device: torch.device, proj_dim: int) -> str:
    """The projector ``auto`` means here: ``cuda`` on a GPU with fast_jl (and a dimension
    that is a multiple of 512), else ``basic``."""
    if kind not in PROJECTORS:
        raise DiffattrError(f"unknown projector {kind!r}; choose one of: {', '.join(PROJECTORS)}")
    if kind == "auto":
        ok = device.type == "cuda" and proj_dim % 512 == 0 and fast_jl_available()
        return "cuda" if ok else "basic"
    if kind == "cuda":
        if device.type != "cuda" or not fast_jl_available():
            raise DiffattrError("projector 'cuda' needs a CUDA device and the fast_jl package")
        if proj_dim % 512:
            raise DiffattrError(
                f"projector 'cuda' needs a projection_dim divisible by 512, got {proj_dim}"
            )
    return kind


#: Largest Gaussian block of the basic projector, in float32 entries (1 GiB).
BASIC_BLOCK_ENTRIES = 1 << 28


def basic_block_size(grad_dim: int, proj_dim: int) -> int:
    """Columns per block of traker's ``BasicProjector``. Its random matrix depends on the
    block size, so this is a function of the two dimensions only (part of the features'
    identity through the model digest and ``projection_dim``), never of a memory setting."""
    return max(1, min(proj_dim, BASIC_BLOCK_ENTRIES // max(grad_dim, 1)))


class Projector:
    """Random projection of flat gradients (b, P) -> (b, k) by traker's projectors
    (Gaussian entries for ``basic``, Rademacher for ``cuda``); ``none`` is the identity."""

    def __init__(
        self,
        kind: str,
        grad_dim: int,
        proj_dim: int,
        seed: int,
        device: torch.device,
    ) -> None:
        self.kind = resolve_projector(kind, device, proj_dim)
        self.grad_dim = grad_dim
        self.dim = grad_dim if self.kind == "none" else proj_dim
        self._proj = None
        if self.kind == "none":
            return
        try:
            from trak.projectors import BasicProjector, CudaProjector, ProjectionType
        except ImportError:
            raise DiffattrError(
                "the gradient baselines need the traker package: pip install traker"
            ) from None
        if self.kind == "basic":
            block = basic_block_size(grad_dim, proj_dim)
            self.block = block
            self._proj = BasicProjector(
                grad_dim=grad_dim,
                proj_dim=proj_dim,
                seed=seed,
                proj_type=ProjectionType.normal,
                device=device,
                block_size=block,
            )
            self.chunk = 1 << 30
        else:
            self._proj = CudaProjector(
                grad_dim=grad_dim,
                proj_dim=proj_dim,
                seed=seed,
                proj_type=ProjectionType.rademacher,
                device=device,
                max_batch_size=32,
            )
            self.chunk = 32

    def __call__(self, grads: torch.Tensor) -> torch.Tensor:
        if self._proj is None:
            return grads.float()
        grads = grads.float()
        parts = [
            self._proj.project(grads[s : s + self.chunk].contiguous(), model_id=0)
            for s in range(0, grads.shape[0], self.chunk)
        ]
        return torch.cat(parts).float()


# ----------------------------------------------------------------------------- features


@dataclass
class GradientFeatures:
    features: torch.Tensor  # (n, k) float32 on the CPU
    seconds: float
    info: dict[str, Any]


def project_gradients(
    target: DiffusionTarget,
    source: ProbeSource,
    output: str,
    *,
    projection_dim: int,
    seed: int,
    projector: str = "auto",
    buffer_mb: int = 1024,
    batch_size: int = 32,
    per_example: str = "auto",
    progress: bool = False,
) -> GradientFeatures:
    """Projected features (n, k) of the examples of ``source`` (see the module doc).

    Per-example gradients are taken ``batch_size`` probes at a time and gathered into a
    buffer of up to ``buffer_mb`` (at least one vmap batch) that is projected in one call:
    the basic projector regenerates its Gaussian blocks on every call, so fewer, larger
    calls are much cheaper. The features do not depend on ``batch_size`` or ``buffer_mb``.
    """
    t0 = time.perf_counter()
    engine = PerExampleGradients(target, output, per_example)
    proj = Projector(projector, engine.numel, projection_dim, seed, target.device)
    k = source.k
    per_call = max(1, batch_size // k)
    k_chunk = min(k, batch_size)
    buffer_rows = max(per_call, (buffer_mb << 20) // (4 * max(engine.numel, 1)))
    out = torch.empty((source.n, proj.dim), dtype=torch.float32)
    scale = 1.0 / k
    from tqdm.auto import tqdm

    pending: list[torch.Tensor] = []
    done = 0  # rows of ``out`` written

    def flush() -> None:
        nonlocal done, pending
        if pending:
            rows = torch.cat(pending)
            out[done : done + rows.shape[0]] = proj(rows).cpu()
            done += rows.shape[0]
            pending = []

    with _grad_context(target.model, engine.named):
        starts = range(0, source.n, per_call)
        for lo in tqdm(starts, desc=f"gradients[{output}]", disable=not progress, leave=False):
            hi = min(lo + per_call, source.n)
            batch = source.get(lo, hi)
            acc = None
            for k0 in range(0, k, k_chunk):
                part = ProbeBatch(
                    batch.x_t[:, k0 : k0 + k_chunk],
                    batch.t[:, k0 : k0 + k_chunk],
                    batch.target[:, k0 : k0 + k_chunk],
                    batch.cond,
                )
                g = engine(part, scale)
                acc = g if acc is None else acc + g
            if sum(p.shape[0] for p in pending) + acc.shape[0] > buffer_rows:
                flush()
            pending.append(acc)
        flush()
    assert done == source.n
    if not torch.isfinite(out).all():
        raise DiffattrError(f"non-finite gradients of the {output} output (diverged model?)")
    info = {
        "per_example": engine.used,
        "projector": proj.kind,
        "feature_dim": proj.dim,
        "projector_block": getattr(proj, "block", None),
        "grad_dim": engine.numel,
        "probes_per_example": k,
    }
    if engine.fallback_reason:
        info["vmap_failed"] = engine.fallback_reason
    return GradientFeatures(out, time.perf_counter() - t0, info)
