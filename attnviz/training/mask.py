"""Step 2 of QK transcoder training (Sharkey et al. 2024): learn which query-feature x key-feature pairs matter to each head.

A mask m in [0, 1] over candidate pairs (a, b, h) scales each pair's score term; it is fitted to
the true pattern (KL per query row) with an L0.5 penalty on m, the transcoders frozen. What
survives is a sparse PairTable.

Scores are linear in m: s = bias + A m, with A the pairs' contributions at m = 1 for every
(head, dest, src) cell. A is computed once, sparsely, for a fixed set of contexts (from the
active features and rotated decoder rows only; never a dense d_Q x d_K x heads x positions²
tensor), so each step is a scatter-add plus a softmax. This also works for rotary models, where
a pair's contribution depends on the relative position of dest and src.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from attnviz.analysis.qk import masked_scores, pair_contributions
from attnviz.data.store import ActivationStore
from attnviz.device import release_memory
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKDictionary
from attnviz.models.rotary import Rotary
from attnviz.training.qk import log_pattern, pattern_kl


@dataclass
class MaskTrainConfig:
    contexts: int = 32
    """Contexts the mask is fitted on (the store's first ones, never its held-out last chunk)."""
    n_ctx: int = 64
    """Positions of each context used (the first n_ctx, BOS included)."""
    batch_contexts: int = 8
    """Contexts per step."""
    steps: int = 300
    """Optimisation steps."""
    lr: float = 1e-2
    """Adam learning rate for the mask."""
    mask_reg: float = 2e-6
    """Coefficient of sum sqrt(|m| + eps) over all candidate pairs."""
    threshold: float = 1e-2
    """Pairs whose mask ends at or below this are dropped."""
    seed: int = 0
    """Data order."""


@dataclass
class _Context:
    true_logp: Tensor  # [heads, n, n]
    bias: Tensor  # [heads, n, n], pair terms excluded
    # Entries sorted by candidate pair, each pair's count in `counts`: no pair index per entry.
    # ~6M entries a context at 48 tokens, 8 bytes each (int32 cell, float32 value).
    counts: Tensor  # int32 [candidates] entries of each pair
    cell: Tensor  # int32 [nnz] flattened (head, dest, src), causal cells only
    value: Tensor  # float32 [nnz] contribution at m = 1


def candidate_pairs(f_q: Tensor, f_k: Tensor, n_heads: int) -> PairTable:
    """Every (query feature, key feature, head) whose features both fire in the data."""
    live_q = (f_q.reshape(-1, f_q.shape[-1]) > 0).any(0).nonzero(as_tuple=True)[0]
    live_k = (f_k.reshape(-1, f_k.shape[-1]) > 0).any(0).nonzero(as_tuple=True)[0]
    a, b, h = torch.meshgrid(live_q, live_k, torch.arange(n_heads), indexing="ij")
    return PairTable(
        q=a.reshape(-1), k=b.reshape(-1), head=h.reshape(-1),
        value=torch.ones(a.numel()), shape=(f_q.shape[-1], f_k.shape[-1], n_heads),
    )  # fmt: skip


def _context(qk, f_q, f_k, q, k, candidates, rotary) -> _Context:
    rot = (lambda x: x) if rotary is None else rotary.apply
    true_logp = log_pattern(rot(q[None]), rot(k[None]), qk.cfg.attn_scale)[0]
    none = torch.zeros(0, dtype=torch.long)
    empty = PairTable(q=none, k=none, head=none, value=torch.zeros(0), shape=candidates.shape)
    bias = masked_scores(qk, f_q, f_k, empty, rotary, include_row_constants=True)
    cells, pairs, values = [], [], []
    for blk in pair_contributions(qk, f_q, f_k, candidates, rotary):
        causal = blk.src[None, :] <= blk.dest[:, None]  # future cells are masked anyway
        rows, cols = causal.nonzero(as_tuple=True)
        cells.append((blk.at[rows] + blk.src[cols]).int())
        pairs.append(blk.pair[rows].int())
        values.append(blk.value[rows, cols])
    cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
    pair = cat(pairs, torch.int32)
    del pairs
    order = torch.argsort(pair, stable=True)
    counts = torch.bincount(pair, minlength=candidates.nnz).int()
    del pair
    return _Context(
        true_logp=true_logp, bias=bias.masked_fill(torch.isinf(bias), 0.0), counts=counts,
        cell=cat(cells, torch.int32)[order], value=cat(values, torch.float32)[order],
    )  # fmt: skip


def _scores(ctx: _Context, mask: Tensor) -> Tensor:
    per_entry = torch.repeat_interleave(mask, ctx.counts, output_size=ctx.cell.numel())
    flat = ctx.bias.reshape(-1).index_add(0, ctx.cell, ctx.value * per_entry)
    n = ctx.bias.shape[-1]
    allowed = torch.ones(n, n, dtype=torch.bool, device=flat.device).tril()
    return flat.view_as(ctx.bias).masked_fill(~allowed, float("-inf"))


def train_pair_mask(
    qk: QKDictionary,
    store: ActivationStore,
    rotary: Rotary | None,
    out_dir: str | Path | None = None,
    cfg: MaskTrainConfig | None = None,
    progress: bool = True,
) -> PairTable:
    """Fit the mask on the store's first `cfg.contexts` contexts and return the kept pairs."""
    cfg = cfg or MaskTrainConfig()
    qk = qk.eval()
    fields = ("resid_normed", "q", "k") if qk.is_transcoder else ("q", "k")
    batches = store.batches(cfg.contexts, fields, shuffle=False, by="context", dtype=torch.float32,
                            buffer_chunks=1, chunks=list(range(max(1, len(store.chunks) - 1))))  # fmt: skip
    first = next(iter(batches))
    batches.close()  # it holds a whole chunk (~170 MB in tutorial 03)
    data = {f: t[:, : cfg.n_ctx].clone() for f, t in first.items()}
    del first
    with torch.no_grad():
        _, _, f_q, f_k = qk(resid_normed=data.get("resid_normed"), q=data["q"], k=data["k"])
    candidates = candidate_pairs(f_q, f_k, qk.cfg.n_heads)
    n_cells = qk.cfg.n_heads * data["q"].shape[1] ** 2
    if max(candidates.nnz, n_cells) >= 2**31:  # the contexts index them as int32
        raise ValueError(f"{candidates.nnz:,} candidate pairs x {n_cells:,} cells is too many: "
                         "fit the mask on fewer contexts or tokens (cfg.contexts, cfg.n_ctx)")  # fmt: skip
    contexts = [
        _context(qk, f_q[i], f_k[i], data["q"][i], data["k"][i], candidates, rotary)
        for i in tqdm(range(f_q.shape[0]), desc="pair contributions", disable=not progress)
    ]
    release_memory()  # the contributions' temporaries, before the steps add theirs
    mask = torch.ones(candidates.nnz, requires_grad=True)
    opt = torch.optim.Adam([mask], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    bar = tqdm(range(cfg.steps), desc="pair mask", disable=not progress)
    for step in bar:
        pick = torch.randperm(len(contexts), generator=gen)[: cfg.batch_contexts].tolist()
        opt.zero_grad()
        kl = torch.zeros(())
        for i in pick:  # backward per context: one context's temporaries in memory at a time
            term = pattern_kl(contexts[i].true_logp[None], _scores(contexts[i], mask).log_softmax(-1)[None])  # fmt: skip
            (term / len(pick)).backward()
            kl += term.detach() / len(pick)
        penalty = torch.sqrt(mask.abs() + 1e-8).sum()
        (cfg.mask_reg * penalty).backward()
        opt.step()
        with torch.no_grad():
            mask.clamp_(0.0, 1.0)
        kept = int((mask > cfg.threshold).sum())
        bar.set_postfix(kl=f"{kl.item():.4f}", kept=f"{kept:,}")
        if step % 25 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "kl": kl.item(), "kept": kept})
    keep = mask.detach() > cfg.threshold
    del contexts
    release_memory()
    table = PairTable(
        q=candidates.q[keep], k=candidates.k[keep], head=candidates.head[keep],
        value=mask.detach()[keep], shape=candidates.shape,
    )  # fmt: skip
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"config": asdict(cfg), "candidates": candidates.nnz, "kept": table.nnz,
                   "fraction_kept": table.fraction_kept, "history": history}  # fmt: skip
        (out / "mask_history.json").write_text(json.dumps(summary, indent=2) + "\n")
    return table
