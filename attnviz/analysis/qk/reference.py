"""The dense reference for `masked_scores`: every pair, every position, no sparsity, so tests
and benchmarks have an independent answer to check the sparse engine against."""

from __future__ import annotations

import torch
from torch import Tensor

from attnviz.analysis.patterns import causal_mask
from attnviz.analysis.qk._shared import checked_inputs
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKDictionary
from attnviz.models.rotary import Rotary


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
    inp = checked_inputs(qk, f_q, f_k, pairs, rotary, positions)
    w, rotary, pos, device = inp.w, inp.rotary, inp.pos, inp.device
    f_q, f_k = inp.f_q, inp.f_k
    batch, n = f_q.shape[:2]
    with torch.no_grad():
        d_q, d_k = w.dec_q.shape[0], w.dec_k.shape[0]
        if pairs is None:
            mask = torch.ones(d_q, d_k, w.n_heads, device=device)
        else:
            mask = pairs.to(device).to_dense().float()
        keep_rows = rotary is not None or include_row_constants
        out = torch.empty(batch, w.n_heads, n, n, device=device)

        def at_all_positions(rows: Tensor, p: Tensor) -> Tensor:
            """rows [d, d_head] -> [n, d, d_head], row r rotated by each position."""
            grid = rows.expand(p.numel(), *rows.shape)
            return grid if rotary is None else rotary.apply(grid, p)

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
    return out[0] if inp.squeeze else out
