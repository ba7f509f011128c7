"""The attention computation itself: causal mask, grouped-query head sharing, scaled scores and
the pattern. It lives with the models because every adapter checks its patterns against it."""

from __future__ import annotations

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
