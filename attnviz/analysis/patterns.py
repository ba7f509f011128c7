"""Attention patterns from queries and keys, and per-head statistics of patterns.

Pure functions: tensors in, tensors / DataFrames out.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor

from attnviz.models.attention import (  # noqa: F401  (re-exported: analysis reads them here too)
    attention_scores,
    causal_mask,
    expand_kv_heads,
    pattern_from_qk,
)


def row_entropy(pattern: Tensor) -> Tensor:
    """Entropy in nats of each destination row: [..., dest]."""
    p = pattern.float()
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def pattern_summary(pattern: Tensor, layer: int | None = None) -> pd.DataFrame:
    """One row per head: mean entropy (nats and as a fraction of the uniform row's), the share of
    attention on the first token, on the token itself, and on the previous token.

    The first destination is left out: it can only attend to itself."""
    p = pattern.float()
    if p.ndim == 3:
        p = p[None]
    _, n_heads, n_dest, _ = p.shape
    if n_dest < 2:
        raise ValueError("pattern statistics need at least two positions")
    rows = p[:, :, 1:, :]
    entropy = row_entropy(rows)  # [b, h, dest-1]
    max_entropy = torch.log(torch.arange(2, n_dest + 1, dtype=torch.float32, device=p.device))
    diag = torch.diagonal(p, dim1=-2, dim2=-1)[:, :, 1:]
    prev = torch.diagonal(p, offset=-1, dim1=-2, dim2=-1)
    frame = pd.DataFrame(
        {
            "head": range(n_heads),
            "entropy": entropy.mean((0, 2)).cpu().numpy(),
            "entropy_frac": (entropy / max_entropy).mean((0, 2)).cpu().numpy(),
            "first_token": rows[..., 0].mean((0, 2)).cpu().numpy(),
            "self": diag.mean((0, 2)).cpu().numpy(),
            "previous": prev.mean((0, 2)).cpu().numpy(),
        }
    )
    if layer is not None:
        frame.insert(0, "layer", layer)
    return frame


def default_attn_scale(d_head: int) -> float:
    return math.sqrt(d_head)
