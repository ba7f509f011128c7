"""The sparse query-feature x key-feature x head table that step 2 of QK transcoder training
leaves behind: which pairs of features matter to which head, and with what mask value.

A pair's contribution to a score is  mask * f_Q[a](dest) * f_K[b](src) * <R_dest dec_Q[a,h], R_src dec_K[b,kv(h)]> / attn_scale
(R the rotation by position; the identity for absolute-position models).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PairTable:
    """Kept pairs as parallel 1-D tensors (COO), plus the dense shape (d_q, d_k, n_heads)."""

    q: Tensor  # int64 [nnz] query feature
    k: Tensor  # int64 [nnz] key feature
    head: Tensor  # int64 [nnz] query head
    value: Tensor  # float [nnz] mask value in (0, 1]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        n = self.q.numel()
        if not (self.k.numel() == self.head.numel() == self.value.numel() == n):
            raise ValueError("pair table columns differ in length")

    @property
    def nnz(self) -> int:
        return self.q.numel()

    @property
    def fraction_kept(self) -> float:
        d_q, d_k, h = self.shape
        return self.nnz / (d_q * d_k * h)

    @classmethod
    def from_dense(cls, mask: Tensor, threshold: float = 0.0) -> PairTable:
        """Entries of a [d_q, d_k, n_heads] mask above `threshold`."""
        kept = (mask > threshold).nonzero(as_tuple=True)
        return cls(
            q=kept[0], k=kept[1], head=kept[2], value=mask[kept].detach().float(),
            shape=tuple(mask.shape),  # type: ignore[arg-type]
        )  # fmt: skip

    @classmethod
    def full(cls, d_q: int, d_k: int, n_heads: int) -> PairTable:
        return cls.from_dense(torch.ones(d_q, d_k, n_heads))

    def to_dense(self) -> Tensor:
        dense = torch.zeros(self.shape, dtype=self.value.dtype, device=self.value.device)
        dense[self.q, self.k, self.head] = self.value
        return dense

    def to(self, device: torch.device | str) -> PairTable:
        return PairTable(
            self.q.to(device), self.k.to(device), self.head.to(device), self.value.to(device),
            self.shape,
        )  # fmt: skip

    def tensors(self) -> dict[str, Tensor]:
        """For safetensors: int32 indices are enough for any realistic width."""
        return {
            "pairs.q": self.q.to(torch.int32),
            "pairs.k": self.k.to(torch.int32),
            "pairs.head": self.head.to(torch.int32),
            "pairs.value": self.value.float(),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], shape: tuple[int, int, int]) -> PairTable:
        return cls(
            q=tensors["pairs.q"].long(), k=tensors["pairs.k"].long(),
            head=tensors["pairs.head"].long(), value=tensors["pairs.value"].float(), shape=shape,
        )  # fmt: skip
