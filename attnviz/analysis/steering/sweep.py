"""Coefficient sweeps: rollouts of a prompt with coef x vector added, for many coefficients at once
(coefficients along the batch of one generation call), the effect and coherence figures per
coefficient with their intervals, damage on held-out text beside them, and the Pareto frontier
of effect against damage (GDM progress update #1, 2024).

>>> s = sweep(model, wedding, [0, 2, 4, 8], "I went up to my friend and said", WEDDING_WORDS)  # doctest: +SKIP
>>> s.table   # coef, p_success [lo, hi], distinct_2, zlib_ratio, ...             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.pareto import pareto_frontier
from attnviz.analysis.steering.metrics import (
    distinct_n,
    mean_interval,
    success_rate,
    word_matcher,
    zlib_ratio,
)
from attnviz.analysis.steering.vectors import SteeringVector
from attnviz.models.adapter import ModelAdapter
from attnviz.models.generation import ACTADD_SAMPLING, Sampling, generate

__all__ = ["Sweep", "frontier", "rollouts", "sweep"]


@dataclass
class Sweep:
    """A sweep's rollouts and figures. table: one row per coefficient (coef, relative (||c v|| /
    ||resid|| when the residual norm was given), p_success, p_lo, p_hi, distinct_2 [lo, hi],
    zlib_ratio [lo, hi]); texts[i]: the continuations at coefs[i], rollout j with seed seed + j."""

    name: str
    coefs: list[float]
    texts: list[list[str]]
    tokens: Tensor
    """[coefs, rollouts, n_new] the generated ids."""
    table: pd.DataFrame = field(repr=False)


@torch.no_grad()
def rollouts(model: ModelAdapter, steering: SteeringVector | None, coefs: Sequence[float],
             prompt: str | Tensor, n_rollouts: int = 16, n_new: int = 32,
             sampling: Sampling = ACTADD_SAMPLING, seed: int = 0, batch_rows: int = 256,
             batched: bool = True,
             progress: Callable[[int, int], None] | None = None) -> Tensor:  # fmt: skip
    """Generated ids [coefs, rollouts, n_new]: rollout j of every coefficient uses seed seed + j,
    so coefficient 0 is the unsteered rollout and each steered one has its unsteered twin.
    batched: coefficients x rollouts go through generation as rows of one batch (batch_rows at a
    time); False runs one generation per coefficient (the same tokens, slower)."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else model.check_tokens(prompt)
    n = tokens.shape[1]
    cs = torch.tensor([float(c) for c in coefs]).repeat_interleave(n_rollouts)
    seeds = [seed + j for _ in coefs for j in range(n_rollouts)]
    groups = (
        [range(i, min(i + batch_rows, len(cs))) for i in range(0, len(cs), batch_rows)]
        if batched else [range(i * n_rollouts, (i + 1) * n_rollouts) for i in range(len(coefs))]
    )  # fmt: skip
    out = []
    for g, rows in enumerate(groups):
        ivs = [] if steering is None else steering.interventions(cs[list(rows)])
        ids = generate(model, tokens.expand(len(rows), -1), n_new, ivs, sampling,
                       seeds=[seeds[r] for r in rows])  # fmt: skip
        out.append(ids[:, n:].cpu())
        if progress is not None:
            progress(g + 1, len(groups))
    return torch.cat(out).reshape(len(coefs), n_rollouts, n_new)


def sweep(model: ModelAdapter, steering: SteeringVector, coefs: Sequence[float],
          prompt: str | Tensor, words: Sequence[str] | Callable[[str], bool], *,
          n_rollouts: int = 16, n_new: int = 32, sampling: Sampling = ACTADD_SAMPLING,
          seed: int = 0, resid_norm: float | None = None, batched: bool = True,
          progress: Callable[[int, int], None] | None = None) -> Sweep:  # fmt: skip
    """Rollouts at every coefficient and their figures: P(success) (any target word, whole and
    case-insensitive, or `words` a function of the text) with a Wilson interval, distinct
    bigrams and the zlib ratio with intervals over rollouts."""
    success = words if callable(words) else word_matcher(words)
    ids = rollouts(model, steering, coefs, prompt, n_rollouts, n_new, sampling, seed,
                   batched=batched, progress=progress)  # fmt: skip
    texts = [[model.tokenizer.decode(r.tolist()) for r in row] for row in ids]
    rows = []
    for c, row_ids, row_texts in zip(coefs, ids, texts, strict=True):
        p, lo, hi = success_rate(row_texts, success)
        d2 = mean_interval([distinct_n(r.tolist(), 2) for r in row_ids])
        zr = mean_interval([zlib_ratio(t) for t in row_texts])
        rows.append({"coef": float(c),
                     "relative": abs(float(c)) * steering.norm / resid_norm if resid_norm else None,
                     "p_success": p, "p_lo": lo, "p_hi": hi,
                     "distinct_2": d2[0], "distinct_2_lo": d2[1], "distinct_2_hi": d2[2],
                     "zlib_ratio": zr[0], "zlib_ratio_lo": zr[1], "zlib_ratio_hi": zr[2]})  # fmt: skip
    return Sweep(steering.name, [float(c) for c in coefs], texts, ids, pd.DataFrame(rows))


def frontier(
    table: pd.DataFrame, effect: str = "p_success", cost: str = "loss_increase"
) -> pd.DataFrame:
    """The rows of a sweep's table (joined with damage) that no other row beats on both
    `effect` (higher is better) and `cost` (lower is better), by cost."""
    idx = pareto_frontier(table[cost], table[effect], "min", "max")
    return table.iloc[idx]
