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


def repeated_random_tokens(
    n_tokens: int, vocab: int, bos: int | None, batch: int = 4, seed: int = 0, low: int = 1000
) -> Tensor:
    """[batch, 1 + 2 n] sequences [BOS] + r + r of random tokens r (ids from `low` up, away from
    the special tokens): a repeated sequence on which only induction predicts the second half."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(low, vocab, (batch, n_tokens), generator=g)
    first = torch.full((batch, 1), bos if bos is not None else int(r[0, 0]))
    return torch.cat([first, r, r], dim=1)


def induction_score(pattern: Tensor, tokens: Tensor) -> Tensor:
    """Per head, the mean attention a destination that repeats an earlier token pays to the token
    right after that earlier occurrence (the source an induction head looks up): [heads].

    pattern [heads, dest, src] (or [batch, heads, dest, src] with tokens [batch, n])."""
    p = pattern.float()
    ids = tokens.reshape(-1, tokens.shape[-1]).to(p.device)
    if p.ndim == 3:
        p = p[None]
    n = ids.shape[-1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=p.device).tril(-1)
    seen = (ids[:, :, None] == ids[:, None, :]) & earlier  # [b, dest, src]: same token, earlier
    target = torch.zeros_like(seen)
    target[:, :, 1:] = seen[:, :, :-1]  # ... and the token right after it
    rows = target.any(-1)  # [b, dest] destinations that repeat an earlier token
    per_row = (p * target[:, None]).sum(-1)  # [b, heads, dest]
    weight = rows[:, None].float()
    return (per_row * weight).sum((0, 2)) / weight.sum((0, 2)).clamp_min(1)


def head_scores(model, layers, tokens: Tensor | None = None, n_tokens: int = 50) -> pd.DataFrame:
    """One row per (layer, head) of `layers`: induction score and the share of attention on the
    previous token, both measured on repeated random sequences (see repeated_random_tokens)."""
    s = model.spec
    if tokens is None:
        tokens = repeated_random_tokens(n_tokens, s.d_vocab, s.bos_token_id)
    frames = []
    for layer in layers:
        pattern = model.attention(tokens, layer, ["pattern"]).pattern
        prev = torch.diagonal(pattern.float(), offset=-1, dim1=-2, dim2=-1).mean((0, 2))
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": range(s.n_heads),
                    "induction": induction_score(pattern, tokens).cpu().numpy(),
                    "previous": prev.cpu().numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
