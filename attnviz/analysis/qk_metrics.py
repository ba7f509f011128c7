"""How good a QK dictionary is: the numbers every report, results table and widget reads.

Pure functions (tensors in, tensors / DataFrames out); `qk_report.evaluate_qk` runs a model and a
dictionary over a few batches of contexts and gathers them into a `QKReport`:

- pattern fidelity: KL(true || reconstructed) of each destination row (`kl_rows`, `kl_summary`);
  the tail (p99, max) matters as much as the mean;
- downstream loss: the next-token loss with a pattern patched into every head of the layer
  (`patched_losses`), compared with ablations (`uniform_causal_pattern`, `mean_pattern`) through
  `ce_recovered`;
- sparsity: `l0`, `feature_density`, `live_features`, `density_histogram`;
- reconstruction of q and k themselves: `variance_explained`;
- what a feature responds to: `feature_examples.max_activating_examples`.

Conventions: patterns are [batch, heads, dest, src] with rows summing to 1 over sources and exact
zeros above the diagonal (future sources). A feature is *active* on a token when its activation is
non-zero. Losses are in nats.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.patterns import causal_mask
from attnviz.dictionaries.pair_table import PairTable
from attnviz.models.interventions import ReplacePattern
from attnviz.models.rotary import Rotary

if TYPE_CHECKING:
    from attnviz.dictionaries.qk import QKDictionary
    from attnviz.models.adapter import ModelAdapter

# (qk, f_q [b n d_q], f_k [b n d_k], pairs, rotary) -> pattern [b heads n n]: the masked
# feature-pair-map reconstruction (attnviz.analysis.qk_pairs.pattern_from_features).
MaskedPatternFn = Callable[
    ["QKDictionary", Tensor, Tensor, "PairTable | None", "Rotary | None"], Tensor
]

KL_EPS = 1e-30
"""Reconstructed probabilities are clamped to at least this before their log is taken."""

CE_RECOVERED_MIN_GAP = 1e-6
"""Below this |L_ablated - L_clean| (nats), ce_recovered is undefined and reported as NaN."""


# ---- pattern fidelity ------------------------------------------------------------------------


def kl_rows(true_pattern: Tensor, recon_pattern: Tensor, eps: float = KL_EPS) -> Tensor:
    """KL(true || recon) in nats of every destination row: [..., heads, dest] from [..., dest, src].

    Entries where the true probability is 0 (masked future sources) contribute exactly 0, whatever
    the reconstruction holds there. The reconstruction is clamped to >= `eps` before the log, so a
    reconstructed probability that underflowed to 0 gives a large but finite term (a lower bound on
    the true divergence). Computed in float32 at least; tiny negative rounding is clamped to 0, so a
    reconstruction equal to the truth gives exactly 0."""
    if true_pattern.shape != recon_pattern.shape:
        raise ValueError(
            f"patterns differ in shape: true {tuple(true_pattern.shape)}, "
            f"reconstructed {tuple(recon_pattern.shape)}"
        )
    dtype = torch.promote_types(true_pattern.dtype, torch.float32)
    p = true_pattern.to(dtype)
    q = recon_pattern.to(device=p.device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    log_ratio = torch.log(p.clamp_min(tiny)) - torch.log(q.clamp_min(eps))
    terms = torch.where(p > 0, p * log_ratio, torch.zeros((), dtype=dtype, device=p.device))
    return terms.sum(-1).clamp_min(0.0)


def kl_summary(kl: Tensor, layer: int | None = None) -> pd.DataFrame:
    """One row per head of the row KLs `kl` [batch, heads, dest] (or [heads, rows]): mean, p90,
    p99 and max, in nats, over every destination row of every context (the first destination,
    which can only attend to itself, is included: its KL is always 0)."""
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


# ---- ablation patterns -----------------------------------------------------------------------


def uniform_causal_pattern(
    batch: int,
    heads: int,
    n: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """[batch, heads, n, n]: each destination attends equally to itself and every earlier source.

    Returned as an expanded view of one [n, n] table (do not write into it)."""
    allowed = causal_mask(n, device=device).to(dtype)
    table = allowed / allowed.sum(-1, keepdim=True)
    return table.expand(batch, heads, n, n)


class PatternMean:
    """A running mean of patterns [batch, heads, n, n] over contexts, held as one float64 sum
    [heads, n, n] and a count (memory does not grow with the corpus)."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add(self, pattern: Tensor) -> None:
        if pattern.ndim == 3:
            pattern = pattern[None]
        if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
            raise ValueError(f"patterns must be [batch, heads, n, n], got {tuple(pattern.shape)}")
        batch_sum = pattern.detach().double().sum(0)
        if self.total is None:
            self.total = batch_sum
        elif self.total.shape != batch_sum.shape:
            raise ValueError(
                f"pattern of shape {tuple(pattern.shape[1:])} cannot join a mean over "
                f"{tuple(self.total.shape)}: average contexts of one length together"
            )
        else:
            self.total += batch_sum.to(self.total.device)
        self.count += pattern.shape[0]

    def mean(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """[heads, n, n]; every row still sums to 1."""
        if self.total is None or self.count == 0:
            raise ValueError("no patterns were added")
        return (self.total / self.count).to(dtype)


def mean_pattern(patterns: Tensor | Iterable[Tensor]) -> Tensor:
    """Each head's pattern averaged over contexts at each (dest, src): [heads, n, n].

    `patterns` is one [contexts, heads, n, n] tensor or an iterable of such batches (all of one
    length n); the average of normalised rows is normalised, so rows still sum to 1."""
    acc = PatternMean()
    for batch in [patterns] if isinstance(patterns, Tensor) else patterns:
        acc.add(batch)
    return acc.mean()


# ---- downstream loss -------------------------------------------------------------------------


def _batch_pattern(pattern: Tensor, batch: int, heads: int, n: int) -> Tensor:
    """A pattern of [heads, n, n], [1, heads, n, n] or [batch, heads, n, n] as the latter."""
    if pattern.ndim == 3:
        pattern = pattern[None]
    want = (heads, n, n)
    if pattern.ndim != 4 or tuple(pattern.shape[1:]) != want or pattern.shape[0] not in (1, batch):
        raise ValueError(
            f"pattern has shape {tuple(pattern.shape)}; expected [{batch}, {heads}, {n}, {n}] "
            f"or [{heads}, {n}, {n}]"
        )
    return pattern.expand(batch, *want)


def patched_losses(
    adapter: ModelAdapter, tokens: Tensor, layer: int, patterns: Mapping[str, Tensor]
) -> dict[str, Any]:
    """The mean next-token loss with each candidate pattern patched into ALL heads of `layer`.

    `patterns` maps a name to a pattern [batch, heads, n, n] (or [heads, n, n], used for every
    context). Returns
    ``{"n_predictions": batch * (n - 1), "ce": {"clean": L, name: L, ...},
    "logit_kl": {name: KL, ...}}`` where L is the mean cross-entropy in nats and KL is
    KL(clean || patched) of the next-token distributions, averaged over the same predicted
    positions (all but the last)."""
    if "clean" in patterns:
        raise ValueError("'clean' names the unpatched run: give the pattern another name")
    tokens = adapter.check_tokens(tokens)
    batch, n = tokens.shape
    if n < 2:
        raise ValueError("the loss needs contexts of at least two tokens")
    heads = adapter.spec.n_heads
    targets = tokens[:, 1:, None]

    clean_logprobs = adapter.run(tokens)[:, :-1].float().log_softmax(-1)
    clean_probs = clean_logprobs.exp()
    ce: dict[str, float] = {"clean": float(-clean_logprobs.gather(-1, targets).mean())}
    logit_kl: dict[str, float] = {}
    for name, pattern in patterns.items():
        full = _batch_pattern(pattern, batch, heads, n)
        patch = ReplacePattern(layer, list(range(heads)), full)
        logprobs = adapter.run(tokens, [patch])[:, :-1].float().log_softmax(-1)
        ce[name] = float(-logprobs.gather(-1, targets).mean())
        logit_kl[name] = float((clean_probs * (clean_logprobs - logprobs)).sum(-1).mean())
        del logprobs
    return {"n_predictions": batch * (n - 1), "ce": ce, "logit_kl": logit_kl}


def ce_recovered(clean: float, recon: float, ablated: float) -> float:
    """(L_ablated - L_recon) / (L_ablated - L_clean): 1 when the reconstruction loses nothing,
    0 when it is as bad as the ablation (negative when worse, above 1 when it beats the model).

    Undefined when the ablation does no damage: the ratio divides by ~0 and is unstable for small
    gaps. Returns NaN (with a warning) when |L_ablated - L_clean| < 1e-6."""
    gap = ablated - clean
    if not math.isfinite(gap) or abs(gap) < CE_RECOVERED_MIN_GAP:
        warnings.warn(
            f"ce_recovered is undefined: the ablation changes the loss by {gap:.3g} nats "
            f"(clean {clean:.6g}, ablated {ablated:.6g}); reporting NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    return (ablated - recon) / gap


# ---- sparsity --------------------------------------------------------------------------------


def _as_batches(x: Tensor | Iterable[Tensor]) -> Iterable[Tensor]:
    return [x] if isinstance(x, Tensor) else x


def l0(f: Tensor) -> float:
    """Mean number of active (non-zero) features per token of activations f [..., d_hidden]."""
    if f.ndim == 0 or f[..., 0].numel() == 0:
        raise ValueError("l0 needs activations [..., d_hidden] for at least one token")
    return float((f != 0).sum(-1).double().mean())


def feature_density(f_batches: Tensor | Iterable[Tensor]) -> Tensor:
    """The fraction of tokens each feature is active on: float64 [d_hidden], from one tensor or an
    iterable of tensors of activations [..., d_hidden]."""
    counts: Tensor | None = None
    n_tokens = 0
    for f in _as_batches(f_batches):
        active = (f.detach() != 0).reshape(-1, f.shape[-1])
        batch_counts = active.sum(0).double().cpu()
        counts = batch_counts if counts is None else counts + batch_counts
        n_tokens += active.shape[0]
    if counts is None or n_tokens == 0:
        raise ValueError("feature_density needs activations for at least one token")
    return counts / n_tokens


def live_features(density: Tensor) -> int:
    """How many features fire at least once (density > 0)."""
    return int((density > 0).sum())


def density_histogram(density: Tensor, bins: int | Sequence[float] = 20) -> pd.DataFrame:
    """A histogram of log10(density) of the live features, with dead features (density 0) counted
    in a separate first row (bin "dead", NaN edges).

    `bins` is a number of equal bins from floor(log10 of the rarest live feature) to 0, or the
    log10 bin edges themselves (give fixed edges to compare dictionaries). Live features outside
    given edges are counted in the first / last bin. Columns: bin, log10_lo, log10_hi, count,
    dead."""
    d = density.detach().double().cpu().reshape(-1)
    live = d[d > 0]
    log_d = torch.log10(live).numpy()
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError("bins must be at least 1")
        lo = math.floor(float(log_d.min())) if log_d.size else -1.0
        lo = min(lo, -1.0)
        edges = np.linspace(lo, 0.0, bins + 1)
    else:
        edges = np.asarray(list(bins), dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be at least two strictly increasing numbers")
    counts, _ = np.histogram(np.clip(log_d, edges[0], edges[-1]), bins=edges)
    rows: list[dict[str, Any]] = [
        {
            "bin": "dead",
            "log10_lo": float("nan"),
            "log10_hi": float("nan"),
            "count": int((d == 0).sum()),
            "dead": True,
        }
    ]
    for lo_edge, hi_edge, count in zip(edges[:-1], edges[1:], counts, strict=True):
        rows.append(
            {
                "bin": f"[{lo_edge:.2f}, {hi_edge:.2f})",
                "log10_lo": float(lo_edge),
                "log10_hi": float(hi_edge),
                "count": int(count),
                "dead": False,
            }
        )
    return pd.DataFrame(rows, columns=["bin", "log10_lo", "log10_hi", "count", "dead"])


# ---- reconstruction of q and k ---------------------------------------------------------------


class VarianceExplained:
    """Streaming `variance_explained`: float64 sums of squared error, of x and of x^2."""

    def __init__(self, vector_ndim: int = 2) -> None:
        self.vector_ndim = vector_ndim
        self.sq_err = 0.0
        self.sq_sum = 0.0
        self.total: Tensor | None = None
        self.n = 0

    def add(self, true: Tensor, recon: Tensor) -> None:
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
        r = recon.detach().to(t).reshape(t.shape)
        self.sq_err += float((t - r).pow(2).sum())
        self.sq_sum += float(t.pow(2).sum())
        s = t.sum(0).cpu()
        self.total = s if self.total is None else self.total + s
        self.n += t.shape[0]

    def value(self) -> float:
        if self.total is None or self.n == 0:
            raise ValueError("no tokens were added")
        var = self.sq_sum - float(self.total.pow(2).sum()) / self.n
        if var <= 0:
            return float("nan")
        return 1.0 - self.sq_err / var


def variance_explained(true: Tensor, recon: Tensor, *, vector_ndim: int = 2) -> float:
    """1 - sum ||true - recon||^2 / sum ||true - mean(true)||^2 over tokens, the mean taken over
    tokens for each coordinate. The trailing `vector_ndim` dimensions make one token's vector
    (2 for q / k as [..., heads, d_head]; 1 for flattened [tokens, d]). 1 for a perfect
    reconstruction, 0 for predicting the mean; NaN when `true` does not vary."""
    if true.shape != recon.shape:
        raise ValueError(
            f"shapes differ: true {tuple(true.shape)}, reconstructed {tuple(recon.shape)}"
        )
    if true.ndim <= vector_ndim:
        raise ValueError(
            f"expected [tokens..., vector] with a {vector_ndim}-d vector per token, got "
            f"{tuple(true.shape)} (pass vector_ndim=1 for flattened [tokens, d] inputs)"
        )
    t = true.detach().double().reshape(-1, *true.shape[true.ndim - vector_ndim :])
    r = recon.detach().to(t).reshape(t.shape)
    var = float((t - t.mean(0)).pow(2).sum())
    if var <= 0:
        return float("nan")
    return 1.0 - float((t - r).pow(2).sum()) / var
