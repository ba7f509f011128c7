"""Explaining scores: the unmasked feature maps, one cell's score split into its pairs and bias
terms (`decompose_score`), and kept pairs ranked by what they contribute on real text
(`rank_pairs`)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.patterns import expand_kv_heads
from attnviz.analysis.qk._shared import (
    DEFAULT_CHUNK,
    checked_inputs,
    one_thread,
    rotate,
    weights_of,
)
from attnviz.analysis.qk.scores import map_values, pair_blocks, prepare_pairs
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKDictionary
from attnviz.models.rotary import Rotary

ROW_KINDS = ("pair", "other_pairs", "query_x_key_bias", "query_bias_x_key", "bias_x_bias")
"""The `kind` of each row decompose_score returns, in display order."""


# ---- feature maps ----------------------------------------------------------------------------


def feature_map(
    qk: QKDictionary, head: int | None = None, rotary: Rotary | None = None, offset: int = 0
) -> Tensor:
    """<R dec_Q[a,h], R' dec_K[b,kv(h)]> / attn_scale: [d_q, d_k, n_heads], or [d_q, d_k] for one
    head. Unmasked and with unit activations.

    Without rotation (absolute positions, or offset 0) this is the whole position-free map. For a
    rotary model, `offset` = dest - src gives the map at that distance (computed as dest position
    `offset`, source 0; the rotary tables must cover `offset`)."""
    w = weights_of(qk)
    dq, dk = w.dec_q, w.dec_k
    if rotary is not None and offset:
        if not 0 <= offset < rotary.n_pos:
            raise ValueError(
                f"offset {offset} is outside the rotary tables (0..{rotary.n_pos - 1})"
            )
        rotary = rotary.to(dq.device)
        dq = rotate(rotary, dq, torch.full((dq.shape[0],), offset, device=dq.device))
        dk = rotate(rotary, dk, torch.zeros(dk.shape[0], dtype=torch.long, device=dk.device))
    dk = expand_kv_heads(dk, w.n_heads)
    if head is not None:
        return dq[:, head] @ dk[:, head].T / w.scale
    return torch.einsum("ahd,bhd->abh", dq, dk) / w.scale


def key_bias_term(qk: QKDictionary) -> Tensor:
    """<b_Q[h], dec_K[b,kv(h)]> / attn_scale: [d_k, n_heads], what one unit of key feature b adds
    to head h's score through the query bias (offset 0)."""
    w = weights_of(qk)
    return torch.einsum("hd,bhd->bh", w.b_q, expand_kv_heads(w.dec_k, w.n_heads)) / w.scale


def query_bias_term(qk: QKDictionary) -> Tensor:
    """<dec_Q[a,h], b_K[kv(h)]> / attn_scale: [d_q, n_heads] (offset 0). With absolute positions
    this is constant along a softmax row."""
    w = weights_of(qk)
    return torch.einsum("ahd,hd->ah", w.dec_q, expand_kv_heads(w.b_k[None], w.n_heads)[0]) / w.scale


# ---- explaining one score --------------------------------------------------------------------


def _pair_mask(pairs: PairTable | None, a: Tensor, b: Tensor, head: int) -> Tensor:
    """The mask [len(a), len(b)] of query features a x key features b for one head."""
    if pairs is None:
        return torch.ones(a.numel(), b.numel(), device=a.device)
    d_q, d_k, _ = pairs.shape
    row = torch.full((d_q,), -1, dtype=torch.long, device=a.device)
    col = torch.full((d_k,), -1, dtype=torch.long, device=a.device)
    row[a] = torch.arange(a.numel(), device=a.device)
    col[b] = torch.arange(b.numel(), device=a.device)
    pq, pk, ph = (t.to(a.device) for t in (pairs.q, pairs.k, pairs.head))
    r, c = row[pq], col[pk]
    hit = (ph == head) & (r >= 0) & (c >= 0)
    mask = torch.zeros(a.numel(), b.numel(), device=a.device)
    mask[r[hit], c[hit]] = pairs.value.to(a.device)[hit].float()
    return mask


