"""The model-running half of a QK dictionary's metrics: the patterns that ablate a layer and the
next-token loss with a pattern patched into every head. The formulas (KL, density, FVU, L0, CE
recovered) live in `attnviz.analysis.metrics`; `qk_report.evaluate_qk` gathers both into a
`QKReport`.

Conventions: patterns are [batch, heads, dest, src] with rows summing to 1 over sources and exact
zeros above the diagonal (future sources). Losses are in nats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from attnviz.analysis.patterns import causal_mask
from attnviz.models.interventions import ReplacePattern

if TYPE_CHECKING:
    from attnviz.models.adapter import ModelAdapter


# ---- ablation patterns -----------------------------------------------------------------------


# Bytes of one float32 logits tensor per forward pass of patched_losses, which holds ~6 such at
# once: on CPU one 128-token context of a 49k vocabulary (25 MB; Binder gives 2 GB in all).
LOGITS_BYTES_AT_ONCE = {"cpu": 32 << 20, "cuda": 1 << 30}


def contexts_at_once(n: int, d_vocab: int, device: torch.device | str) -> int:
    """How many n-token contexts patched_losses runs together on `device`."""
    kind = torch.device(device).type
    budget = LOGITS_BYTES_AT_ONCE.get(kind, LOGITS_BYTES_AT_ONCE["cpu"])
    return max(1, budget // (n * d_vocab * 4))


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
    "ce_per_context": {"clean": L_c, name: L_c, ...}, "logit_kl": {name: KL, ...}}`` where L is
    the mean cross-entropy in nats, L_c the float64 CPU tensor [batch] of each context's mean
    (what `metrics.ce_recovered` bootstraps over), and KL is KL(clean || patched) of the
    next-token distributions, averaged over the same predicted positions (all but the last)."""
    if "clean" in patterns:
        raise ValueError("'clean' names the unpatched run: give the pattern another name")
    tokens = adapter.check_tokens(tokens)
    batch, n = tokens.shape
    if n < 2:
        raise ValueError("the loss needs contexts of at least two tokens")
    step = contexts_at_once(n, adapter.spec.d_vocab, adapter.device)
    if batch > step:  # a few contexts at a time: each holds ~6 x vocab logits
        parts = [
            patched_losses(adapter, tokens[i : i + step], layer,
                           {k: p[i : i + step] if p.ndim == 4 and len(p) == batch else p for k, p in patterns.items()})
            for i in range(0, batch, step)
        ]  # fmt: skip
        merged = {k: torch.cat([part["ce_per_context"][k] for part in parts]) for k in parts[0]["ce_per_context"]}  # fmt: skip
        total = sum(part["n_predictions"] for part in parts)
        return {
            "n_predictions": total,
            "ce": {name: float(losses.mean()) for name, losses in merged.items()},
            "ce_per_context": merged,
            "logit_kl": {
                name: sum(part["logit_kl"][name] * part["n_predictions"] for part in parts) / total
                for name in parts[0]["logit_kl"]
            },
        }
    heads = adapter.spec.n_heads
    targets = tokens[:, 1:, None]

    def per_context(logprobs: Tensor) -> Tensor:
        return (-logprobs.gather(-1, targets)[..., 0]).mean(-1).double().cpu()

    clean_logprobs = adapter.run(tokens)[:, :-1].float().log_softmax(-1)
    clean_probs = clean_logprobs.exp()
    # KL(clean || patched) = sum p log p - sum p log q; the first sum once, the second as a
    # contraction (no vocabulary-sized temporary per candidate: ~100 MB a batch here)
    clean_plogp = torch.einsum("bnv,bnv->bn", clean_probs, clean_logprobs)
    contexts: dict[str, Tensor] = {"clean": per_context(clean_logprobs)}
    logit_kl: dict[str, float] = {}
    for name, pattern in patterns.items():
        full = _batch_pattern(pattern, batch, heads, n)
        patch = ReplacePattern(layer, list(range(heads)), full)
        logprobs = adapter.run(tokens, [patch])[:, :-1].float().log_softmax(-1)
        contexts[name] = per_context(logprobs)
        cross = torch.einsum("bnv,bnv->bn", clean_probs, logprobs)
        # each sum is large and the KL small: float32 rounding may dip below 0 at a position
        logit_kl[name] = float((clean_plogp - cross).clamp_min(0).mean())
        del logprobs
    return {
        "n_predictions": batch * (n - 1),
        "ce": {name: float(losses.mean()) for name, losses in contexts.items()},
        "ce_per_context": contexts,
        "logit_kl": logit_kl,
    }
