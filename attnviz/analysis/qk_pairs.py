"""Attention scores rebuilt from QK-dictionary features through a sparse pair table (step 2 of
"QK transcoders"), and the tables that explain them.

A query dictionary gives activations f_Q[i, a] at each destination i and a key dictionary f_K[j, b]
at each source j. With q̂_i = Σ_a f_Q[i,a] dec_Q[a] + b_Q and k̂_j = Σ_b f_K[j,b] dec_K[b] + b_K,
head h scores

    s_h(i, j) = Σ_{a,b} m[a,b,h] f_Q[i,a] f_K[j,b] <R_i dec_Q[a,h], R_j dec_K[b,kv(h)]> / scale
              + <R_i (q̂_i - b_Q)_h, R_j b_K,kv(h)> / scale     query features x key bias
              + <R_i b_Q,h,        R_j (k̂_j - b_K)_kv(h)> / scale   query bias x key features
              + <R_i b_Q,h,        R_j b_K,kv(h)> / scale     bias x bias

where R_p rotates by position p (the identity for absolute positions), kv(h) = h // (n_heads /
n_kv_heads) and m[a,b,h] in [0, 1] is the pair table's mask (absent pairs: 0). Only pair terms are
masked. With m = 1 everywhere the sum is <R_i q̂_i, R_j k̂_j> / scale, the reconstruction's score.
With absolute positions the query-features x key-bias and bias x bias terms depend on i alone:
constant along a softmax row, they are left out unless `include_row_constants`.

For rotary models <R_i x, R_j y> depends only on j - i: for each rotated pair (x1, x2), (y1, y2)
turning at frequency θ it is (x1 y1 + x2 y2) cos(θ(j-i)) - (x1 y2 - x2 y1) sin(θ(j-i)) (the sign
checked against Rotary.apply, in both the "half" and the adjacent-pairs layouts).

Pure functions: tensors in, tensors / DataFrames out. Shapes: f_q [batch, n, d_q], f_k
[batch, n, d_k]; scores [batch, n_heads, dest, src].
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.patterns import causal_mask, expand_kv_heads
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKDictionary
from attnviz.models.rotary import Rotary

DEFAULT_CHUNK = 1 << 23
"""Elements (float32: 32 MiB) allowed in one working block of the sparse path."""

ROW_KINDS = ("pair", "other_pairs", "query_x_key_bias", "query_bias_x_key", "bias_x_bias")
"""The `kind` of each row decompose_score returns, in display order."""


# ---- weights and small helpers ---------------------------------------------------------------


@dataclass
class _Weights:
    dec_q: Tensor  # [d_q, n_heads, d_head]
    dec_k: Tensor  # [d_k, n_kv_heads, d_head]
    b_q: Tensor  # [n_heads, d_head]
    b_k: Tensor  # [n_kv_heads, d_head]
    scale: float
    group: int  # query heads per kv head

    @property
    def n_heads(self) -> int:
        return self.dec_q.shape[1]

    @property
    def n_kv(self) -> int:
        return self.dec_k.shape[1]

    @property
    def d_head(self) -> int:
        return self.dec_q.shape[2]


def _weights(qk: QKDictionary, device: torch.device | None = None) -> _Weights:
    c = qk.cfg
    if c.n_heads % c.n_kv_heads:
        raise ValueError(f"{c.n_heads} query heads cannot share {c.n_kv_heads} kv heads evenly")
    # Analysis runs in float32 whatever the dictionary was trained in.
    dec_q = qk.dec_q.detach().float().to(device)
    dec_k = qk.dec_k.detach().float().to(device)
    return _Weights(
        dec_q=dec_q, dec_k=dec_k,
        b_q=qk.query.b_out.detach().float().to(device).view(c.n_heads, c.d_head),
        b_k=qk.key.b_out.detach().float().to(device).view(c.n_kv_heads, c.d_head),
        scale=float(c.attn_scale), group=c.n_heads // c.n_kv_heads,
    )  # fmt: skip


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run on one CPU thread (restoring the count after). The sparse path is thousands of small
    ops, which intra-op threads do not speed up; on shared cores (notebook servers, CI) each
    parallel region can instead wait milliseconds for a descheduled worker. Measured on 2 busy
    cores: 15 ms for a 600 x 64 x 20 matmul (60x one thread's time), 77 s instead of 5 s for
    masked_scores at n = 2048."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rotate(rotary: Rotary | None, x: Tensor, positions: Tensor) -> Tensor:
    """Rotate x [m, heads, d_head] (or [m, d_head]) row r by position positions[r]."""
    if rotary is None:
        return x
    if x.ndim == 2:
        return rotary.apply(x[:, None], positions)[:, 0]
    return rotary.apply(x, positions)


def _batched(f_q: Tensor, f_k: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Accept [n, d] inputs as a batch of one; say whether to drop the batch axis again."""
    if f_q.ndim != f_k.ndim or f_q.ndim not in (2, 3):
        raise ValueError("f_q and f_k must both be [batch, n, d] (or both [n, d])")
    if f_q.ndim == 2:
        return f_q[None], f_k[None], True
    if f_q.shape[:2] != f_k.shape[:2]:
        raise ValueError(f"f_q {tuple(f_q.shape)} and f_k {tuple(f_k.shape)} differ in batch/n")
    return f_q, f_k, False


