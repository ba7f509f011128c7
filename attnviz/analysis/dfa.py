"""Direct feature attribution (DFA) of attention-output SAE features to heads and source
positions (Kissane, Krzyzanowski, Bloom, Conmy, Nanda 2024).

hook_z is linear in the values once the pattern is fixed: z[t, h] = sum_s A[h, t, s] v[s, kv(h)].
An SAE feature's pre-activation at destination t is therefore exactly

    pre_f(t) = sum_h sum_s A[h, t, s] * (v[s, kv(h)] . W_enc[block h, f])  +  (b_enc[f] - b_dec . W_enc[:, f])
             = sum over (head, source) cells                                +  remainder

(the remainder is b_enc alone when the SAE does not subtract b_dec). The values are projected
onto each head's encoder block first, so the cost is [src x heads x d_head] per feature and no
[dest, src, n_heads * d_head] tensor is ever built. Under grouped-query attention a key/value
head feeds several query heads; each query head gets its own cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnviz.dictionaries.sae import SAE


@dataclass
class FeatureAttribution:
    """The DFA of some features at one destination."""

    features: Tensor
    """int64 [F] feature ids."""
    dest: int
    cells: Tensor
    """[F, n_heads, n_src] contributions of each (head, source) to each feature's pre-activation
    (sources after dest are 0: the causal mask gives them no attention)."""
    remainder: Tensor
    """[F] the bias part: b_enc - b_dec . W_enc (b_enc alone without b_dec subtraction)."""

    @property
    def pre_activation(self) -> Tensor:
        """[F] cells summed plus the remainder: exactly the SAE's pre-activation at dest."""
        return self.cells.sum((-1, -2)) + self.remainder

    @property
    def by_head(self) -> Tensor:
        """[F, n_heads] each head's total contribution."""
        return self.cells.sum(-1)

    @property
    def by_source(self) -> Tensor:
        """[F, n_src] each source position's total contribution, over heads."""
        return self.cells.sum(-2)


def _check(sae: SAE, pattern: Tensor, v: Tensor) -> tuple[int, int, int]:
    c = sae.cfg
    if c.site != "z" or len(c.layers) != 1:
        raise ValueError(
            f"direct feature attribution reads a one-layer hook_z SAE; this one reads {c.site} of "
            f"layers {c.layers}"
        )
    if pattern.ndim != 3 or v.ndim != 3:
        raise ValueError(
            f"give one context: pattern [heads, dest, src] and v [src, kv_heads, d_head], got "
            f"{tuple(pattern.shape)} and {tuple(v.shape)}"
        )
    n_heads, _, n_src = pattern.shape
    n_kv, d_head = v.shape[1], v.shape[2]
    if n_heads * d_head != c.d_in or n_heads % n_kv or v.shape[0] != n_src:
        raise ValueError(
            f"pattern {tuple(pattern.shape)} and v {tuple(v.shape)} do not fit an SAE reading "
            f"{c.d_in}-wide hook_z"
        )
    return n_heads, n_kv, d_head


def remainder(sae: SAE, features: Tensor) -> Tensor:
    """[F] b_enc[f] - b_dec . W_enc[:, f]: the part of the pre-activation no head or source carries."""
    W = sae.W_enc[:, features].float()
    bias = sae.b_enc[features].float()
    if sae.cfg.apply_b_dec_to_input:
        bias = bias - sae.b_dec.float() @ W
    return bias


@torch.no_grad()
def feature_attribution(
    sae: SAE, pattern: Tensor, v: Tensor, dest: int, features: Tensor | list[int]
) -> FeatureAttribution:
    """DFA of `features` at destination `dest` of one context.

    pattern [n_heads, dest, src] and v [src, n_kv_heads, d_head] of the SAE's layer (from
    `model.attention(tokens, layer, ["pattern", "v"])`, batch item chosen)."""
    n_heads, n_kv, d_head = _check(sae, pattern, v)
    feats = torch.as_tensor(features, dtype=torch.long, device=sae.W_enc.device).reshape(-1)
    W = sae.W_enc[:, feats].float().reshape(n_heads, d_head, -1)  # [h, d_head, F]
    kv = torch.arange(n_heads, device=v.device) // (n_heads // n_kv)
    proj = torch.einsum("shd,hdf->fhs", v.float()[:, kv], W.to(v.device))  # [F, h, src]
    cells = proj * pattern[:, dest].float()[None]  # [F, h, src]
    return FeatureAttribution(feats, dest, cells, remainder(sae, feats).to(cells.device))


@torch.no_grad()
def head_writes(sae: SAE, pattern: Tensor, v: Tensor, dest: int, head: int) -> Tensor:
    """[d_sae] what one head's output at `dest` adds to every feature's pre-activation (the
    reverse view: which features this head writes)."""
    n_heads, n_kv, d_head = _check(sae, pattern, v)
    if not 0 <= head < n_heads:
        raise ValueError(f"head {head} is out of range: the layer has heads 0-{n_heads - 1}")
    z_h = pattern[head, dest].float() @ v[:, head // (n_heads // n_kv)].float()  # [d_head]
    block = sae.W_enc[head * d_head : (head + 1) * d_head].float()
    return z_h.to(block.device) @ block


@torch.no_grad()
def edge_features(
    sae: SAE, pattern: Tensor, v: Tensor, dest: int, head: int, src: int, top: int = 10
) -> tuple[Tensor, Tensor, Tensor]:
    """What moves along one attention edge (head, dest <- src): the features whose DFA through
    that cell is largest. Returns (feature ids [top], the cell's contributions [top], each
    feature's whole pre-activation at dest [top]), strongest contribution first."""
    n_heads, n_kv, d_head = _check(sae, pattern, v)
    weight = pattern[head, dest, src].float()
    value = v[src, head // (n_heads // n_kv)].float()
    block = sae.W_enc[head * d_head : (head + 1) * d_head].float()
    contribution = weight * (value.to(block.device) @ block)  # [d_sae]
    z = torch.einsum(
        "hs,shd->hd",
        pattern[:, dest].float(),
        v.float()[:, torch.arange(n_heads) // (n_heads // n_kv)],
    )
    pre = sae.pre_activation(z.reshape(-1).to(sae.W_enc.device))
    order = contribution.abs().topk(min(top, contribution.numel())).indices
    return order, contribution[order], pre[order]
