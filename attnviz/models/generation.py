"""Text generation on any adapter, with interventions held on every step: a KV cache where the
backend has one (ModelAdapter.forward_cached), seeded sampling that gives a sequence the same
tokens whether it is generated alone or in a batch (each row draws from its own generator), and
greedy decoding.

>>> out = generate(model, model.to_tokens("I think"), 32, seeds=[0, 1, 2])   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnviz.models.adapter import ModelAdapter
from attnviz.models.interventions import Intervention

__all__ = ["ACTADD_SAMPLING", "GREEDY", "Sampling", "generate", "sample_next"]


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen."""

    temperature: float = 1.0
    """Softmax temperature; 0 is greedy (the most likely token)."""
    top_p: float = 0.3
    """Nucleus: sample among the most likely tokens whose probabilities add up to top_p."""
    freq_penalty: float = 1.0
    """Subtracted from a token's logit once per time it was already generated."""


ACTADD_SAMPLING = Sampling(temperature=1.0, top_p=0.3, freq_penalty=1.0)
"""The settings of the ActAdd post (Turner et al. 2023)."""
GREEDY = Sampling(temperature=0.0, top_p=1.0, freq_penalty=0.0)


def sample_next(logits: Tensor, counts: Tensor, sampling: Sampling,
                generators: Sequence[torch.Generator] | None) -> Tensor:  # fmt: skip
    """The next token [batch] from last-position logits [batch vocab], given how often each token
    was generated so far [batch vocab]. Gumbel-max within the nucleus: row r's noise comes from
    generators[r], so a row's choice does not depend on the rows beside it."""
    x = logits.float() - sampling.freq_penalty * counts
    if sampling.temperature <= 0:
        return x.argmax(-1)
    x = x / sampling.temperature
    if sampling.top_p < 1:
        probs, order = x.softmax(-1).sort(-1, descending=True)
        outside = probs.cumsum(-1) - probs > sampling.top_p  # the most likely one always stays
        x = x.scatter(-1, order, x.gather(-1, order).masked_fill(outside, -torch.inf))
    assert generators is not None and len(generators) == x.shape[0]
    u = torch.stack([torch.rand(x.shape[-1], generator=g) for g in generators]).to(x.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))
    return (x + gumbel).argmax(-1)


@torch.no_grad()
def generate(
    model: ModelAdapter, tokens: Tensor, n_new: int, interventions: Sequence[Intervention] = (),
    sampling: Sampling = ACTADD_SAMPLING, seeds: Sequence[int] | None = None,
    use_cache: bool = True, progress: Callable[[int, int], None] | None = None,
) -> Tensor:  # fmt: skip
    """`tokens` [batch pos] (or [1 pos] repeated to len(seeds)) followed by `n_new` generated
    tokens: [batch pos + n_new]. seeds: one per row (default 0, 1, ...). use_cache False reruns
    the whole sequence every step (the reference the cached path is tested against)."""
    tokens = model.check_tokens(tokens)
    if seeds is not None and tokens.shape[0] == 1 and len(seeds) > 1:
        tokens = tokens.expand(len(seeds), -1)
    batch = tokens.shape[0]
    seeds = list(range(batch)) if seeds is None else list(seeds)
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {batch}: give one per row")
    if n_new < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    model.check_tokens(torch.zeros(1, tokens.shape[1] + n_new, dtype=torch.long))  # fits
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    counts = torch.zeros(batch, model.spec.d_vocab, device=model.device)
    out, cache, step_in = tokens, None, tokens
    for i in range(n_new):
        if use_cache:
            logits, cache = model.forward_cached(step_in, interventions, cache)
        else:
            logits, _ = model.forward_cached(out, interventions, None)
        nxt = sample_next(logits[:, -1], counts, sampling, generators)
        counts.scatter_add_(1, nxt[:, None], torch.ones(batch, 1, device=counts.device))
        step_in = nxt[:, None]
        out = torch.cat([out, step_in], 1)
        if progress is not None:
            progress(i + 1, n_new)
    return out
