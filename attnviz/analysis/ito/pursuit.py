"""Sparse codes for a fixed dictionary, solved per input at inference time (ITO): matching
pursuit, orthogonal matching pursuit and gradient pursuit (Blumensath & Davies 2008), batched
over tokens, with an optional positivity constraint (GDM progress update #1, 2024, which uses
gradient pursuit to compare SAE dictionaries without their encoders).

Everything runs in *correlation space*: with c0 = U y (each unit atom's inner product with the
input; U is D with its rows scaled to unit norm) and the Gram matrix G = U U^T computed once per
dictionary, a step that changes the coefficients on the chosen set S by delta updates every
correlation as c -= delta_S G[S], which costs tokens x |S| x n_atoms instead of the
tokens x n_atoms x d of recomputing D r. That sum is an
embedding bag over G's rows: G stays in the CPU's cache where a [tokens, |S|, n_atoms] copy of
its rows would stream through memory. The chosen set is kept as slots per token ([tokens, step]
atom ids, values, whether the slot is on, and their [tokens, step, step] Gram matrix, a row a
step), so nothing of size [tokens, n_atoms, d] or [tokens, n_atoms, n_atoms] is ever built.

Conventions: D is [n_atoms, d] (an SAE's W_dec); `bias` (an SAE's b_dec) is subtracted from the
input before and added back after; atoms need not be unit norm: selection uses correlation over
norm and coefficients come back in the dictionary's own scale, but the work is done on the atoms
scaled to unit norm (correlations that need no division a step), with gradient pursuit's
gradient weighted by the squared norms so that its steps are those of the unscaled problem.
Each token stops early once its residual's squared norm is below `tol` times its input's, or below
`atol` itself (then, under a cap, each token takes the atoms it needs). The L0
returned is the true count of non-zero coefficients, which can be below the target: positivity
can clip a chosen atom to zero, matching pursuit can choose an atom twice, and early stopping
stops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["METHODS", "PursuitResult", "atol_for_mean_l0", "gram", "pursue"]

METHODS = ("mp", "omp", "gp")
CHUNK_BUDGET = 12 * 2**20
"""Floats one chunk of tokens may hold in its [tokens, n_atoms] working arrays (48 MB: chunks of
~1,000 tokens at 2,048 atoms ran 15-20% faster than of 2,048, whose arrays leave the cache)."""
_ARRAYS_PER_CHUNK = 5
"""[tokens, n_atoms] arrays a chunk holds at once: c0, c, a step's update, the code, and slack
for the selection's temporaries."""
FIRST_SLOTS = 32
"""Slots a token starts with (they double when a step needs more): with early stopping most
tokens stop before, and the wide slots are made only for the tokens still running."""
SLOT_BUDGET = 64 * 2**20
"""Floats a chunk's slots may reach if none of its tokens stops early (256 MB)."""


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
    """The Gram matrix pursuit works with: of the atoms scaled to unit norm, U U^T [n_atoms,
    n_atoms] in float32 (n_atoms^2 floats: 1 GB at 16k atoms), to compute once per dictionary and
    pass to every `pursue` call. (A plain D D^T is accepted too, at the cost of a scaled copy a
    call.)"""
    u = _unit(dictionary.float())[0]
    return u @ u.T


def _unit(D: Tensor) -> tuple[Tensor, Tensor | None]:
    """The atoms scaled to unit norm (a dead, all-zero atom stays zero) and their squared norms
    (None when every atom already is unit or dead: then D itself)."""
    norms2 = D.pow(2).sum(-1)
    dead = norms2 < 1e-12
    if bool((((norms2 - 1).abs() < 1e-5) | dead).all()):
        return D, None
    return D * _inv_norm(norms2)[:, None], norms2


def _inv_norm(norms2: Tensor) -> Tensor:
    """1 / |atom|, 0 for a dead atom."""
    return torch.where(norms2 < 1e-12, 0.0, norms2.clamp_min(1e-12).rsqrt())


def _unit_gram(G: Tensor, U: Tensor, norms2: Tensor | None) -> Tensor:
    """`G` as the unit atoms' Gram matrix U U^T: as it is when it is one (its diagonal is the unit
    atoms' squared norms: 1, or 0 where dead), else, for the dictionary's own D D^T, scaled (a
    copy a call)."""
    n = U.shape[0]
    if G.shape != (n, n):
        raise ValueError(f"G must be the dictionary's [{n}, {n}] Gram matrix, got {tuple(G.shape)}")
    diag = torch.diagonal(G)
    if bool(((diag - U.pow(2).sum(-1)).abs() < 1e-5).all()):
        return G
    if norms2 is None or not torch.allclose(diag, norms2, rtol=1e-4, atol=1e-6):
        raise ValueError("G is not this dictionary's Gram matrix: pass gram(dictionary)")
    inv = _inv_norm(norms2)
    return G * inv[:, None] * inv[None, :]


