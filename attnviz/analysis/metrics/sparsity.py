"""Sparsity: active features per token, each feature's firing density, and its histogram."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

DECADE_EDGES = [-8, -7, -6, -5, -4, -3, -2, -1, 0]
"""log10 density edges of `density_histogram` (the trainer's histogram since it was written)."""


class FiringCounts:
    """Streaming `l0` and `feature_density` over batches of activations ``[*tokens, d_hidden]``:
    per-feature float64 counts of the tokens each feature is active on (CPU)."""

    def __init__(self) -> None:
        self.counts: Tensor | None = None
        self.n_tokens = 0

    def add(self, f: Tensor) -> FiringCounts:
        active = (f.detach() != 0).reshape(-1, f.shape[-1])
        batch_counts = active.sum(0).double().cpu()
        self.counts = batch_counts if self.counts is None else self.counts + batch_counts
        self.n_tokens += active.shape[0]
        return self

    def _checked(self, what: str) -> Tensor:
        if self.counts is None or self.n_tokens == 0:
            raise ValueError(f"{what} needs activations [..., d_hidden] for at least one token")
        return self.counts

    def density(self) -> Tensor:
        """density[i] = #{t : f[t, i] != 0} / T: ``Float64[Tensor, "d_hidden"]``."""
        return self._checked("feature_density") / self.n_tokens

    def l0(self) -> float:
        """(1/T) Σ_t #{i : f[t, i] != 0}, the mean number of active features per token."""
        return float(self._checked("l0").sum()) / self.n_tokens


def l0(f: Tensor) -> float:
    """Mean number of active features per token, (1/T) Σ_t #{i : f[t, i] != 0}, of activations
    ``Float[Tensor, "*tokens d_hidden"]``."""
    if f.ndim == 0:
        raise ValueError("l0 needs activations [..., d_hidden] for at least one token")
    return FiringCounts().add(f).l0()


def feature_density(f_batches: Tensor | Iterable[Tensor]) -> Tensor:
    """Each feature's firing fraction, density[i] = #{t : f[t, i] != 0} / T over all tokens:
    ``Float64[Tensor, "d_hidden"]`` (CPU), from one tensor or an iterable of tensors of
    activations ``[*tokens, d_hidden]``."""
    counter = FiringCounts()
    for f in [f_batches] if isinstance(f_batches, Tensor) else f_batches:
        counter.add(f)
    return counter.density()


DEAD_DENSITY = 1e-5
"""Below this firing density (1 in 100,000 tokens) a feature counts as dead: telling it from a
rare one takes 100,000+ tokens."""
RARE_DENSITY = 1e-4
"""Below this (and at or above DEAD_DENSITY) a feature is alive but rare."""


def liveness(density: Tensor) -> dict[str, float]:
    """Fractions of features that are dead (density < 1e-5), rare (1e-5 <= density < 1e-4) and
    live at 1e-5 or more (1 - dead)."""
    d = density.detach().double().cpu().reshape(-1)
    dead = float((d < DEAD_DENSITY).double().mean())
    rare = float(((d >= DEAD_DENSITY) & (d < RARE_DENSITY)).double().mean())
    return {"dead": dead, "rare": rare, "live": 1.0 - dead}


def live_features(density: Tensor) -> int:
    """How many features fire at least once: #{i : density[i] > 0}."""
    return int((density > 0).sum())


def _log10_counts(density: Tensor, edges: Sequence[float], dtype: torch.dtype) -> list[int]:
    """Live features counted per log10 bin [e_i, e_i+1) (the last bin closed); live features
    outside the edges fall into the first / last bin."""
    d = density.detach().reshape(-1).cpu()
    log_d = d[d > 0].to(dtype).log10().clamp(float(edges[0]), float(edges[-1]))
    bins = torch.tensor([float(e) for e in edges], dtype=dtype)
    return [int(c) for c in torch.histogram(log_d, bins=bins).hist]


def density_histogram(density: Tensor, edges: Sequence[float] = DECADE_EDGES) -> dict[str, Any]:
    """Live features per bin of log10(density), dead ones apart:

        {"log10_edges": edges, "counts": [#{i : e_j <= log10 density[i] < e_j+1}, ...],
         "never_fired": #{i : density[i] == 0}}

    `density` ``Float[Tensor, "d_hidden"]``; by default one bin per decade from 1e-8 to 1, rarer
    live features counted in the first bin. Computed in float32, as training always did, so the
    histograms of old and new runs agree."""
    return {
        "log10_edges": list(edges),
        "counts": _log10_counts(density, edges, torch.float32),
        "never_fired": int((density == 0).sum()),
    }


def density_table(density: Tensor, bins: int | Sequence[float] = 20) -> pd.DataFrame:
    """`density_histogram` as a DataFrame: a first row for dead features (bin "dead", NaN
    edges), then one per log10 bin. Columns: bin, log10_lo, log10_hi, count, dead.

    `bins` is a number of equal bins from floor(log10 of the rarest live feature) (at most -1)
    to 0, or the log10 bin edges themselves (give fixed edges to compare dictionaries). Live
    features outside given edges are counted in the first / last bin. Float64."""
    d = density.detach().double().cpu().reshape(-1)
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError("bins must be at least 1")
        live = d[d > 0]
        lo = math.floor(float(live.log10().min())) if live.numel() else -1.0
        edges = np.linspace(min(lo, -1.0), 0.0, bins + 1)
    else:
        edges = np.asarray(list(bins), dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be at least two strictly increasing numbers")
    counts = _log10_counts(d, edges.tolist(), torch.float64)
    rows: list[dict[str, Any]] = [
        {"bin": "dead", "log10_lo": math.nan, "log10_hi": math.nan,
         "count": int((d == 0).sum()), "dead": True}
    ]  # fmt: skip
    for lo_edge, hi_edge, count in zip(edges[:-1], edges[1:], counts, strict=True):
        rows.append(
            {"bin": f"[{lo_edge:.2f}, {hi_edge:.2f})", "log10_lo": float(lo_edge),
             "log10_hi": float(hi_edge), "count": count, "dead": False}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["bin", "log10_lo", "log10_hi", "count", "dead"])
