"""The sparse engine: scores of QK-dictionary features through a pair table (the formula is in
`attnviz.analysis.qk`), with work and memory that follow the active features and kept pairs."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from attnviz.analysis.patterns import causal_mask, expand_kv_heads
from attnviz.analysis.qk._shared import (
    DEFAULT_CHUNK,
    Weights,
    checked_inputs,
    one_thread,
    rotate,
)
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKDictionary
from attnviz.models.rotary import Rotary


@dataclass
class _Active:
    """One sequence's non-zero activations grouped by feature (CSR): feature f's entries are
    ptr[f]:ptr[f+1], in ascending position."""

    ptr: Tensor  # int64 [d + 1]
    feat: Tensor  # int64 [nnz]
    pos: Tensor  # int64 [nnz]
    val: Tensor  # float32 [nnz]

    @property
    def counts(self) -> Tensor:
        return self.ptr[1:] - self.ptr[:-1]


def _by_feature(f: Tensor) -> _Active:
    """f [n, d] -> its non-zero entries grouped by feature."""
    # nonzero() walks the transposed view row-major: sorted by feature, then position.
    feat, pos = f.T.nonzero(as_tuple=True)
    ptr = torch.zeros(f.shape[1] + 1, dtype=torch.long, device=f.device)
    ptr[1:] = torch.bincount(feat, minlength=f.shape[1]).cumsum(0)
    return _Active(ptr=ptr, feat=feat, pos=pos, val=f[pos, feat].float())


@dataclass
class _Pairs:
    """A pair table sorted by key unit u = k * n_kv_heads + kv(head), so one unit's pairs all
    read the same rotated key rows."""

    ident: Tensor  # int64 [nnz] row in the caller's PairTable
    q: Tensor  # int64 [nnz]
    head: Tensor  # int64 [nnz]
    unit: Tensor  # int64 [nnz]
    weight: Tensor  # float32 [nnz]: mask / scale (absolute: also times the map value)


def map_values(w: Weights, q: Tensor, k: Tensor, head: Tensor, chunk: int) -> Tensor:
    """<dec_Q[q,h], dec_K[k,kv(h)]> (unscaled, unrotated) for listed pairs, in bounded blocks."""
    out = torch.empty(q.numel(), device=q.device)
    step = max(1, chunk // max(1, w.d_head))
    for s in range(0, q.numel(), step):
        sl = slice(s, s + step)
        qv = w.dec_q[q[sl], head[sl]]
        kv = w.dec_k[k[sl], head[sl] // w.group]
        out[sl] = (qv * kv).sum(-1)
    return out


def prepare_pairs(w: Weights, pairs: PairTable, rotary: Rotary | None, chunk: int) -> _Pairs:
    device = w.dec_q.device
    q, k, head = (t.to(device=device, dtype=torch.long) for t in (pairs.q, pairs.k, pairs.head))
    value = pairs.value.to(device=device, dtype=torch.float32)
    unit = k * w.n_kv + head // w.group
    with one_thread(device):  # a parallel sort of this size stalls on busy shared cores
        order = torch.argsort(unit, stable=True)
    weight = value / w.scale
    if rotary is None:
        # Without rotation the dot product is one number per pair: fold it in now.
        weight = weight * map_values(w, q, k, head, chunk)
    return _Pairs(ident=order, q=q[order], head=head[order], unit=unit[order], weight=weight[order])


@dataclass
class PairBlock:
    """Pair contributions to one sequence's scores: items (a kept pair, a destination where its
    query feature is active) against the sources where its key feature is active.
    value[r, c] is that pair's term (mask included) in s_head(dest[r], src[c]); it belongs at
    at[r] + src[c] of the flattened [n_heads, n, n] scores."""

    pair: Tensor  # int64 [m] row in the PairTable
    at: Tensor  # int64 [m] (head * n + dest) * n: where the row starts in flattened scores
    dest: Tensor  # int64 [m]
    src: Tensor  # int64 [n_src]
    value: Tensor  # float32 [m, n_src]


def pair_blocks(
    w: Weights, f_q: Tensor, f_k: Tensor, table: _Pairs, rotary: Rotary | None,
    positions: Tensor, chunk: int, causal: bool = True, merge: bool = False,
) -> Iterator[PairBlock]:  # fmt: skip
    """_blocks on one CPU thread (see one_thread), restored when the iteration ends."""
    with one_thread(f_q.device):
        yield from _blocks(w, f_q, f_k, table, rotary, positions, chunk, causal, merge)


def _merge_rows(
    unit: Tensor, at: Tensor, rows: Tensor, cells: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Sum the rows [m, ...] that share a key unit and a score row `at` (< cells): the unique
    (unit, at), sorted by unit, and their summed rows. Pairs that share a key unit, a head and a
    destination then meet the sources once. One sort for the whole item range."""
    key, inverse = torch.unique(unit * cells + at, return_inverse=True)
    if key.numel() == at.numel():
        return unit, at, rows  # nothing shared (items already come grouped by unit)
    merged = torch.zeros((key.numel(), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    return key // cells, key % cells, merged.index_add_(0, inverse, rows)


def _blocks(
    w: Weights, f_q: Tensor, f_k: Tensor, table: _Pairs, rotary: Rotary | None,
    positions: Tensor, chunk: int, causal: bool, merge: bool = False,
) -> Iterator[PairBlock]:  # fmt: skip
    """Every kept pair's contribution at every (dest, src) where its query feature is active at
    dest and its key feature at src, for one sequence (f_q [n, d_q], f_k [n, d_k], positions [n]).

    Work and memory follow the active features and kept pairs, never d_q x d_k x positions²:
    decoder rows are rotated only for the (position, feature) combinations that occur, and each
    key unit (key feature, kv head) meets its partners' active queries in one small matmul.
    With `causal`, sources after a query chunk are skipped (those inside it are the caller's).
    With `merge`, the pairs of a key unit that share a (head, destination) are summed before they
    meet the sources: each block row is then a whole score row's share (pair = -1, for callers
    that only need the scores), which cuts the work by the number of query features per row."""
    n = f_q.shape[0]
    H, D, n_kv = w.n_heads, w.d_head, w.n_kv
    keys = _by_feature(f_k)
    kval, kpos = keys.val, keys.pos
    if rotary is not None:
        # Rotated, activation-scaled key rows for every active (position, key feature).
        rk = rotate(rotary, w.dec_k[keys.feat], positions[kpos]) * kval[:, None, None]
    kstart = keys.ptr[:-1]
    composite = keys.feat * n + kpos  # ascending: lets one searchsorted find each feature's cut
    feat_ids = torch.arange(f_k.shape[1], device=f_k.device)
    per_position = max(1.0, (f_q != 0).sum().item() / max(1, n)) * (H * D if rotary else 1)
    step = max(1, int(chunk // per_position))  # query positions per chunk
    item_budget = max(1, chunk // (D if rotary is not None else 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        queries = _by_feature(f_q[start:stop])
        if queries.feat.numel() == 0:
            continue
        if rotary is not None:
            dest_pos = positions[queries.pos + start]
            rq = rotate(rotary, w.dec_q[queries.feat], dest_pos).reshape(-1, D)  # [act*H, D]
        kend = torch.searchsorted(composite, feat_ids * n + stop) if causal else keys.ptr[1:]
        kcount = kend - kstart
        # Items: (pair, active query of its q feature in this chunk), for units with any keys.
        cnt = queries.counts[table.q] * (kcount[table.unit // n_kv] > 0)
        cum = cnt.cumsum(0)
        total = int(cum[-1]) if cum.numel() else 0
        kstart_l, kend_l = kstart.tolist(), kend.tolist()
        for s in range(0, total, item_budget):
            p, act = _items(queries, table, cnt, cum, s, min(total, s + item_budget))
            coef = queries.val[act] * table.weight[p]
            head = table.head[p]
            dest = queries.pos[act] + start
            at = (head * n + dest) * n
            ident = table.ident[p]
            side = coef  # what meets the key side: a coefficient, or (rotary) a query vector
            if rotary is not None:
                side = rq.index_select(0, act * H + head).mul_(coef[:, None])  # [m, D]
            unit = table.unit[p]
            if merge:
                unit, at, side = _merge_rows(unit, at, side, H * n * n)
                ident = torch.full_like(at, -1)
                dest = (at // n) % n
            units, lengths = torch.unique_consecutive(unit, return_counts=True)
            o = 0
            for u, length in zip(units.tolist(), lengths.tolist(), strict=True):
                b, g = divmod(u, n_kv)
                k0, k1 = kstart_l[b], kend_l[b]
                src = kpos[k0:k1]
                sub = max(1, chunk // (k1 - k0))  # bound the [m, n_src] block
                for r0 in range(o, o + length, sub):
                    r = slice(r0, min(o + length, r0 + sub))
                    if rotary is not None:
                        value = side[r] @ rk[k0:k1, g].T
                    else:
                        value = side[r, None] * kval[None, k0:k1]
                    yield PairBlock(pair=ident[r], at=at[r], dest=dest[r], src=src, value=value)
                o += length


def _items(
    queries: _Active, table: _Pairs, cnt: Tensor, cum: Tensor, s: int, e: int
) -> tuple[Tensor, Tensor]:
    """Items s..e-1 of the enumeration of (pair, active query of the pair's query feature), where
    pair p has cnt[p] items and cum = cnt.cumsum(): (pair index [m], activation index [m])."""
    items = torch.arange(s, e, device=cnt.device)
    p = torch.searchsorted(cum, items, right=True)
    return p, queries.ptr[table.q[p]] + items - (cum[p] - cnt[p])


def _add_absolute_pair_terms(
    w: Weights, f_q: Tensor, f_k: Tensor, table: _Pairs, out: Tensor, chunk: int
) -> None:
    """Add one sequence's pair terms to out [n_heads, n, n], for absolute positions.

    Without rotation a pair's term is f_Q[i,a] f_K[j,b] W_h[a,b], one number W_h[a,b] =
    mask * map / scale per pair (table.weight), so the pair terms are f_Q W_h f_K^T. Per chunk
    of query positions, X = f_Q W_h [n_heads, c, d_k] is scattered from (pair, active query)
    items, and each head meets the active keys in one sparse (CSR f_K) x dense product: no loop
    over key features and no scatter per (cell, pair). Memory: X, n_heads x c x d_k <= chunk."""
    n, d_k = f_k.shape
    H = w.n_heads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta state"
        keys = f_k.to_sparse_csr()
    k_of_pair = table.unit // w.n_kv
    step = max(1, chunk // (H * d_k))
    for start in range(0, n, step):
        stop = min(n, start + step)
        queries = _by_feature(f_q[start:stop])
        cnt = queries.counts[table.q]
        cum = cnt.cumsum(0)
        total = int(cum[-1]) if cum.numel() else 0
        if total == 0:
            continue
        x = torch.zeros(H * (stop - start) * d_k, device=f_q.device)
        for s in range(0, total, chunk):
            p, act = _items(queries, table, cnt, cum, s, min(total, s + chunk))
            at = (table.head[p] * (stop - start) + queries.pos[act]) * d_k + k_of_pair[p]
            x.index_add_(0, at, queries.val[act] * table.weight[p])
        x = x.view(H, stop - start, d_k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for h in range(H):
                out[h, start:stop] += torch.sparse.mm(keys, x[h].T).T  # [n_src, c] -> [c, n_src]


def pair_contributions(
    qk: QKDictionary, f_q: Tensor, f_k: Tensor, pairs: PairTable, rotary: Rotary | None,
    positions: Tensor | None = None, causal: bool = True, chunk: int = DEFAULT_CHUNK,
) -> Iterator[PairBlock]:  # fmt: skip
    """The kept pairs' terms of one sequence's scores (f_q [n, d_q], f_k [n, d_k]) as PairBlocks,
    without the bias terms and without summing: what masked_scores scatters, for callers that
    need each pair's share (mask fitting, attribution). Mask values are included (a table of
    ones gives the terms at m = 1).

    With `causal` no block reaches sources after its query chunk, but blocks may still hold some
    src > dest entries: filter with `src[None, :] <= dest[:, None]`. While iterating on CPU,
    torch runs on one thread (see one_thread)."""
    if f_q.ndim != 2 or f_k.ndim != 2:
        raise ValueError("pair_contributions takes one sequence: f_q [n, d_q], f_k [n, d_k]")
    # No torch.no_grad() here: it would stay on in the caller's code between blocks. The
    # weights are detached, so blocks carry no graph unless the activations do.
    inp = checked_inputs(qk, f_q, f_k, pairs, rotary, positions)
    table = prepare_pairs(inp.w, pairs, inp.rotary, chunk)
    yield from pair_blocks(
        inp.w, inp.f_q[0], inp.f_k[0], table, inp.rotary, inp.pos[0], chunk, causal
    )


def _scores(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """Unmasked scores [batch, n_heads, n, n] of q [b, n, h, d] and k [b, n, h_kv, d], divided in
    place (one n x n buffer, not two)."""
    k = expand_kv_heads(k, q.shape[-2])
    # matmul (unlike einsum) hands back a contiguous result, which the scatter needs.
    return torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)).div_(scale)


def _bias_scores(
    w: Weights, f_q: Tensor, f_k: Tensor, rotary: Rotary | None, positions: Tensor,
    keep_row_terms: bool, full_pairs: bool,
) -> Tensor:  # fmt: skip
    """The bias terms (and with `full_pairs` the unmasked pair terms too): broadcastable to
    [batch, n_heads, n, n]. `keep_row_terms` keeps the terms <R_i q̂_i, R_j b_K>."""
    qf = torch.einsum("bia,ahd->bihd", f_q, w.dec_q)  # the query features' part of q̂
    kf = torch.einsum("bjc,ckd->bjkd", f_k, w.dec_k)  # the key features' part of k̂
    q_hat = qf + w.b_q
    batch, n = f_q.shape[:2]
    if rotary is None and not full_pairs:
        # Absolute positions: the bias terms are outer sums of a row and a column vector.
        out = torch.einsum("hd,bjhd->bhj", w.b_q, expand_kv_heads(kf, w.n_heads))[:, :, None]
        if keep_row_terms:
            b_k = expand_kv_heads(w.b_k[None], w.n_heads)[0]
            out = out + torch.einsum("bihd,hd->bhi", q_hat, b_k)[..., None]
        return out / w.scale
    b_k = w.b_k.expand(batch, n, *w.b_k.shape)
    if full_pairs:
        # Every pair at mask 1: pair terms + query bias x key features = <q̂, k̂ - b_K>.
        q_side, k_side = q_hat, (kf + b_k if keep_row_terms else kf)
        if rotary is not None:
            q_side, k_side = rotary.apply(q_side, positions), rotary.apply(k_side, positions)
        return _scores(q_side, k_side, w.scale)
    # <[q̂ ; b_Q], [b_K ; k̂ - b_K]> = <q̂, b_K> + <b_Q, k̂ - b_K>: both terms in one einsum.
    halves_q = (q_hat, w.b_q.expand_as(q_hat))
    halves_k = (b_k if keep_row_terms else torch.zeros_like(b_k), kf)
    if rotary is not None:
        # Each half is a whole head vector: rotate them apart, then join.
        halves_q = tuple(rotary.apply(x, positions) for x in halves_q)  # type: ignore[assignment]
        halves_k = tuple(rotary.apply(x, positions) for x in halves_k)  # type: ignore[assignment]
    q_side, k_side = torch.cat(halves_q, dim=-1), torch.cat(halves_k, dim=-1)
    return _scores(q_side, k_side, w.scale)


def masked_scores(
    qk: QKDictionary, f_q: Tensor, f_k: Tensor, pairs: PairTable | None,
    rotary: Rotary | None, positions: Tensor | None = None, include_row_constants: bool = False,
    chunk: int = DEFAULT_CHUNK,
) -> Tensor:  # fmt: skip
    """Scores [batch, n_heads, n, n] of the features f_q [batch, n, d_q] and f_k [batch, n, d_k]
    with each pair term scaled by its mask in `pairs` (absent pairs contribute nothing; None: every
    pair at mask 1, which is the score of the reconstructions q̂, k̂). Future sources are -inf.

    `rotary` is the layer's tables (None: absolute positions) and `positions` [n] or [batch, n]
    the positions to rotate by (default 0..n-1). With absolute positions the terms constant along
    a row are left out unless `include_row_constants` (the pattern is the same either way).

    Sparse: work and memory scale with active features x kept partners x active sources, not
    with d_q x d_k x n_heads x n². `chunk` bounds the elements of any working block; the output
    itself is [batch, n_heads, n, n]. Float32 throughout. [n, d] inputs give [n_heads, n, n]."""
    return _masked_scores(qk, f_q, f_k, pairs, rotary, positions, include_row_constants, chunk)[0]


def masked_and_bias_scores(
    qk: QKDictionary, f_q: Tensor, f_k: Tensor, pairs: PairTable,
    rotary: Rotary | None, positions: Tensor | None = None, chunk: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """masked_scores, and the scores of the bias terms alone (no pair kept: the baseline the
    pairs improve on), from one computation of the bias terms."""
    scores, bias = _masked_scores(qk, f_q, f_k, pairs, rotary, positions, False, chunk, True)
    assert bias is not None
    return scores, bias


def _masked_scores(
    qk: QKDictionary, f_q: Tensor, f_k: Tensor, pairs: PairTable | None,
    rotary: Rotary | None, positions: Tensor | None, include_row_constants: bool, chunk: int,
    keep_bias: bool = False,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """masked_scores, with a copy of the bias terms' scores taken before the pairs are added when
    `keep_bias`."""
    inp = checked_inputs(qk, f_q, f_k, pairs, rotary, positions)
    w, rotary, pos, device = inp.w, inp.rotary, inp.pos, inp.device
    batch, n = inp.f_q.shape[:2]
    with torch.no_grad(), one_thread(device):
        keep_rows = rotary is not None or include_row_constants
        bias = _bias_scores(w, inp.f_q, inp.f_k, rotary, pos, keep_rows, full_pairs=pairs is None)
        full = (batch, w.n_heads, n, n)
        # The bias scores are the output's first layer (rotary: already full size, used in place).
        scores = (
            bias.contiguous()
            if bias.shape == full
            else torch.empty(full, device=device).copy_(bias)
        )
        kept = scores.clone() if keep_bias else None
        if pairs is not None:
            table = prepare_pairs(w, pairs, rotary, chunk)
            for bi in range(batch):
                if rotary is None:
                    _add_absolute_pair_terms(w, inp.f_q[bi], inp.f_k[bi], table, scores[bi], chunk)
                    continue
                flat = scores[bi].view(-1)
                blocks = pair_blocks(
                    w, inp.f_q[bi], inp.f_k[bi], table, rotary, pos[bi], chunk, merge=True
                )
                for blk in blocks:
                    # Sources after dest land in cells the causal mask overwrites below.
                    idx = blk.at[:, None] + blk.src[None, :]
                    flat.scatter_add_(0, idx.view(-1), blk.value.view(-1))
        future = ~causal_mask(n, device=device)
        scores.masked_fill_(future, float("-inf"))
        if kept is not None:
            kept.masked_fill_(future, float("-inf"))
    if inp.squeeze:
        return scores[0], None if kept is None else kept[0]
    return scores, kept


def pattern_from_features(
    qk: QKDictionary, f_q: Tensor, f_k: Tensor, pairs: PairTable | None,
    rotary: Rotary | None, positions: Tensor | None = None, chunk: int = DEFAULT_CHUNK,
) -> Tensor:  # fmt: skip
    """The attention pattern [batch, n_heads, dest, src]: softmax over sources of masked_scores."""
    scores = masked_scores(qk, f_q, f_k, pairs, rotary, positions, chunk=chunk)
    return scores.softmax(dim=-1)
