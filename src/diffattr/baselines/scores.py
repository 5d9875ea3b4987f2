"""Local scores (generated x training) from features, and their aggregation to players.

TRAK-type scores use the kernel ``K = Phi^T Phi + lambda I`` of the training features
``Phi`` (N, k): ``score(g, i) = phi_g K^-1 phi_i`` (solved in float64; when N < k through
the equal dual form ``Phi^T (Phi Phi^T + lambda I)^-1``, an N x N system). Traker's score
computer inverts in float32 and rescales ``K^-1`` by its mean absolute entry, which changes
the scale of the scores, so the kernel is solved here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from diffattr.data.players import Players
from diffattr.errors import DiffattrError

VARIANTS = ("trak", "relative", "renormalized", "cosine")
AGGREGATIONS = ("sum", "mean", "max")


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    try:
        return torch.linalg.solve(a, b)
    except RuntimeError:  # singular (lambda = 0 on rank-deficient features)
        return torch.linalg.pinv(a, hermitian=True) @ b


def kernel_features(train: torch.Tensor, regularization: float) -> torch.Tensor:
    """``K^-1 Phi^T`` (k, N) in float64."""
    phi = train.double()
    n, k = phi.shape
    if n < k:
        gram = phi @ phi.T + regularization * torch.eye(n, dtype=phi.dtype, device=phi.device)
        return phi.T @ _solve(gram, torch.eye(n, dtype=phi.dtype, device=phi.device))
    kern = phi.T @ phi + regularization * torch.eye(k, dtype=phi.dtype, device=phi.device)
    return _solve(kern, phi.T)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    norms = x.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, x / norms.clamp_min(1e-300), torch.zeros_like(x))


def gradient_scores(
    train: torch.Tensor,
    gen: torch.Tensor,
    variant: str = "trak",
    regularization: float = 0.5,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Scores (G, N) of generated features ``gen`` (G, k) against ``train`` (N, k).

    ``trak``: ``phi_g K^-1 phi_i``; ``relative``: divided by ``||K^-1 phi_i||`` (Barshan et
    al. 2020); ``renormalized``: divided by ``||phi_i||`` (Hammoudeh & Lowd 2022);
    ``cosine``: ``cos(phi_g, phi_i)``. A zero norm gives a zero score.
    """
    if variant not in VARIANTS:
        raise DiffattrError(
            f"unknown score variant {variant!r}; choose one of: {', '.join(VARIANTS)}"
        )
    if train.ndim != 2 or gen.ndim != 2 or train.shape[1] != gen.shape[1]:
        raise DiffattrError(
            f"features must be (N, k) and (G, k); got {tuple(train.shape)} and {tuple(gen.shape)}"
        )
    phi = train.to(device).double()
    psi = gen.to(device).double()
    if variant == "cosine":
        return (_unit_rows(psi) @ _unit_rows(phi).T).cpu().numpy()
    kinv_phi = kernel_features(phi, regularization)  # (k, N)
    scores = psi @ kinv_phi
    if variant == "relative":
        norms = kinv_phi.norm(dim=0)
    elif variant == "renormalized":
        norms = phi.norm(dim=1)
    else:
        return scores.cpu().numpy()
    scores = torch.where(norms > 0, scores / norms.clamp_min(1e-300), torch.zeros_like(scores))
    return scores.cpu().numpy()


def cosine_scores(gen: torch.Tensor | np.ndarray, train: torch.Tensor | np.ndarray) -> np.ndarray:
    """Cosine similarity (G, N) of flattened rows."""
    a = torch.as_tensor(np.asarray(gen) if not isinstance(gen, torch.Tensor) else gen)
    b = torch.as_tensor(np.asarray(train) if not isinstance(train, torch.Tensor) else train)
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    if a.shape[1] != b.shape[1]:
        raise DiffattrError(
            f"generated and training items differ in size ({a.shape[1]} vs {b.shape[1]})"
        )
    return (_unit_rows(a) @ _unit_rows(b).T).numpy()


# ----------------------------------------------------------------------------- players


def player_members(players: object, n_train: int) -> tuple[list[str], list[np.ndarray]]:
    """Names and member index arrays of ``players`` (a ``Players`` or a list of index
    arrays, named ``"0".."n-1"``); every index must lie in ``0..n_train-1``."""

    if isinstance(players, Players):
        names = list(players.names)
        members = [np.asarray(m, dtype=np.int64) for m in players.members]
        if players.n_samples != n_train:
            raise DiffattrError(
                f"the players cover {players.n_samples} samples but the target has "
                f"{n_train} training examples"
            )
    else:
        try:
            members = [np.asarray(m, dtype=np.int64).reshape(-1) for m in players]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise DiffattrError("players must be a Players or a list of index arrays") from None
        names = [str(i) for i in range(len(members))]
    if not members:
        raise DiffattrError("there are no players")
    for name, m in zip(names, members):
        if m.size == 0:
            raise DiffattrError(f"player {name!r} owns no data")
        if m.min() < 0 or m.max() >= n_train:
            raise DiffattrError(
                f"player {name!r} owns sample {int(m.max() if m.max() >= n_train else m.min())}, "
                f"outside 0..{n_train - 1}"
            )
    return names, members


def _reduce(x: np.ndarray, how: str, axis: int) -> np.ndarray:
    if how == "sum":
        return x.sum(axis=axis)
    if how == "mean":
        return x.mean(axis=axis)
    if how == "max":
        return x.max(axis=axis)
    raise DiffattrError(f"unknown aggregation {how!r}; choose one of: {', '.join(AGGREGATIONS)}")


def aggregate_local(
    local: np.ndarray,
    members: Sequence[np.ndarray],
    how: str,
    per_generated: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Player values and standard errors from local scores (G, N).

    Default: average over generated images, then ``how`` (sum / mean / max) over the
    player's training images. ``per_generated``: ``how`` over the player's images for each
    generated image, then the average over generated images (equal for sum and mean).
    The standard error is ``std(ddof=1) / sqrt(G)`` of the per-generated-image player
    scores when the value is their average (sum, mean, or max per generated image), NaN
    otherwise (and for G = 1).
    """
    local = np.asarray(local, dtype=np.float64)
    if local.ndim != 2:
        raise DiffattrError(f"local scores must be (generated, train), got shape {local.shape}")
    if not np.isfinite(local).all():
        raise DiffattrError("local scores are not finite")
    _reduce(np.zeros((1, 1)), how, 0)  # validates ``how``
    g = local.shape[0]
    if how == "max" and not per_generated:
        mean = local.mean(axis=0)
        values = np.array([mean[m].max() for m in members])
        return values, np.full(len(members), np.nan)
    per_gen = np.stack([_reduce(local[:, m], how, axis=1) for m in members], axis=1)  # (G, n)
    values = per_gen.mean(axis=0)
    if g > 1:
        stderr = per_gen.std(axis=0, ddof=1) / np.sqrt(g)
    else:
        stderr = np.full(len(members), np.nan)
    return values, stderr
