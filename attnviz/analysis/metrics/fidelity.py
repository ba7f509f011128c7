"""Pattern fidelity (KL per destination row) and reconstruction of q / k (fraction of variance
unexplained, relative to the mean)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor

KL_EPS = 1e-30
"""Reconstructed probabilities are clamped to at least this before their log is taken."""


# ---- pattern fidelity ------------------------------------------------------------------------


def kl_rows(true: Tensor, recon: Tensor, *, log: bool = False, eps: float = KL_EPS) -> Tensor:
    """KL(true || recon) in nats of every destination row:

        KL_r = Σ_src p[r, src] (log p[r, src] - log q[r, src]),  summed where p > 0 only.

    Args: true, recon ``Float[Tensor, "*batch dest src"]``, probabilities, or with `log`
    log-probabilities (-inf on masked sources). Returns ``Float[Tensor, "*batch dest"]``.

    Entries where the true probability is 0 (masked future sources; -inf with `log`) add exactly
    0, whatever the reconstruction holds there (never 0·log 0 or -inf - -inf). Computed in
    float32 at least. Probabilities: the reconstruction is clamped to >= `eps` before the log,
    so one that underflowed to 0 gives a large finite term, and tiny negative rounding is
    clamped to 0 (a reconstruction equal to the truth gives exactly 0). Log-probabilities: no
    clamping, so the value stays differentiable for training (a -inf reconstruction where the
    truth is finite gives inf)."""
    if true.shape != recon.shape:
        raise ValueError(
            f"patterns differ in shape: true {tuple(true.shape)}, "
            f"reconstructed {tuple(recon.shape)}"
        )
    dtype = torch.promote_types(true.dtype, torch.float32)
    t = true.to(dtype)
    r = recon.to(device=t.device, dtype=dtype)
    zero = torch.zeros((), dtype=dtype, device=t.device)
    if log:
        terms = torch.where(torch.isfinite(t), t.exp() * (t - r), zero)
        return terms.sum(-1)
    tiny = torch.finfo(dtype).tiny
    log_ratio = torch.log(t.clamp_min(tiny)) - torch.log(r.clamp_min(eps))
    return torch.where(t > 0, t * log_ratio, zero).sum(-1).clamp_min(0.0)


def mean_row_kl(true: Tensor, recon: Tensor, *, log: bool = False) -> Tensor:
    """Mean of `kl_rows` over destination rows 1.. (row 0 attends only to itself, so its KL is
    always 0 and would dilute the mean): ``Float[Tensor, "*batch"]`` from patterns
    ``[*batch, dest, src]``, e.g. one value per head for ``[heads, dest, src]``. Zeros when there
    is only one row. The training loss is this averaged over its batch dimensions."""
    kl = kl_rows(true, recon, log=log)
    if kl.shape[-1] < 2:
        return torch.zeros(kl.shape[:-1], dtype=kl.dtype, device=kl.device)
    return kl[..., 1:].mean(-1)


def kl_summary(kl: Tensor, layer: int | None = None) -> pd.DataFrame:
    """One row per head of row KLs `kl` ``[batch, heads, dest]`` (or ``[heads, rows]``): mean,
    p90, p99 and max, in nats, over every destination row of every context (the first
    destination, whose KL is always 0, is included)."""
    if kl.ndim == 2:
        per_head = kl
    elif kl.ndim == 3:
        per_head = kl.transpose(0, 1).reshape(kl.shape[1], -1)
    else:
        raise ValueError(f"kl must be [batch, heads, dest] or [heads, rows], got {tuple(kl.shape)}")
    values = per_head.detach().double().cpu().numpy()
    if values.shape[1] == 0:
        raise ValueError("kl_summary needs at least one destination row")
    p90, p99 = np.quantile(values, [0.9, 0.99], axis=1)
    frame = pd.DataFrame(
        {
            "head": np.arange(values.shape[0]),
            "mean": values.mean(axis=1),
            "p90": p90,
            "p99": p99,
            "max": values.max(axis=1),
        }
    )
    if layer is not None:
        frame.insert(0, "layer", layer)
    return frame


# ---- reconstruction of q and k ---------------------------------------------------------------


class VarianceExplained:
    """Streaming `fvu` / `variance_explained` over batches of tokens.

    Keeps float64 per-coordinate token counts, means and sums of squared deviation, merged batch
    by batch (Chan, Golub and LeVeque 1979), so the deviation is always from the mean of all
    tokens so far, without the cancellation of Σx² - (Σx)²/n."""

    def __init__(self, vector_ndim: int = 2) -> None:
        self.vector_ndim = vector_ndim
        self.sq_err = 0.0
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None  # Σ (x - mean)² per coordinate

    def _flat(self, true: Tensor, recon: Tensor) -> tuple[Tensor, Tensor]:
        if true.shape != recon.shape:
            raise ValueError(
                f"shapes differ: true {tuple(true.shape)}, reconstructed {tuple(recon.shape)}"
            )
        if true.ndim <= self.vector_ndim:
            raise ValueError(
                f"expected [tokens..., vector] with a {self.vector_ndim}-d vector per token, got "
                f"{tuple(true.shape)} (pass vector_ndim=1 for flattened [tokens, d] inputs)"
            )
        t = true.detach().double().reshape(-1, *true.shape[true.ndim - self.vector_ndim :])
        return t, recon.detach().to(t).reshape(t.shape)

    def add(self, true: Tensor, recon: Tensor) -> VarianceExplained:
        t, r = self._flat(true, recon)
        self.sq_err += float((t - r).pow(2).sum())
        n_b = t.shape[0]
        mean_b = t.mean(0).cpu()
        m2_b = (t - t.mean(0)).pow(2).sum(0).cpu()
        if self.mean is None or self.m2 is None:
            self.mean, self.m2 = mean_b, m2_b
        else:
            n = self.n + n_b
            delta = mean_b - self.mean
            self.m2 = self.m2 + m2_b + delta.pow(2) * (self.n * n_b / n)
            self.mean = self.mean + delta * (n_b / n)
        self.n += n_b
        return self

    def fvu(self) -> float:
        if self.m2 is None or self.n == 0:
            raise ValueError("no tokens were added")
        var = float(self.m2.sum())
        return self.sq_err / var if var > 0 else math.nan

    def value(self) -> float:
        """Variance explained, 1 - fvu."""
        return 1.0 - self.fvu()


def fvu(true: Tensor, recon: Tensor, *, vector_ndim: int = 2) -> float:
    """Fraction of variance unexplained, relative to the MEAN (not to zero):

        FVU = Σ_t ||x_t - x̂_t||² / Σ_t ||x_t - x̄||²,   x̄ = the mean over tokens, per coordinate.

    true, recon ``Float[Tensor, "*tokens *vector"]``; the trailing `vector_ndim` dimensions make
    one token's vector (2 for q / k as ``[..., heads, d_head]``; 1 for ``[tokens, d]``). 0 for a
    perfect reconstruction, 1 for predicting the mean; NaN when `true` does not vary. (Relative to
    zero, Σ||x - x̂||² / Σ||x||², a reconstruction that only gets the mean right would look good.)"""
    return VarianceExplained(vector_ndim).add(true, recon).fvu()


def variance_explained(true: Tensor, recon: Tensor, *, vector_ndim: int = 2) -> float:
    """1 - `fvu` (relative to the mean): 1 for a perfect reconstruction, 0 for the mean."""
    return 1.0 - fvu(true, recon, vector_ndim=vector_ndim)
