"""Sparse codes for a fixed dictionary, solved per input at inference time (ITO): matching
pursuit, orthogonal matching pursuit and gradient pursuit (Blumensath & Davies 2008), batched
over tokens, with an optional positivity constraint (GDM progress update #1, 2024, which uses
gradient pursuit to compare SAE dictionaries without their encoders).

Everything runs in *correlation space*: with c0 = D y (each atom's inner product with the input)
and the Gram matrix G = D D^T computed once per dictionary, a step that changes the coefficients
on the chosen set S by delta updates every correlation as c -= delta_S G[S], which costs
tokens x |S| x n_atoms instead of the tokens x n_atoms x d of recomputing D r. The chosen set is
kept as slots per token ([tokens, step] atom ids, values, and whether the slot is on), so nothing
of size [tokens, n_atoms, d] or [tokens, n_atoms, n_atoms] is ever built.

Conventions: D is [n_atoms, d] (an SAE's W_dec); `bias` (an SAE's b_dec) is subtracted from the
input before and added back after; atoms need not be unit norm (selection uses correlation over
norm, coefficients are in the dictionary's own scale). Each token stops early once its residual's
squared norm is below `tol` times its input's. The L0 returned is the true count of non-zero
coefficients, which can be below the target: positivity can clip a chosen atom to zero, matching
pursuit can choose an atom twice, and early stopping stops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["METHODS", "PursuitResult", "gram", "pursue"]

METHODS = ("mp", "omp", "gp")
CHUNK_BUDGET = 16 * 2**20
"""Floats one chunk of tokens may hold in its [tokens, slots, n_atoms] Gram rows (64 MB: as fast
as 256 MB on CPU at L0 16 and 64, measured, and a quarter of the memory)."""


@dataclass
class PursuitResult:
    """Codes of a batch of inputs."""

    code: Tensor
    """[tokens, n_atoms] coefficients (dense; zero off the chosen set)."""
    reconstruction: Tensor
    """[tokens, d] code @ D + bias."""
    l0: Tensor
    """[tokens] non-zero coefficients per token (<= the target)."""
    steps: int
    """Steps run (the target, or fewer when every token stopped early)."""


def gram(dictionary: Tensor) -> Tensor:
    """G = D D^T [n_atoms, n_atoms] in float32 (n_atoms^2 floats: 1 GB at 16k atoms)."""
    d = dictionary.float()
    return d @ d.T


def pursue(
    x: Tensor,
    dictionary: Tensor,
    target_l0: int,
    method: str = "gp",
    positive: bool = True,
    bias: Tensor | None = None,
    tol: float = 0.0,
    G: Tensor | None = None,
    chunk: int | None = None,
) -> PursuitResult:
    """Sparse codes of x [tokens, d] over `dictionary` [n_atoms, d] at `target_l0`.

    method: "mp" (matching pursuit: one atom's coefficient per step, never revisited), "omp"
    (least squares on the chosen set after every step; with positivity, negative coefficients
    are clipped to zero and leave the set: an approximation of non-negative least squares) or "gp"
    (gradient pursuit: a step along the gradient restricted to the chosen set, with the exact
    line-search step size; with positivity, clipped at zero). G: the dictionary's Gram matrix,
    to reuse across calls. chunk: tokens per inner batch (default: what fits CHUNK_BUDGET)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    if x.ndim != 2 or dictionary.ndim != 2 or x.shape[1] != dictionary.shape[1]:
        raise ValueError(
            f"x [tokens, d] and dictionary [n_atoms, d] must share d; got {tuple(x.shape)} and "
            f"{tuple(dictionary.shape)}"
        )
    if target_l0 < 1:
        raise ValueError(f"target_l0 must be >= 1, got {target_l0}")
    D = dictionary.float()
    y = x.float().to(D.device)
    if bias is not None:
        y = y - bias.float().to(D.device)
    G = gram(D) if G is None else G.float().to(D.device)
    n = D.shape[0]
    if chunk is None:
        chunk = max(1, CHUNK_BUDGET // max(1, target_l0 * n))
    codes, l0s, steps = [], [], 0
    for start in range(0, y.shape[0], chunk):
        yc = y[start : start + chunk]
        idx, val, on, ran = _solve(yc, D, G, target_l0, method, positive, tol)
        code = torch.zeros(yc.shape[0], n, device=D.device)
        code.scatter_add_(1, idx, val * on)
        codes.append(code)
        l0s.append((code != 0).sum(-1))
        steps = max(steps, ran)
    code = torch.cat(codes)
    recon = code @ D
    if bias is not None:
        recon = recon + bias.float().to(D.device)
    return PursuitResult(code, recon, torch.cat(l0s), steps)


def _select(c: Tensor, inv_norm: Tensor, positive: bool) -> tuple[Tensor, Tensor]:
    """The atom each token picks next (largest correlation over norm; positive ones only with
    positivity) and whether there is one worth picking."""
    score = c * inv_norm
    if not positive:
        score = score.abs()
    best, j = score.max(-1)
    return j, best > 0


@torch.no_grad()
def _solve(
    y: Tensor, D: Tensor, G: Tensor, target: int, method: str, positive: bool, tol: float
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Slots (atom ids [B, s], values [B, s], on [B, s] float) for one chunk of tokens."""
    B, n = y.shape[0], G.shape[0]
    norms2 = torch.diagonal(G).clamp_min(1e-12)
    inv_norm = norms2.rsqrt()
    c0 = y @ D.T  # [B, n]
    c = c0.clone()
    y2 = y.pow(2).sum(-1)
    r2 = y2.clone()
    live = y2 > 0
    # Slot t holds the atom chosen at step t; allocated once, read as [:, :t + 1] views.
    idx_all = torch.zeros(B, target, dtype=torch.long, device=y.device)
    val_all = torch.zeros(B, target, device=y.device)
    on_all = torch.zeros(B, target, device=y.device)
    rows_all = None if method == "mp" else torch.empty(B, target, n, device=y.device)
    ran = 0
    for t in range(target):
        if not bool(live.any()):
            break
        ran = t + 1
        j, worth = _select(c, inv_norm, positive)
        take = live & worth
        idx_all[:, t] = j
        idx, val, on = idx_all[:, :ran], val_all[:, :ran], on_all[:, :ran]
        if method == "mp":
            # MP may pick an atom again: its coefficient simply grows (another slot, same id).
            a = torch.where(take, c.gather(1, j[:, None])[:, 0] / norms2[j], 0.0)
            val[:, t] = a
            on[:, t] = take.float()
            c -= a[:, None] * G[j]
            r2 = r2 - a.pow(2) * norms2[j]
        else:
            assert rows_all is not None
            again = ((idx[:, :t] == j[:, None]) & (on[:, :t] > 0)).any(1)
            on[:, t] = (take & ~again).float()
            rows_all[:, t] = G[j]
            rows = rows_all[:, :ran]
            step = _omp_step if method == "omp" else _gp_step
            new_val = torch.where(live[:, None], step(c, c0, idx, val, on, rows), val)
            if positive:  # clipped atoms leave the chosen set (and may be chosen again later)
                new_val = new_val.clamp_min(0.0)
                on *= (new_val > 0).float()
            new_val = new_val * on
            c -= torch.einsum("bs,bsn->bn", new_val - val, rows)
            val.copy_(new_val)
            r2 = y2 - 2 * (val * c0.gather(1, idx)).sum(-1) + _quad(val, idx, rows)
        live = live & take & (r2 > tol * y2)
    return idx_all[:, :ran], val_all[:, :ran], on_all[:, :ran], ran


def _gram_ss(idx: Tensor, rows: Tensor) -> Tensor:
    """[B, s, s] Gram matrix of the chosen slots."""
    return rows.gather(2, idx[:, None, :].expand(-1, idx.shape[1], -1))


def _quad(val: Tensor, idx: Tensor, rows: Tensor) -> Tensor:
    """val^T G_SS val per token: the squared norm of the reconstruction (before the bias)."""
    return torch.einsum("bs,bst,bt->b", val, _gram_ss(idx, rows), val)


def _gp_step(c: Tensor, c0: Tensor, idx: Tensor, val: Tensor, on: Tensor, rows: Tensor) -> Tensor:
    """Gradient pursuit: grad = the residual's correlations on the chosen set; step size
    (grad . grad) / (grad^T G_SS grad), the exact minimiser along grad."""
    grad = c.gather(1, idx) * on
    num = grad.pow(2).sum(-1)
    den = _quad(grad, idx, rows).clamp_min(1e-12)
    return val + (num / den)[:, None] * grad


def _omp_step(c: Tensor, c0: Tensor, idx: Tensor, val: Tensor, on: Tensor, rows: Tensor) -> Tensor:
    """Orthogonal matching pursuit: least squares on the chosen set, G_SS v = c0_S (slots that are
    off solve to 0 through an identity row)."""
    s = idx.shape[1]
    eye = torch.eye(s, device=c.device)
    mask = on[:, :, None] * on[:, None, :]
    A = _gram_ss(idx, rows) * mask + eye * (1 - on)[:, None, :] + 1e-6 * eye
    rhs = c0.gather(1, idx) * on
    return torch.linalg.solve(A, rhs[..., None])[..., 0] * on