@torch.no_grad()
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
    atol: float = 0.0,
) -> PursuitResult:
    """Sparse codes of x [tokens, d] over `dictionary` [n_atoms, d] at `target_l0`.

    method: "mp" (matching pursuit: one atom's coefficient per step, never revisited), "omp"
    (least squares on the chosen set after every step; with positivity, negative coefficients
    are clipped to zero and leave the set: an approximation of non-negative least squares) or "gp"
    (gradient pursuit: a step along the gradient restricted to the chosen set, with the exact
    line-search step size; with positivity, clipped at zero). G: `gram(dictionary)`, to reuse
    across calls (a plain D D^T is accepted, scaled in a copy each call). tol: a token stops once
    its residual's squared norm is below tol times its input's (0: it stops only when no atom
    correlates with its residual, or at the target). atol: a token also stops once that squared
    norm is below atol itself (in the input's units): with a high target_l0 as a cap, each token
    then takes the atoms it needs, a few where one or two atoms explain it and many where it is
    large (`atol_for_mean_l0` finds the atol of a given mean L0). chunk: tokens per inner batch
    (default: what fits CHUNK_BUDGET)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    if x.ndim != 2 or dictionary.ndim != 2 or x.shape[1] != dictionary.shape[1]:
        raise ValueError(
            f"x [tokens, d] and dictionary [n_atoms, d] must share d; got {tuple(x.shape)} and "
            f"{tuple(dictionary.shape)}"
        )
    if target_l0 < 1:
        raise ValueError(f"target_l0 must be >= 1, got {target_l0}")
    if tol < 0 or atol < 0:
        raise ValueError(f"tol and atol are squared norms' bounds, >= 0; got {tol} and {atol}")
    D, norms2 = _unit(dictionary.float())
    y = x.float().to(D.device)
    if bias is not None:
        y = y - bias.float().to(D.device)
    n = D.shape[0]
    G = D @ D.T if G is None else _unit_gram(G.float().to(D.device), D, norms2)
    if chunk is None:  # the most the budget allows, then evened out over the chunks
        first = min(target_l0, FIRST_SLOTS)
        most = min(CHUNK_BUDGET // (_ARRAYS_PER_CHUNK * n + 2 * first * first),
                   SLOT_BUDGET // (2 * target_l0 * target_l0))  # fmt: skip
        most = max(1, most)
        chunk = -(-y.shape[0] // -(-y.shape[0] // most)) if y.shape[0] else 1
    code = torch.zeros(y.shape[0], n, device=D.device)
    recon = torch.empty_like(y)
    l0 = torch.zeros(y.shape[0], dtype=torch.long, device=D.device)
    inv_norm = None if norms2 is None else _inv_norm(norms2)
    steps = 0
    for start in range(0, y.shape[0], chunk):
        part = slice(start, start + chunk)
        idx, val, on, ran = _solve(y[part], D, G, norms2, target_l0, method, positive, tol, atol)
        # back to the dictionary's own scale: a unit atom's coefficient over the atom's norm
        scale = on if inv_norm is None else on * inv_norm[idx]
        code[part].scatter_add_(1, idx, val * scale)
        if method == "mp":  # MP's slots can repeat an atom: count the code's non-zeros
            l0[part] = (code[part] != 0).sum(-1)
        else:  # an atom holds one slot that is on at most: count the slots left non-zero
            l0[part] = ((val * scale) != 0).sum(-1)
        # code @ D from the chosen atoms alone: tokens x L0 x d, not tokens x n_atoms x d
        if ran:
            recon[part] = F.embedding_bag(idx, D, per_sample_weights=val * on, mode="sum")
        else:  # every input of the chunk is zero (after the bias): nothing was chosen
            recon[part] = 0.0
        steps = max(steps, ran)
    if bias is not None:
        recon = recon + bias.float().to(D.device)
    return PursuitResult(code, recon, l0, steps)


def atol_for_mean_l0(
    x: Tensor,
    dictionary: Tensor,
    mean_l0: float,
    max_l0: int,
    method: str = "gp",
    positive: bool = True,
    bias: Tensor | None = None,
    G: Tensor | None = None,
    rounds: int = 20,
) -> float:
    """The `atol` at which `pursue(x, dictionary, max_l0, atol=...)` has mean L0 at most
    `mean_l0` on x (pass a sample of the tokens to code: the mean holds on others only
    statistically), bisected in log scale from the largest squared input norm (where nothing is
    coded) down to 1e-3 of the smallest. The adaptive counterpart of a fixed target: the same
    atoms on average, spent where the residual is largest."""
    if not 0 < mean_l0 <= max_l0:
        raise ValueError(f"mean_l0 must be in (0, max_l0 = {max_l0}], got {mean_l0}")
    y = x.float() - (0 if bias is None else bias.float())
    y2 = y.pow(2).sum(-1)
    if not bool((y2 > 0).any()):
        raise ValueError("every input equals the bias: there is nothing to code, so no atol")
    hi = float(y2.max())
    lo = max(float(y2[y2 > 0].min()), hi * 1e-9) * 1e-3
    if G is None:
        G = gram(dictionary)
    # invariant: the mean L0 at hi is <= mean_l0 (at the start nothing is coded); the answer is
    # the smallest such atol found, which may stay at lo when even lo keeps the mean below
    for _ in range(rounds):
        mid = (lo * hi) ** 0.5
        out = pursue(x, dictionary, max_l0, method, positive, bias, G=G, atol=mid)
        if float(out.l0.float().mean()) > mean_l0:
            lo = mid
        else:
            hi = mid
    return hi


def _select(c: Tensor, positive: bool) -> tuple[Tensor, Tensor]:
    """The atom each token picks next (largest correlation with a unit atom; positive ones only
    with positivity) and whether there is one worth picking."""
    best, j = _argmax(c, signed=not positive)
    return j, best > 0


def _argmax(score: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    """(max, argmax) over the last dim of `score`, of |score| where `signed`. Through blocks: a
    max with its index runs ~10x slower on CPU than a max alone, so the max of each block of
    atoms first, then the index inside the winning block (3x faster at 2048 atoms, measured)."""
    B, n = score.shape
    block = next((b for b in (64, 32, 16) if n % b == 0 and n >= 4 * b), None)
    if block is None:
        return (score.abs() if signed else score).max(-1)
    blocks = score.view(B, n // block, block)
    top = blocks.amax(-1)
    if signed:
        top = torch.maximum(top, -blocks.amin(-1))
    best, which = top.max(-1)
    inside = blocks[torch.arange(B, device=score.device), which]
    return best, which * block + (inside.abs() if signed else inside).argmax(-1)


@torch.no_grad()
def _solve(
    y: Tensor,
    D: Tensor,
    G: Tensor,
    norms2: Tensor | None,
    target: int,
    method: str,
    positive: bool,
    tol: float,
    atol: float,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Slots (atom ids [B, s], values [B, s] on the unit atoms D, on [B, s] float) for one chunk
    of tokens. norms2: the original atoms' squared norms (None: they were unit), which weight
    gradient pursuit's gradient.

    The working arrays hold only the tokens still running: once half of them have stopped, the
    stopped ones' slots are written out and the rest are packed together, so with early stopping
    a step costs what its live tokens need (a few tokens that need many atoms no longer keep a
    whole chunk running). The slots start `FIRST_SLOTS` wide and double when a step needs more,
    which by then is usually on fewer tokens."""
    B = y.shape[0]
    out: list[Tensor] = []  # the whole chunk's slots, made when its rows are first packed
    rows = torch.arange(B, device=y.device)  # the chunk's row of each working row
    c0 = y @ D.T  # [B, n]
    c = c0  # MP updates it in place (it never reads c0); OMP and GP's first update makes c anew
    y2 = y.pow(2).sum(-1)
    r2 = y2.clone()
    stop_at = (tol * y2).clamp_min(atol)  # a token stops once its residual's r2 is below this
    live = y2 > stop_at
    reads_r2 = tol > 0 or atol > 0
    # Slot t holds the atom chosen at step t; read as [:, :t + 1] views. The chosen slots' Gram
    # matrix gains one row and column a step.
    width = min(target, FIRST_SLOTS)
    slots = [torch.zeros(B, width, dtype=torch.long, device=y.device),
             torch.zeros(B, width, device=y.device), torch.zeros(B, width, device=y.device)]  # fmt: skip
    # Signed OMP never drops an atom, so its least squares grow by one row a step (a row of an
    # inverse Cholesky factor); positivity can drop one, and re-solves instead.
    chol = _GrowingCholesky(B, width, y.device) if method == "omp" and not positive else None
    # G_SS: for GP, positive OMP and the residual's norm (signed OMP's factor needs only rows)
    gss_all = None
    if method != "mp" and (chol is None or reads_r2):
        gss_all = torch.zeros(B, width, width, device=y.device)
    # Past this many chosen atoms a fresh D r is cheaper than summing |S| rows of G (measured)
    via_residual = max(8, D.shape[1] // 8)

    def write_out() -> None:
        if not out:
            out.extend(a.new_zeros(B, target) for a in slots)
        for whole, part in zip(out, slots, strict=True):
            whole[rows, :ran] = part[:, :ran]

    ran = 0
    for t in range(target):
        n_live = int(live.sum())
        if n_live == 0:
            break
        if n_live <= rows.shape[0] // 2:  # pack the live tokens together
            write_out()
            keep = live.nonzero()[:, 0]
            rows, y, y2, r2, stop_at, live = (a[keep] for a in (rows, y, y2, r2, stop_at, live))
            if c is c0:  # MP always (it updates c0 in place), OMP and GP before their first step
                c = c0 = c0[keep]
            else:
                c, c0 = c[keep], c0[keep]
            slots = [a[keep] for a in slots]
            gss_all = None if gss_all is None else gss_all[keep]
            if chol is not None:
                chol.keep(keep)
        if t == width:  # the slots are full: double them
            width = min(target, 2 * width)
            slots = [_widen(a, width) for a in slots]
            gss_all = None if gss_all is None else _widen(_widen(gss_all, width), width, dim=1)
            if chol is not None:
                chol.widen(width)
        ran = t + 1
        j, worth = _select(c, positive)
        take = live & worth
        slots[0][:, t] = j
        idx, val, on = (a[:, :ran] for a in slots)
        if method == "mp":
            # MP may pick an atom again: its coefficient simply grows (another slot, same id).
            a = torch.where(take, c.gather(1, j[:, None])[:, 0], 0.0)
            val[:, t] = a
            on[:, t] = take.float()
            if t < target - 1:  # the last step's correlations would never be read
                c.addcmul_(G.index_select(0, j), a[:, None], value=-1.0)
            if reads_r2:  # the residual's norm is read only to stop early
                r2 = r2 - a.pow(2)
        else:
            g_new = G[j[:, None], idx]  # [B, t + 1]: the new atom against every chosen one
            gss = torch.empty(0)  # stays unread by signed OMP, whose factor keeps its own
            if gss_all is not None:
                gss_all[:, t, :ran] = g_new
                gss_all[:, :t, t] = g_new[:, :t]
                gss = gss_all[:, :ran, :ran]
            again = ((idx[:, :t] == j[:, None]) & (on[:, :t] > 0)).any(1)
            on[:, t] = (take & ~again).float()
            if chol is not None:
                solved = chol.add(g_new, c0.gather(1, j[:, None])[:, 0], on)
            elif method == "omp":
                solved = _omp_step(c0, idx, on, gss)
            else:
                solved = _gp_step(c, idx, val, on, gss, None if norms2 is None else norms2[idx])
            new_val = torch.where(live[:, None], solved, val)
            if positive:  # clipped atoms leave the chosen set (and may be chosen again later)
                new_val = new_val.clamp_min(0.0)
                on *= (new_val > 0).float()
            new_val = new_val * on
            # c -= (new - old)_S G[S], summed straight from G's rows (no [B, s, n] copy of them);
            # past `via_residual` atoms, c = D (y - D_S^T new_S) instead. The last step's
            # correlations would never be read.
            if t < target - 1:
                if ran > via_residual:
                    recon = F.embedding_bag(idx, D, per_sample_weights=new_val, mode="sum")
                    c = (y - recon) @ D.T
                else:
                    update = F.embedding_bag(idx, G, per_sample_weights=new_val - val, mode="sum")
                    c = c0 - update if c is c0 else c.sub_(update)
            val.copy_(new_val)
            if reads_r2:  # the residual's norm is read only to stop early
                r2 = y2 - 2 * (val * c0.gather(1, idx)).sum(-1) + _quad(val, gss)
        live = live & take & (r2 > stop_at) if reads_r2 else live & take
    if out:  # some rows were packed away: the last ones join them
        write_out()
    else:
        out = slots
    return out[0][:, :ran], out[1][:, :ran], out[2][:, :ran], ran


def _widen(a: Tensor, width: int, dim: int = -1) -> Tensor:
    """`a` padded with zeros along `dim` to `width`."""
    pad = list(a.shape)
    pad[dim] = width - a.shape[dim]
    return torch.cat([a, a.new_zeros(pad)], dim=dim)


class _GrowingCholesky:
    """Least squares on a chosen set that only grows: L L^T = G_SS (+ 1e-6 I, as _omp_step; the
    atoms being unit, the regulariser is relative to their scale), kept as M = L^-1, with
    z = M c0_S, from step to step, so adding an atom costs a row of M and the coefficients
    v = M^T z gain a multiple of that row: s^2 a step where a fresh solve is s^3 (and batched
    products run ~5x faster than batched triangular solves on CPU).
    An off slot (an atom already chosen, or a token that has stopped) gets an identity row and
    solves to 0."""

    def __init__(self, B: int, target: int, device: torch.device):
        self.M = torch.zeros(B, target, target, device=device)
        self.z = torch.zeros(B, target, device=device)
        self.v = torch.zeros(B, target, device=device)

    def keep(self, rows: Tensor) -> None:
        """Only these tokens go on."""
        self.M, self.z, self.v = self.M[rows], self.z[rows], self.v[rows]

    def widen(self, width: int) -> None:
        """Room for `width` atoms."""
        self.M = _widen(_widen(self.M, width), width, dim=1)
        self.z, self.v = _widen(self.z, width), _widen(self.v, width)

    def add(self, g_new: Tensor, rhs_new: Tensor, on: Tensor) -> Tensor:
        """g_new [B, t + 1]: the new atom against the chosen ones and itself; rhs_new [B]: its
        correlation with the input; on [B, t + 1]: which slots are on. The coefficients."""
        t = g_new.shape[1] - 1
        on_new = on[:, t]
        M_old = self.M[:, :t, :t]
        g = g_new[:, :t] * on[:, :t] * on_new[:, None]
        w = (M_old @ g[..., None])[..., 0]  # the new row of L: L_old w = g
        # An atom in the span of the chosen ones leaves only the regulariser: never less (float32
        # cancellation would otherwise give a tiny pivot and huge coefficients)
        d2 = (g_new[:, t] + 1e-6 - w.pow(2).sum(-1)).clamp_min(1e-6)
        diag = torch.where(on_new > 0, d2.sqrt(), 1.0)
        # [L_old 0; w^T l]^-1 = [M_old 0; -w^T M_old / l, 1 / l]
        self.M[:, t, :t] = -(w[:, None, :] @ M_old)[:, 0] / diag[:, None]
        self.M[:, t, t] = 1.0 / diag
        self.z[:, t] = (rhs_new * on_new - (w * self.z[:, :t]).sum(-1)) / diag
        # v = M^T z, and only M's new row and z's new entry changed: v gains z_t times that row
        self.v[:, : t + 1] += self.z[:, t, None] * self.M[:, t, : t + 1]
        return self.v[:, : t + 1] * on


def _quad(val: Tensor, gss: Tensor) -> Tensor:
    """val^T G_SS val per token: the squared norm of the reconstruction (before the bias)."""
    return ((gss @ val[..., None])[..., 0] * val).sum(-1)  # a batched product: 1.3x an einsum


def _gp_step(
    c: Tensor, idx: Tensor, val: Tensor, on: Tensor, gss: Tensor, norms2: Tensor | None
) -> Tensor:
    """Gradient pursuit: a step along the gradient on the chosen set, of the exact length that
    minimises the residual along it. In the original atoms' scale the gradient is their
    correlations with the residual, c_S * |d_S|; as a step on the unit atoms' coefficients that
    is h = |d_S|^2 c_S (norms2 [B, s]; None: unit atoms, h = c_S), of length (h . c_S) /
    (h^T G_SS h)."""
    grad = c.gather(1, idx) * on
    h = grad if norms2 is None else grad * norms2
    num = (h * grad).sum(-1)
    den = _quad(h, gss).clamp_min(1e-12)
    return val + (num / den)[:, None] * h


def _omp_step(c0: Tensor, idx: Tensor, on: Tensor, gss: Tensor) -> Tensor:
    """Orthogonal matching pursuit: least squares on the chosen set, G_SS v = c0_S (slots that are
    off solve to 0 through an identity row)."""
    s = idx.shape[1]
    eye = torch.eye(s, device=c0.device)
    mask = on[:, :, None] * on[:, None, :]
    A = gss * mask + eye * (1 - on)[:, None, :] + 1e-6 * eye
    rhs = c0.gather(1, idx) * on
    return torch.linalg.solve(A, rhs[..., None])[..., 0] * on
