"""Helpers the unit tests share (import them from here, not from another test module)."""

from __future__ import annotations

import torch

from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKConfig, QKDictionary

__all__ = ["TEXT", "make_qk"]

TEXT = "The cat sat on the mat because it was tired of walking"
"""A short prompt for the tiny models."""


def make_qk(spec, layer: int = 1, pairs: bool = True, seed: int = 0) -> QKDictionary:
    """A random QK dictionary for `spec` whose features mostly fire (so there are pairs to split),
    with a random pair table unless `pairs` is False."""
    qk = QKDictionary(QKConfig.for_model(spec, layer, d_hidden_q=32, d_hidden_k=24), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for coder in (qk.query, qk.key):
            coder.b_enc.add_(0.3)  # most features fire, so there are pairs to split
            coder.b_out.copy_(0.3 * torch.randn(coder.b_out.shape, generator=g))
    if pairs:
        keep = torch.rand(32, 24, spec.n_heads, generator=g) < 0.3
        qk.pairs = PairTable.from_dense(keep * (0.2 + 0.8 * torch.rand(keep.shape, generator=g)))
    return qk
