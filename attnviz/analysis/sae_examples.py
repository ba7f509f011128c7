"""What an SAE feature responds to: its max-activating contexts and its firing density over a fixed
set of held-out contexts, computed once so that feature after feature comes back without running
the model again (the SAE counterpart of feature_examples.FeatureActivations).

Position 0 (BOS) is left out, as in training and in sae_report: its activations are outliers that
would top every feature's list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.feature_examples import _example_frame
from attnviz.analysis.metrics import FiringCounts
from attnviz.analysis.sae_check import site_activations
from attnviz.data.contexts import token_batch
from attnviz.dictionaries.sae import SAE

if TYPE_CHECKING:
    from attnviz.models.adapter import ModelAdapter

__all__ = ["SAEFeatureActivations"]


class SAEFeatureActivations:
    """An SAE's activations over `tokens` [contexts, n], kept sparse: only the non-zero entries
    (token, feature, value), about contexts x n x L0 of them (128k for 32 x 128 tokens at L0 32),
    so a 16k-feature SAE costs no more than a 512-feature one."""

    def __init__(
        self, adapter: ModelAdapter, sae: SAE, tokens: Tensor, batch_size: int = 8
    ) -> None:
        tokens = token_batch(tokens)
        if tokens.numel() == 0 or tokens.shape[1] < 2:
            raise ValueError("SAEFeatureActivations needs contexts of at least two tokens")
        self.adapter, self.sae, self.tokens = adapter, sae, tokens
        self.layer = sae.cfg.layer
        counts = FiringCounts()
        where, which, value = [], [], []
        n = tokens.shape[1]
        w = sae.W_enc
        for start in range(0, tokens.shape[0], batch_size):
            x = site_activations(adapter, sae, tokens[start : start + batch_size])
            with torch.no_grad():
                f = sae.encode(x.to(device=w.device, dtype=w.dtype)).float().cpu()
            f[:, 0] = 0  # BOS
            counts.add(f[:, 1:])
            flat = f.reshape(-1, f.shape[-1])
            tok, feat = flat.nonzero(as_tuple=True)
            where.append(tok + start * n)
            which.append(feat)
            value.append(flat[tok, feat])
        self._density = counts.density()
        order = torch.cat(which).argsort(stable=True)  # grouped by feature for cheap look-ups
        self._feature = torch.cat(which)[order]
        self._token = torch.cat(where)[order]
        self._value = torch.cat(value)[order].half()
        self._strings: dict[int, list[str]] = {}

    @property
    def n_tokens(self) -> int:
        """Tokens the densities are over (BOS left out)."""
        return int(self.tokens.shape[0] * (self.tokens.shape[1] - 1))

    def density(self) -> Tensor:
        """Each feature's firing frequency over the held-out tokens [d_sae] (float64)."""
        return self._density

    def column(self, feature: int) -> Tensor:
        """One feature's activation at every position [contexts, n] (0 at BOS)."""
        d_sae = self.sae.cfg.d_sae
        if not 0 <= feature < d_sae:
            raise ValueError(
                f"feature {feature} is out of range: this SAE has features 0-{d_sae - 1}"
            )
        lo = int(torch.searchsorted(self._feature, feature))
        hi = int(torch.searchsorted(self._feature, feature, right=True))
        out = torch.zeros(self.tokens.numel())
        out[self._token[lo:hi]] = self._value[lo:hi].float()
        return out.view_as(self.tokens.float())

    def examples(self, feature: int, k: int = 10, window: int = 8) -> pd.DataFrame:
        """The k positions where `feature` is most active, strongest first (only where it fires):
        the columns of feature_examples.max_activating_examples, side "sae"."""
        if k < 1 or window < 0:
            raise ValueError("k must be >= 1 and window >= 0")
        column = self.column(feature)
        n = column.shape[1]
        top = column.reshape(-1).topk(min(k, column.numel()))
        ctx, pos = top.indices // n, top.indices % n
        contexts_of = {}
        for c in ctx[top.values > 0].unique().tolist():
            if c not in self._strings:
                self._strings[c] = self.adapter.to_str_tokens(self.tokens[c])
            contexts_of[c] = (self._strings[c], column[c].tolist())
        return _example_frame(top.values, ctx, pos, contexts_of, window, feature, "sae", self.layer)