def _check_widths(qk: QKDictionary, f_q: Tensor, f_k: Tensor) -> None:
    c = qk.cfg
    if f_q.shape[-1] != c.d_hidden_q or f_k.shape[-1] != c.d_hidden_k:
        raise ValueError(
            f"activations are {f_q.shape[-1]} / {f_k.shape[-1]} wide; the dictionary has "
            f"{c.d_hidden_q} query and {c.d_hidden_k} key features"
        )


def _positions(
    positions: Tensor | None, batch: int, n: int, rotary: Rotary | None, device: torch.device
) -> Tensor:
    """Rotary positions as int64 [batch, n] (default 0..n-1)."""
    if positions is None:
        pos = torch.arange(n, device=device).expand(batch, n)
    else:
        pos = positions.to(device=device, dtype=torch.long).expand(batch, n)
    if rotary is not None and n and int(pos.max()) >= rotary.n_pos:
        raise ValueError(f"rotary tables cover {rotary.n_pos} positions, need {int(pos.max()) + 1}")
    return pos


def _check_table(qk: QKDictionary, pairs: PairTable) -> None:
    c = qk.cfg
    want = (c.d_hidden_q, c.d_hidden_k, c.n_heads)
    if tuple(pairs.shape) != want:
        raise ValueError(f"pair table is {tuple(pairs.shape)}, the dictionary needs {want}")


# ---- feature maps ----------------------------------------------------------------------------


def feature_map(
    qk: QKDictionary, head: int | None = None, rotary: Rotary | None = None, offset: int = 0
) -> Tensor:
    """<R dec_Q[a,h], R' dec_K[b,kv(h)]> / attn_scale: [d_q, d_k, n_heads], or [d_q, d_k] for one
    head. Unmasked and with unit activations.

    Without rotation (absolute positions, or offset 0) this is the whole position-free map. For a
    rotary model, `offset` = dest - src gives the map at that distance (computed as dest position
    `offset`, source 0; the rotary tables must cover `offset`)."""
    w = _weights(qk)
    dq, dk = w.dec_q, w.dec_k
    if rotary is not None and offset:
        if not 0 <= offset < rotary.n_pos:
            raise ValueError(
                f"offset {offset} is outside the rotary tables (0..{rotary.n_pos - 1})"
            )
        rotary = rotary.to(dq.device) if rotary is not None else None
        dq = _rotate(rotary, dq, torch.full((dq.shape[0],), offset, device=dq.device))
        dk = _rotate(rotary, dk, torch.zeros(dk.shape[0], dtype=torch.long, device=dk.device))
    dk = expand_kv_heads(dk, w.n_heads)
    if head is not None:
        return dq[:, head] @ dk[:, head].T / w.scale
    return torch.einsum("ahd,bhd->abh", dq, dk) / w.scale


