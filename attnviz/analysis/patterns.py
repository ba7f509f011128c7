"""Attention patterns from queries and keys, and per-head statistics of patterns.

Pure functions: tensors in, tensors / DataFrames out.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor


def causal_mask(n_dest: int, n_src: int | None = None, device=None) -> Tensor:
    """Bool [dest, src], True where a destination may attend to a source (src <= dest).

    With n_src > n_dest the destinations are the last n_dest positions (as with a cache)."""
    n_src = n_dest if n_src is None else n_src
    dest = torch.arange(n_src - n_dest, n_src, device=device)[:, None]
    src = torch.arange(n_src, device=device)[None, :]
    return src <= dest


def expand_kv_heads(k: Tensor, n_heads: int) -> Tensor:
    """[..., pos, n_kv_heads, d] -> [..., pos, n_heads, d]: query head h reads kv head
    h // (n_heads / n_kv_heads), as grouped-query attention does."""
    n_kv = k.shape[-2]
    if n_kv == n_heads:
        return k
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv} key/value heads evenly")
    return k.repeat_interleave(n_heads // n_kv, dim=-2)


def attention_scores(q: Tensor, k: Tensor, attn_scale: float, masked: bool = True) -> Tensor:
    """Scaled scores [batch, heads, dest, src] from rotated q [b, dest, h, d] and k [b, src, h_kv, d].

    Masked entries are -inf (a finite stand-in would leak probability into the future)."""
    k = expand_kv_heads(k, q.shape[-2])
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / attn_scale
    if masked:
        allowed = causal_mask(q.shape[-3], k.shape[-3], device=q.device)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores


def pattern_from_qk(q: Tensor, k: Tensor, attn_scale: float) -> Tensor:
    """Softmax over sources of the causally masked scores: [batch, heads, dest, src]."""
    scores = attention_scores(q.float(), k.float(), attn_scale)
    return scores.softmax(dim=-1).to(q.dtype)


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
