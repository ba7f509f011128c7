"""What a steering coefficient does: the effect (the share of rollouts that use a target word,
counted as whole words, case-insensitively, with a Wilson interval) and the damage (the model's
loss on held-out text with the vector added, its increase over the unsteered loss and the KL of
the next-token distribution, with bootstrap intervals over contexts; plus cheap coherence signals
of the rollouts: distinct n-grams and the zlib compression ratio)."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.steering.vectors import SteeringVector
from attnviz.models.adapter import ModelAdapter

__all__ = [
    "WEDDING_WORDS",
    "damage",
    "distinct_n",
    "mean_interval",
    "success_rate",
    "word_matcher",
    "zlib_ratio",
]

WEDDING_WORDS = ("wedding", "weddings", "wed", "marry", "married", "marriage", "bride", "groom",
                 "honeymoon")  # fmt: skip
"""The target words of the GDM update's wedding experiment (after the ActAdd post)."""
Z95 = 1.959963984540054


def word_matcher(words: Iterable[str]) -> Callable[[str], bool]:
    """Whether a text holds any of `words` as a whole word, ignoring case ("wed" counts in "we
    wed today", not in "Wednesday")."""
    words = [w.strip() for w in words if w and w.strip()]
    if not words:
        raise ValueError("the word list is empty: give at least one target word")
    pattern = re.compile(
        r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE
    )
    return lambda text: pattern.search(text) is not None


def success_rate(
    texts: Sequence[str], success: Callable[[str], bool]
) -> tuple[float, float, float]:
    """The share of texts that succeed, with its 95% Wilson interval: (p, lo, hi)."""
    n = len(texts)
    if n == 0:
        return math.nan, math.nan, math.nan
    k = sum(bool(success(t)) for t in texts)
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def distinct_n(tokens: Sequence[int], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of a rollout (1: no repetition; low: a loop)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def zlib_ratio(text: str) -> float:
    """Compressed over raw size (UTF-8): repetitive text compresses well and scores low."""
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else math.nan


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """The mean and its 95% normal interval (mean +- 1.96 standard errors)."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    half = Z95 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return m, m - half, m + half


def _bootstrap(per_context: Tensor, seed: int, n: int = 1000) -> tuple[float, float]:
    k = per_context.shape[0]
    if k < 2:
        return math.nan, math.nan
    g = torch.Generator().manual_seed(seed)
    means = per_context[torch.randint(0, k, (n, k), generator=g)].mean(-1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=means.dtype)).tolist()
    return lo, hi


@torch.no_grad()
def damage(model: ModelAdapter, steering: SteeringVector, coefs: Sequence[float], tokens: Tensor,
           batch: int = 8, seed: int = 0,
           progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:  # fmt: skip
    """Per coefficient, on held-out contexts `tokens` [n ctx] with the vector added: the mean
    loss (nats/token) at the positions after the steered ones, its increase over the unsteered
    loss, and the mean KL(unsteered || steered) of the next-token distribution, each with a 95%
    bootstrap interval over contexts. Columns: coef, loss, loss_lo, loss_hi, loss_increase,
    loss_increase_lo, loss_increase_hi, kl, kl_lo, kl_hi."""
    start = steering.steered_until
    if tokens.shape[1] - 1 <= start:
        raise ValueError(f"contexts of {tokens.shape[1]} tokens have no position after the "
                         f"steered ones (0-{start - 1}): give longer contexts")  # fmt: skip
    clean_losses: list[Tensor] = []
    losses: list[list[Tensor]] = [[] for _ in coefs]
    kls: list[list[Tensor]] = [[] for _ in coefs]
    chunks = tokens.split(batch)
    done, total = 0, len(chunks) * (len(coefs) + 1)
    for chunk in chunks:
        base = model.run(chunk).float().log_softmax(-1)[:, start:-1]
        target = chunk[:, start + 1 :, None].to(base.device)
        clean_losses.append(-base.gather(-1, target)[..., 0].mean(-1).cpu())
        done += 1
        for i, c in enumerate(coefs):
            logp = model.run(chunk, steering.interventions(float(c))).float().log_softmax(-1)
            logp = logp[:, start:-1]
            losses[i].append(-logp.gather(-1, target)[..., 0].mean(-1).cpu())
            kls[i].append((base.exp() * (base - logp)).sum(-1).mean(-1).cpu())
            done += 1
            if progress is not None:
                progress(done, total)
    clean = torch.cat(clean_losses).double()
    rows = []
    for i, c in enumerate(coefs):
        loss, kl = torch.cat(losses[i]).double(), torch.cat(kls[i]).double()
        inc = loss - clean
        rows.append({"coef": float(c), "loss": float(loss.mean()),
                     **dict(zip(("loss_lo", "loss_hi"), _bootstrap(loss, seed + i), strict=True)),
                     "loss_increase": float(inc.mean()),
                     **dict(zip(("loss_increase_lo", "loss_increase_hi"), _bootstrap(inc, seed + i), strict=True)),
                     "kl": float(kl.mean()),
                     **dict(zip(("kl_lo", "kl_hi"), _bootstrap(kl, seed + i), strict=True))})  # fmt: skip
    return pd.DataFrame(rows)