def key_bias_term(qk: QKDictionary) -> Tensor:
    """<b_Q[h], dec_K[b,kv(h)]> / attn_scale: [d_k, n_heads], what one unit of key feature b adds
    to head h's score through the query bias (offset 0)."""
    w = _weights(qk)
    return torch.einsum("hd,bhd->bh", w.b_q, expand_kv_heads(w.dec_k, w.n_heads)) / w.scale


def query_bias_term(qk: QKDictionary) -> Tensor:
    """<dec_Q[a,h], b_K[kv(h)]> / attn_scale: [d_q, n_heads] (offset 0). With absolute positions
    this is constant along a softmax row."""
    w = _weights(qk)
    return torch.einsum("ahd,hd->ah", w.dec_q, expand_kv_heads(w.b_k[None], w.n_heads)[0]) / w.scale


# ---- the sparse path -------------------------------------------------------------------------


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


def _map_values(w: _Weights, q: Tensor, k: Tensor, head: Tensor, chunk: int) -> Tensor:
    """<dec_Q[q,h], dec_K[k,kv(h)]> (unscaled, unrotated) for listed pairs, in bounded blocks."""
    out = torch.empty(q.numel(), device=q.device)
    step = max(1, chunk // max(1, w.d_head))
    for s in range(0, q.numel(), step):
        sl = slice(s, s + step)
        qv = w.dec_q[q[sl], head[sl]]
        kv = w.dec_k[k[sl], head[sl] // w.group]
        out[sl] = (qv * kv).sum(-1)
    return out


def _prepare(w: _Weights, pairs: PairTable, rotary: Rotary | None, chunk: int) -> _Pairs:
    device = w.dec_q.device
    q, k, head = (t.to(device=device, dtype=torch.long) for t in (pairs.q, pairs.k, pairs.head))
    value = pairs.value.to(device=device, dtype=torch.float32)
    unit = k * w.n_kv + head // w.group
    with _one_thread(device):  # a parallel sort of this size stalls on busy shared cores
        order = torch.argsort(unit, stable=True)
    weight = value / w.scale
    if rotary is None:
        # Without rotation the dot product is one number per pair: fold it in now.
        weight = weight * _map_values(w, q, k, head, chunk)
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


def _pair_blocks(
    w: _Weights, f_q: Tensor, f_k: Tensor, table: _Pairs, rotary: Rotary | None,
    positions: Tensor, chunk: int, causal: bool = True, merge: bool = False,
) -> Iterator[PairBlock]:  # fmt: skip
    """_blocks on one CPU thread (see _one_thread), restored when the iteration ends."""
    with _one_thread(f_q.device):
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
    w: _Weights, f_q: Tensor, f_k: Tensor, table: _Pairs, rotary: Rotary | None,
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
        rk = _rotate(rotary, w.dec_k[keys.feat], positions[kpos]) * kval[:, None, None]
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
            rq = _rotate(rotary, w.dec_q[queries.feat], dest_pos).reshape(-1, D)  # [act*H, D]
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
    w: _Weights, f_q: Tensor, f_k: Tensor, table: _Pairs, out: Tensor, chunk: int
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
    torch runs on one thread (see _one_thread)."""
    if f_q.ndim != 2 or f_k.ndim != 2:
        raise ValueError("pair_contributions takes one sequence: f_q [n, d_q], f_k [n, d_k]")
    _check_widths(qk, f_q, f_k)
    _check_table(qk, pairs)
    device = f_q.device
    # No torch.no_grad() here: it would stay on in the caller's code between blocks. The
    # weights are detached, so blocks carry no graph unless the activations do.
    w = _weights(qk, device)
    rotary = rotary.to(device) if rotary is not None else None
    pos = _positions(positions, 1, f_q.shape[0], rotary, device)[0]
    table = _prepare(w, pairs, rotary, chunk)
    yield from _pair_blocks(w, f_q.float(), f_k.float(), table, rotary, pos, chunk, causal)


def _scores(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """Unmasked scores [batch, n_heads, n, n] of q [b, n, h, d] and k [b, n, h_kv, d], divided in
    place (one n x n buffer, not two)."""
    k = expand_kv_heads(k, q.shape[-2])
    # matmul (unlike einsum) hands back a contiguous result, which the scatter needs.
    return torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)).div_(scale)


def _bias_scores(
    w: _Weights, f_q: Tensor, f_k: Tensor, rotary: Rotary | None, positions: Tensor,
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
    f_q, f_k, squeeze = _batched(f_q, f_k)
    _check_widths(qk, f_q, f_k)
    device = f_q.device
    with torch.no_grad(), _one_thread(device):
        w = _weights(qk, device)
        rotary = rotary.to(device) if rotary is not None else None
        f_q, f_k = f_q.float(), f_k.float()
        batch, n = f_q.shape[:2]
        pos = _positions(positions, batch, n, rotary, device)
        keep_rows = rotary is not None or include_row_constants
        bias = _bias_scores(w, f_q, f_k, rotary, pos, keep_rows, full_pairs=pairs is None)
        full = (batch, w.n_heads, n, n)
        # The bias scores are the output's first layer (rotary: already full size, used in place).
        scores = (
            bias.contiguous()
            if bias.shape == full
            else torch.empty(full, device=device).copy_(bias)
        )
        if pairs is not None:
            _check_table(qk, pairs)
            table = _prepare(w, pairs, rotary, chunk)
            for bi in range(batch):
                if rotary is None:
                    _add_absolute_pair_terms(w, f_q[bi], f_k[bi], table, scores[bi], chunk)
                    continue
                flat = scores[bi].view(-1)
                blocks = _pair_blocks(
                    w, f_q[bi], f_k[bi], table, rotary, pos[bi], chunk, merge=True
                )
                for blk in blocks:
                    # Sources after dest land in cells the causal mask overwrites below.
                    idx = blk.at[:, None] + blk.src[None, :]
                    flat.scatter_add_(0, idx.view(-1), blk.value.view(-1))
        scores.masked_fill_(~causal_mask(n, device=device), float("-inf"))
    return scores[0] if squeeze else scores


def pattern_from_features(
    qk: QKDictionary, f_q: Tensor, f_k: Tensor, pairs: PairTable | None,
    rotary: Rotary | None, positions: Tensor | None = None, chunk: int = DEFAULT_CHUNK,
) -> Tensor:  # fmt: skip
    """The attention pattern [batch, n_heads, dest, src]: softmax over sources of masked_scores."""
    scores = masked_scores(qk, f_q, f_k, pairs, rotary, positions, chunk=chunk)
    return scores.softmax(dim=-1)


# ---- the dense reference ---------------------------------------------------------------------


def dense_masked_scores(
    qk: QKDictionary, f_q: Tensor, f_k: Tensor, pairs: PairTable | None,
    rotary: Rotary | None, positions: Tensor | None = None, include_row_constants: bool = False,
) -> Tensor:  # fmt: skip
    """masked_scores the straightforward way, for tests and benchmarks on small sizes.

    Ignores all sparsity: the mask is a dense [d_q, d_k, n_heads] tensor, every decoder row is
    rotated at every position, and for each head the masked query side
    T[i, b, :] = Σ_a f_Q[i,a] m[a,b,h] R_i dec_Q[a,h] is built for all (i, b) before meeting
    f_K[j,b] R_j dec_K[b,kv(h)]. Work ~ n·d_q·d_k·d_head per head; largest intermediates
    [n, d_q, d_head] and [n, d_k, d_head] per head."""
    f_q, f_k, squeeze = _batched(f_q, f_k)
    _check_widths(qk, f_q, f_k)
    device = f_q.device
    with torch.no_grad():
        w = _weights(qk, device)
        rotary = rotary.to(device) if rotary is not None else None
        f_q, f_k = f_q.float(), f_k.float()
        batch, n = f_q.shape[:2]
        pos = _positions(positions, batch, n, rotary, device)
        d_q, d_k = w.dec_q.shape[0], w.dec_k.shape[0]
        if pairs is None:
            mask = torch.ones(d_q, d_k, w.n_heads, device=device)
        else:
            _check_table(qk, pairs)
            mask = pairs.to(device).to_dense().float()
        keep_rows = rotary is not None or include_row_constants
        out = torch.empty(batch, w.n_heads, n, n, device=device)

        def at_all_positions(rows: Tensor, p: Tensor) -> Tensor:
            """rows [d, d_head] -> [n, d, d_head], row r rotated by each position."""
            x = rows.expand(p.numel(), *rows.shape)
            return x if rotary is None else rotary.apply(x, p)

        for bi in range(batch):
            p = pos[bi]
            for h in range(w.n_heads):
                g = h // w.group
                q_rot = f_q[bi][:, :, None] * at_all_positions(w.dec_q[:, h], p)  # [n, d_q, D]
                k_rot = f_k[bi][:, :, None] * at_all_positions(w.dec_k[:, g], p)  # [n, d_k, D]
                t = torch.einsum("iad,ab->ibd", q_rot, mask[:, :, h])
                pair_terms = torch.einsum("ibd,jbd->ij", t, k_rot)
                # The bias terms, one by one.
                qf = q_rot.sum(1)  # R_i (q̂_i - b_Q)_h: rotation is linear
                kf = k_rot.sum(1)
                bq = at_all_positions(w.b_q[h][None], p)[:, 0]  # [n, D]
                bk = at_all_positions(w.b_k[g][None], p)[:, 0]
                total = pair_terms + bq @ kf.T
                if keep_rows:
                    total = total + qf @ bk.T + bq @ bk.T
                out[bi, h] = total / w.scale
        out.masked_fill_(~causal_mask(n, device=device), float("-inf"))
    return out[0] if squeeze else out


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
    device = f_q_i.device
    with torch.no_grad(), _one_thread(device):
        w = _weights(qk, device)
        rotary = rotary.to(device) if rotary is not None else None
        g = head // w.group
        f_q_i, f_k_j = f_q_i.float(), f_k_j.float()
        a = f_q_i.nonzero()[:, 0]
        b = f_k_j.nonzero()[:, 0]
        at_dest = torch.tensor([dest], device=device)
        at_src = torch.tensor([src], device=device)

        def rot(x: Tensor, at: Tensor) -> Tensor:  # x [m, D] rotated to one position
            return _rotate(rotary, x, at.expand(x.shape[0]))

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
    f_q, f_k, _ = _batched(f_q, f_k)
    _check_widths(qk, f_q, f_k)
    device = f_q.device
    with torch.no_grad(), _one_thread(device):
        w = _weights(qk, device)
        rotary = rotary.to(device) if rotary is not None else None
        if pairs is None:
            c = qk.cfg
            pairs = PairTable.full(c.d_hidden_q, c.d_hidden_k, c.n_heads)
        _check_table(qk, pairs)
        f_q, f_k = f_q.float(), f_k.float()
        batch, n = f_q.shape[:2]
        pos = _positions(positions, batch, n, rotary, device)
        table = _prepare(w, pairs, rotary, chunk)
        nnz = pairs.nnz
        total = torch.zeros(nnz, dtype=torch.float64, device=device)
        signed = torch.zeros(nnz, dtype=torch.float64, device=device)
        count = torch.zeros(nnz, dtype=torch.long, device=device)
        for bi in range(batch):
            blocks = _pair_blocks(w, f_q[bi], f_k[bi], table, rotary, pos[bi], chunk, causal)
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
        map_weight = _map_values(w, q, k, head, chunk) / w.scale
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
