"""Downstream loss: how much of an ablation's damage a patched pattern undoes, with the losses
behind the ratio, the absolute loss increase, bootstrap intervals and a warning."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

CE_RECOVERED_MIN_GAP = 1e-6
"""Below this |L_ablated - L_clean| (nats/token) the recovered fraction is NaN."""

MIN_ABLATION_DAMAGE = 0.05
"""nats/token: an ablation that costs less than this leaves `ce_recovered`'s ratio meaningless."""

MAX_RATIO_WIDTH = 0.5
"""A `ce_recovered` ratio whose bootstrap interval is wider than this is flagged."""


def _ratio(clean: float, patched: float, ablated: float) -> float:
    gap = ablated - clean
    if not math.isfinite(gap) or abs(gap) < CE_RECOVERED_MIN_GAP:
        return math.nan
    return (ablated - patched) / gap


def recovered_fraction(clean: float, patched: float, ablated: float) -> float:
    """(L_ablated - L_patched) / (L_ablated - L_clean) of mean losses: 1 when the patched pattern
    loses nothing, 0 when it is as bad as the ablation (negative when worse, above 1 when it
    beats the model). NaN, with a RuntimeWarning, when |L_ablated - L_clean| < 1e-6. Read it with
    `ce_recovered`, which says how much the denominator can be trusted."""
    value = _ratio(clean, patched, ablated)
    if math.isnan(value):
        warnings.warn(
            f"ce_recovered is undefined: the ablation changes the loss by {ablated - clean:.3g} "
            f"nats (clean {clean:.6g}, ablated {ablated:.6g}); reporting NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    return value


@dataclass(frozen=True)
class CERecovered:
    """What `ce_recovered` measured; losses in mean nats per predicted token, intervals
    (low, high) from the bootstrap over contexts."""

    ratio: float
    """(ablated - patched) / (ablated - clean); NaN when the ablation changes nothing."""
    ratio_interval: tuple[float, float]
    clean: float
    patched: float
    ablated: float
    loss_increase: float
    """patched - clean: what patching costs, in nats/token, whatever the ablation does."""
    loss_increase_interval: tuple[float, float]
    ablation_damage: float
    """ablated - clean: the ratio's denominator."""
    ablation_damage_interval: tuple[float, float]
    n_contexts: int
    n_resamples: int
    confidence: float
    warning: str | None
    """Why the ratio should not be read alone (None when nothing is wrong)."""

    @property
    def unreliable(self) -> bool:
        return self.warning is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain floats, lists and strings (intervals as [low, high]) for reports and widgets."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        out["unreliable"] = self.unreliable
        return out


def _context_losses(x: Tensor | Sequence[float], name: str) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).detach().cpu()
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(
            f"{name} must hold one value per context [n_contexts], got {tuple(t.shape)}"
        )
    return t


def ce_recovered(
    clean: Tensor | Sequence[float],
    patched: Tensor | Sequence[float],
    ablated: Tensor | Sequence[float],
    *,
    tokens: Tensor | Sequence[float] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_damage: float = MIN_ABLATION_DAMAGE,
    max_ratio_width: float = MAX_RATIO_WIDTH,
) -> CERecovered:
    """How much of an ablation's damage a patched pattern undoes, with the figures to judge it.

    clean, patched, ablated: ``Float[Tensor, "n_contexts"]``, each context's mean next-token
    loss (nats/token) unpatched, with the reconstruction patched in, and with the ablation.
    `tokens` ``[n_contexts]``: predicted tokens per context, the weights of the means (default
    equal), so that L = Σ_c w_c L_c / Σ_c w_c is the mean per token. Then

        ratio = (L_ablated - L_patched) / (L_ablated - L_clean)
        loss_increase = L_patched - L_clean,   ablation_damage = L_ablated - L_clean.

    Intervals: percentile bootstrap over contexts, `n_resamples` draws of n_contexts contexts
    with replacement (a torch.Generator seeded with `seed`, so the result is reproducible). The
    three losses of a context are drawn together: they share its text, and pairing removes
    that shared variation from the differences. Resamples whose ablation damage is below 1e-6
    give no ratio and are left out of its interval.

    `warning` is set when the ratio cannot be read alone: the ablation damage is below
    `min_damage` nats/token, or its interval reaches 0 or below, or the ratio's interval is
    wider than `max_ratio_width`, or there is a single context (no interval). Then the absolute
    `loss_increase` is the figure to quote."""
    c, p, a = (_context_losses(x, n) for x, n in ((clean, "clean"), (patched, "patched"),
                                                  (ablated, "ablated")))  # fmt: skip
    n = c.numel()
    if p.numel() != n or a.numel() != n:
        raise ValueError(
            f"clean, patched and ablated cover different contexts: {n}, {p.numel()}, {a.numel()}"
        )
    w = torch.ones(n, dtype=torch.float64) if tokens is None else _context_losses(tokens, "tokens")
    if w.numel() != n or bool((w <= 0).any()):
        raise ValueError(f"tokens must be {n} positive counts, one per context")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError("need n_resamples >= 1 and 0 < confidence < 1")

    def means(idx: Tensor) -> Tensor:  # [..., n] context indices -> [3, ...] weighted means
        ww = w[idx]
        return torch.stack([(x[idx] * ww).sum(-1) / ww.sum(-1) for x in (c, p, a)])

    lc, lp, la = means(torch.arange(n)).tolist()
    g = torch.Generator().manual_seed(seed)
    bc, bp, ba = means(torch.randint(0, n, (n_resamples, n), generator=g))
    damage = ba - bc
    ratios = torch.where(damage.abs() >= CE_RECOVERED_MIN_GAP, (ba - bp) / damage, math.nan)
    tail = (1 - confidence) / 2
    q = torch.tensor([tail, 1 - tail], dtype=torch.float64)

    def interval(x: Tensor) -> tuple[float, float]:
        low, high = torch.nanquantile(x, q).tolist()
        return low, high

    ratio = _ratio(lc, lp, la)
    ratio_iv, damage_iv = interval(ratios), interval(damage)
    reasons = []
    if n < 2:
        reasons.append("one context gives no interval")
    if la - lc < min_damage:
        reasons.append(f"the ablation costs only {la - lc:.3g} nats/token (< {min_damage:g})")
    if damage_iv[0] <= 0:
        reasons.append(f"the ablation's damage interval reaches {damage_iv[0]:.3g} (<= 0)")
    width = ratio_iv[1] - ratio_iv[0]
    if not width <= max_ratio_width:  # NaN width (no usable resample) counts too
        reasons.append(f"the ratio's interval is {width:.3g} wide (> {max_ratio_width:g})")
    warning = None
    if reasons:
        warning = "ce_recovered unreliable: " + "; ".join(reasons) + ": quote loss_increase"
    return CERecovered(
        ratio=ratio, ratio_interval=ratio_iv, clean=lc, patched=lp, ablated=la,
        loss_increase=lp - lc, loss_increase_interval=interval(bp - bc),
        ablation_damage=la - lc, ablation_damage_interval=damage_iv,
        n_contexts=n, n_resamples=n_resamples, confidence=confidence, warning=warning,
    )  # fmt: skip
