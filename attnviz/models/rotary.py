"""Rotary position embeddings as a small value object, so analysis code can rotate any vector
(a reconstructed query, a dictionary's decoder row) by any position the way the model does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def rotate_pairs(x: Tensor, adjacent_pairs: bool) -> Tensor:
    """The 90-degree turn of each rotated pair: (x_a, x_b) -> (-x_b, x_a).

    Llama / GPT-NeoX pair dimension i with i + d/2 ("half" layout); GPT-J pairs 2i with 2i+1.
    """
    if adjacent_pairs:
        even, odd = x[..., ::2], x[..., 1::2]
        return torch.stack((-odd, even), dim=-1).flatten(-2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


@dataclass
class Rotary:
    """cos / sin tables for positions 0..n_pos-1, shape [n_pos, rotary_dim]."""

    cos: Tensor
    sin: Tensor
    adjacent_pairs: bool = False

    @property
    def rotary_dim(self) -> int:
        return self.cos.shape[-1]

    @property
    def n_pos(self) -> int:
        return self.cos.shape[0]

    def apply(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotate x of shape [..., pos, heads, d_head] by its positions (default 0..pos-1).

        Only the first rotary_dim dimensions turn (partial rotary models leave the rest).
        """
        if positions is None:
            n = x.shape[-3]
            if n > self.n_pos:
                raise ValueError(f"rotary tables cover {self.n_pos} positions, input has {n}")
            cos, sin = self.cos[:n], self.sin[:n]
        else:
            cos, sin = self.cos[positions], self.sin[positions]
        cos = cos.to(x.dtype).unsqueeze(-2)  # broadcast over heads
        sin = sin.to(x.dtype).unsqueeze(-2)
        d = self.rotary_dim
        x_rot, x_pass = x[..., :d], x[..., d:]
        turned = x_rot * cos + rotate_pairs(x_rot, self.adjacent_pairs) * sin
        return torch.cat((turned, x_pass), dim=-1) if x_pass.shape[-1] else turned

    def to(self, device: torch.device | str) -> Rotary:
        """The same tables on `device` (self when they are there already)."""
        device = torch.device(device)
        if self.cos.device == device:
            return self
        return Rotary(self.cos.to(device), self.sin.to(device), self.adjacent_pairs)
