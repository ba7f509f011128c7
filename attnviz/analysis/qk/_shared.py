"""What the sparse engine, the dense reference and the explanations share: the dictionary's
weights in analysis form, one-thread CPU runs, rotation, and the one argument check they all
start with (`checked_inputs`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKDictionary
from attnviz.models.rotary import Rotary

DEFAULT_CHUNK = 1 << 23
"""Elements (float32: 32 MiB) allowed in one working block of the sparse path."""


@dataclass
class Weights:
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


def weights_of(qk: QKDictionary, device: torch.device | None = None) -> Weights:
    c = qk.cfg
    if c.n_heads % c.n_kv_heads:
        raise ValueError(f"{c.n_heads} query heads cannot share {c.n_kv_heads} kv heads evenly")
    # Analysis runs in float32 whatever the dictionary was trained in.
    dec_q = qk.dec_q.detach().float().to(device)
    dec_k = qk.dec_k.detach().float().to(device)
    return Weights(
        dec_q=dec_q, dec_k=dec_k,
        b_q=qk.query.b_out.detach().float().to(device).view(c.n_heads, c.d_head),
        b_k=qk.key.b_out.detach().float().to(device).view(c.n_kv_heads, c.d_head),
        scale=float(c.attn_scale), group=c.n_heads // c.n_kv_heads,
    )  # fmt: skip


@contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
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


def rotate(rotary: Rotary | None, x: Tensor, positions: Tensor) -> Tensor:
    """Rotate x [m, heads, d_head] (or [m, d_head]) row r by position positions[r]."""
    if rotary is None:
        return x
    if x.ndim == 2:
        return rotary.apply(x[:, None], positions)[:, 0]
    return rotary.apply(x, positions)


def check_table(qk: QKDictionary, pairs: PairTable) -> None:
    c = qk.cfg
    want = (c.d_hidden_q, c.d_hidden_k, c.n_heads)
    if tuple(pairs.shape) != want:
        raise ValueError(f"pair table is {tuple(pairs.shape)}, the dictionary needs {want}")


@dataclass
class Inputs:
    """A scoring call's arguments, checked and moved to the activations' device."""

    w: Weights
    f_q: Tensor  # float32 [batch, n, d_q]
    f_k: Tensor  # float32 [batch, n, d_k]
    rotary: Rotary | None
    pos: Tensor  # int64 [batch, n]
    squeeze: bool  # given as [n, d]: drop the batch axis from the result

    @property
    def device(self) -> torch.device:
        return self.f_q.device


def checked_inputs(
    qk: QKDictionary, f_q: Tensor, f_k: Tensor, pairs: PairTable | None,
    rotary: Rotary | None, positions: Tensor | None = None,
) -> Inputs:  # fmt: skip
    """Check activations f_q [batch, n, d_q] / f_k [batch, n, d_k] (or both [n, d]) against the
    dictionary and the pair table, and the positions (int [n] or [batch, n], default 0..n-1)
    against the rotary tables; the weights and tables on the activations' device. Gradients
    through the activations are kept (pair_contributions may be differentiated)."""
    if f_q.ndim != f_k.ndim or f_q.ndim not in (2, 3):
        raise ValueError("f_q and f_k must both be [batch, n, d] (or both [n, d])")
    squeeze = f_q.ndim == 2
    if squeeze:
        f_q, f_k = f_q[None], f_k[None]
    elif f_q.shape[:2] != f_k.shape[:2]:
        raise ValueError(f"f_q {tuple(f_q.shape)} and f_k {tuple(f_k.shape)} differ in batch/n")
    c = qk.cfg
    if f_q.shape[-1] != c.d_hidden_q or f_k.shape[-1] != c.d_hidden_k:
        raise ValueError(
            f"activations are {f_q.shape[-1]} / {f_k.shape[-1]} wide; the dictionary has "
            f"{c.d_hidden_q} query and {c.d_hidden_k} key features"
        )
    if pairs is not None:
        check_table(qk, pairs)
    device = f_q.device
    rotary = rotary.to(device) if rotary is not None else None
    batch, n = f_q.shape[:2]
    if positions is None:
        pos = torch.arange(n, device=device).expand(batch, n)
    else:
        pos = positions.to(device=device, dtype=torch.long).expand(batch, n)
    if rotary is not None and n and int(pos.max()) >= rotary.n_pos:
        raise ValueError(f"rotary tables cover {rotary.n_pos} positions, need {int(pos.max()) + 1}")
    w = weights_of(qk, device)
    return Inputs(w=w, f_q=f_q.float(), f_k=f_k.float(), rotary=rotary, pos=pos, squeeze=squeeze)
