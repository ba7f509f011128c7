"""The colour scales a pattern widget offers, computed in the kernel from the full-precision
patterns (a quantised wire array cannot show weights far below its largest one):

- "weights": the attention weights, 0 to 1.
- "off_first": each row's weights without the first token, rescaled to sum to 1 — what a head
  does besides parking attention on the first token (an attention sink). The first token's
  column is 0 on this scale.
- "log": log10 of the weights from 1e-4 (and below) to 1, for long prompts where every weight
  is small.

`sink_share` says per head how much attention goes to the first token, so a widget can say when a
head is (almost) only a sink.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALES = ("weights", "off_first", "log")
LOG_FLOOR = 1e-4


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    return scale


def rescale(rows: Tensor, start: int, end: int, scale: str) -> Tensor:
    """Destination rows of a pattern [heads, dest, n] (every source), as the columns
    [start, end) on `scale`: [heads, dest, end - start]."""
    check_scale(scale)
    cols = rows[..., start:end]
    if scale == "weights":
        return cols
    x = cols.float()
    if scale == "log":
        return x.clamp_min(LOG_FLOOR).log10()
    # Summing the other sources (not 1 - first) keeps tiny remainders exact in float16.
    rest = rows[..., 1:].float().sum(-1, keepdim=True)
    out = torch.where(rest > 0, x / rest.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    if start == 0:
        out[..., 0] = 0.0
    return out


def sink_share(pattern: Tensor) -> list[float]:
    """Per head, the mean weight on the first token over the destinations that have a choice
    (every one but the first): 1.0 for a pure attention sink."""
    if pattern.shape[-1] < 2:
        return [1.0] * pattern.shape[0]
    return [round(float(v), 6) for v in pattern[:, 1:, 0].float().mean(-1)]
