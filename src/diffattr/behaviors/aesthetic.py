"""The LAION aesthetic predictor: the paper's ArtBench property (90th-percentile score).

The predictor (LAION-AI/aesthetic-predictor, ``sa_0_4_vit_l_14_linear``) is one linear
layer 768 -> 1 on the **L2-normalised** CLIP ViT-L/14 image embedding (OpenAI weights; the
``image_embeds`` of transformers' ``CLIPVisionModelWithProjection``, which the ``clip``
feature space gives). For an embedding ``e`` the score is::

    score = w . (e / ||e||) + b

The paper's ArtBench behavior is the 90th percentile of the scores of the generated
images; its code also logs the mean, the median and the 75th percentile. Each is a behavior
here: ``aesthetic-mean``, ``aesthetic-p50``, ``aesthetic-p75``, ``aesthetic-p90``
(percentiles with numpy's default linear interpolation).

The head file is local: ``.safetensors``, or a torch state dict (``.pth``) read with
``torch.load(weights_only=True)``. It must hold exactly one weight (1, d) and one bias (1,)
(the LAION file's keys are ``weight`` and ``bias``; prefixed keys are accepted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffattr.errors import DiffattrError

STATISTICS = ("mean", "p50", "p75", "p90")


def load_head(path: str | Path) -> tuple[np.ndarray, float]:
    """(w (d,), b) of a linear aesthetic head file; one-line errors for bad files."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DiffattrError(
            f"aesthetic head not found: {p} (give the LAION sa_0_4_vit_l_14_linear weights as "
            ".safetensors or .pth)"
        )
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(p)
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure is a bad file
        raise DiffattrError(f"cannot read aesthetic head {p}: {e}") from None
    if not isinstance(state, dict):
        raise DiffattrError(f"{p} is not a state dict of a linear layer")
    weights = [v for k, v in state.items() if k.endswith("weight") and torch.is_tensor(v)]
    biases = [v for k, v in state.items() if k.endswith("bias") and torch.is_tensor(v)]
    if len(weights) != 1 or len(biases) != 1 or len(state) != 2:
        raise DiffattrError(
            f"{p} is not a linear aesthetic head (expected one weight (1, d) and one bias (1,), "
            f"got keys {sorted(state)[:6]})"
        )
    w, b = weights[0], biases[0]
    if w.ndim != 2 or w.shape[0] != 1 or b.numel() != 1:
        raise DiffattrError(
            f"{p} is not a linear 'd -> 1' head: weight {tuple(w.shape)}, bias {tuple(b.shape)}"
        )
    return w[0].double().numpy(), float(b.reshape(-1)[0])


def aesthetic_scores(embeddings: np.ndarray, weight: np.ndarray, bias: float) -> np.ndarray:
    """Scores w . (e / ||e||) + b of (N, d) CLIP image embeddings."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != weight.shape[0]:
        raise DiffattrError(
            f"the aesthetic head takes {weight.shape[0]}-d CLIP embeddings (ViT-L/14: 768), "
            f"got {e.shape[-1] if e.ndim else e.shape}-d"
        )
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e @ weight + bias


def statistic(scores: np.ndarray, stat: str) -> float:
    """``mean`` or the ``pXX`` percentile of the scores."""
    if stat == "mean":
        return float(np.mean(scores))
    if stat in STATISTICS:
        return float(np.percentile(scores, int(stat[1:])))
    raise DiffattrError(f"unknown statistic {stat!r}; choose one of: {', '.join(STATISTICS)}")