def decompose_score(
    qk: QKDictionary, f_q_i: Tensor, f_k_j: Tensor, dest: int, src: int, head: int,
    pairs: PairTable | None, rotary: Rotary | None, top: int = 10,
    include_row_constants: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """Head `head`'s score at one cell split into labelled rows that sum to masked_scores there
    (before the causal mask; same `include_row_constants`).

    f_q_i [d_q] are the query features at the destination, f_k_j [d_k] the key features at the
    source; `dest` and `src` are the positions they rotate by (token indices by default).

    Rows (column `kind`): the `top` "pair" terms by absolute contribution among kept pairs of
    features active at both ends, then one "other_pairs" row with the rest, then
    "query_x_key_bias", "query_bias_x_key" and "bias_x_bias". With absolute positions the
    query_x_key_bias and bias_x_bias rows are constant along the row (`row_constant`) and are
    omitted unless `include_row_constants`. Columns: kind, label, q_feature, k_feature,
    contribution, f_q, f_k, mask, map_weight (the unmasked <R dec_Q, R dec_K> / scale at this
    offset), n_pairs, row_constant."""
    # One destination and one source as [1, d] sequences: checked like every scoring call, with
    # the farther of the two positions against the rotary tables.
    inp = checked_inputs(
        qk, f_q_i[None], f_k_j[None], pairs, rotary, torch.tensor([max(dest, src)])
    )
    w, rotary, device = inp.w, inp.rotary, inp.device
    f_q_i, f_k_j = inp.f_q[0, 0], inp.f_k[0, 0]
    with torch.no_grad(), one_thread(device):
        g = head // w.group
        a = f_q_i.nonzero()[:, 0]
        b = f_k_j.nonzero()[:, 0]
        at_dest = torch.tensor([dest], device=device)
        at_src = torch.tensor([src], device=device)

        def rot(x: Tensor, at: Tensor) -> Tensor:  # x [m, D] rotated to one position
            return rotate(rotary, x, at.expand(x.shape[0]))

        q_rows = rot(w.dec_q[a, head], at_dest)
        k_rows = rot(w.dec_k[b, g], at_src)
        map_w = q_rows @ k_rows.T / w.scale  # [A, B]
        mask = _pair_mask(pairs, a, b, head)
        contrib = f_q_i[a][:, None] * f_k_j[b][None, :] * mask * map_w
        ri, ci = (mask != 0).nonzero(as_tuple=True)
        values = contrib[ri, ci]
        order = values.abs().argsort(descending=True)
        shown, rest = order[:top], order[top:]

        rows: list[dict] = []
        for o in shown.tolist():
            qa, kb = int(a[ri[o]]), int(b[ci[o]])
            rows.append(dict(
                kind="pair", label=f"Q{qa} × K{kb}", q_feature=qa, k_feature=kb,
                contribution=float(values[o]), f_q=float(f_q_i[qa]), f_k=float(f_k_j[kb]),
                mask=float(mask[ri[o], ci[o]]), map_weight=float(map_w[ri[o], ci[o]]),
                n_pairs=1, row_constant=False,
            ))  # fmt: skip
        rows.append(dict(
            kind="other_pairs", label=f"{rest.numel()} other kept pairs",
            contribution=float(values[rest].sum()), n_pairs=rest.numel(), row_constant=False,
        ))  # fmt: skip

        qf = rot((f_q_i @ w.dec_q[:, head])[None], at_dest)[0]  # R (q̂ - b_Q)_h
        kf = rot((f_k_j @ w.dec_k[:, g])[None], at_src)[0]
        bq = rot(w.b_q[head][None], at_dest)[0]
        bk = rot(w.b_k[g][None], at_src)[0]
        absolute = rotary is None
        for kind, label, x, y in (
            ("query_x_key_bias", "query features × key bias", qf, bk),
            ("query_bias_x_key", "query bias × key features", bq, kf),
            ("bias_x_bias", "query bias × key bias", bq, bk),
        ):
            row_constant = absolute and kind != "query_bias_x_key"
            if row_constant and not include_row_constants:
                continue
            rows.append(dict(
                kind=kind, label=label, contribution=float(x @ y) / w.scale,
                row_constant=row_constant,
            ))  # fmt: skip

    frame = pd.DataFrame(
        rows,
        columns=["kind", "label", "q_feature", "k_feature", "contribution", "f_q", "f_k", "mask",
                 "map_weight", "n_pairs", "row_constant"],
    )  # fmt: skip
    for name in ("q_feature", "k_feature", "n_pairs"):
        frame[name] = frame[name].astype("Int64")
    frame["row_constant"] = frame["row_constant"].astype(bool)
    return frame


# ---- ranking pairs by what they do ---------------------------------------------------------


def rank_pairs(
    qk: QKDictionary, pairs: PairTable | None, f_q: Tensor, f_k: Tensor,
    rotary: Rotary | None, causal: bool = True, positions: Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> pd.DataFrame:  # fmt: skip
    """Kept pairs ranked by their total absolute contribution to scores on these activations
    (f_q [batch, n, d_q], f_k [batch, n, d_k]).

    A map weight alone ignores how strongly and how often the two features fire, and whether
    they fire in the right order: a pair counts only at (dest i, src j) with its query feature
    active at i and its key feature active at j (j <= i when `causal`).

    Columns: q_feature, k_feature, head, mask, map_weight (offset-0 <dec_Q, dec_K> / scale,
    unmasked), contribution_total (Σ |contribution|), contribution_mean (contribution_total per
    co-occurrence), contribution_signed (Σ contribution), cooccurrences. Sorted by
    contribution_total, largest first. pairs=None ranks all d_q x d_k x n_heads pairs (large)."""
    if pairs is None:
        c = qk.cfg
        pairs = PairTable.full(c.d_hidden_q, c.d_hidden_k, c.n_heads)
    inp = checked_inputs(qk, f_q, f_k, pairs, rotary, positions)
    w, f_q, f_k, rotary, pos, device = inp.w, inp.f_q, inp.f_k, inp.rotary, inp.pos, inp.device
    batch = f_q.shape[0]
    with torch.no_grad(), one_thread(device):
        table = prepare_pairs(w, pairs, rotary, chunk)
        nnz = pairs.nnz
        total = torch.zeros(nnz, dtype=torch.float64, device=device)
        signed = torch.zeros(nnz, dtype=torch.float64, device=device)
        count = torch.zeros(nnz, dtype=torch.long, device=device)
        for bi in range(batch):
            blocks = pair_blocks(w, f_q[bi], f_k[bi], table, rotary, pos[bi], chunk, causal)
            for blk in blocks:
                value = blk.value
                if causal:
                    allowed = blk.src[None, :] <= blk.dest[:, None]
                    value = value * allowed
                    hits = allowed.sum(1)
                else:
                    hits = torch.full_like(blk.dest, blk.src.numel())
                total.index_add_(0, blk.pair, value.abs().sum(1).double())
                signed.index_add_(0, blk.pair, value.sum(1).double())
                count.index_add_(0, blk.pair, hits)
        q, k, head = (t.to(device=device, dtype=torch.long) for t in (pairs.q, pairs.k, pairs.head))
        map_weight = map_values(w, q, k, head, chunk) / w.scale
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    frame = pd.DataFrame({
        "q_feature": q.cpu().numpy(), "k_feature": k.cpu().numpy(), "head": head.cpu().numpy(),
        "mask": pairs.value.float().cpu().numpy(), "map_weight": map_weight.cpu().numpy(),
        "contribution_total": total.cpu().numpy(), "contribution_mean": mean.cpu().numpy(),
        "contribution_signed": signed.cpu().numpy(), "cooccurrences": count.cpu().numpy(),
    })  # fmt: skip
    return frame.sort_values("contribution_total", ascending=False, kind="stable").reset_index(
        drop=True
    )
