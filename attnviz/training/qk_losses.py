"""Losses for QK dictionaries: pattern KL per query row, the L0.5 sparsity penalty, ghost grads."""

from __future__ import annotations

import torch
from torch import Tensor

from attnviz.analysis.patterns import attention_scores
from attnviz.dictionaries.sparse_coder import SparseCoder


def log_pattern(q_rot: Tensor, k_rot: Tensor, attn_scale: float) -> Tensor:
    """log softmax of causally masked scores: [b, heads, dest, src], -inf where masked."""
    return attention_scores(q_rot, k_rot, attn_scale).log_softmax(dim=-1)


def pattern_kl(true_logp: Tensor, recon_logp: Tensor) -> Tensor:
    """Mean over query rows of KL(true || recon).

    Row 0 attends only to itself (KL 0 always) and is left out of the mean. Masked entries have
    probability 0 in both and add exactly 0 (never -inf - -inf)."""
    allowed = torch.isfinite(true_logp)
    p = true_logp.exp()
    terms = torch.where(allowed, p * (true_logp - recon_logp), torch.zeros_like(p))
    per_row = terms.sum(-1)  # [b, heads, dest]
    return per_row[..., 1:].mean()


def sparsity_penalty(f: Tensor, coder: SparseCoder, eps: float = 1e-6) -> Tensor:
    """sum_i sqrt(f_i * |W_dec,i| + eps) per token, averaged over tokens (an L0.5-style penalty:
    it punishes many small activations more than L1 does)."""
    norms = coder.W_dec.norm(dim=-1)
    return torch.sqrt(f * norms + eps).sum(-1).mean() - f.shape[-1] * eps**0.5


def ghost_loss(coder: SparseCoder, x: Tensor, residual: Tensor, dead: Tensor) -> Tensor:
    """Rescaled ghost grads: dead features, through exp(min(pre, 0)), learn to explain what the
    live ones leave unexplained; the loss is multiplied by the fraction of dead features.

    x: coder input [tokens, d_in]; residual: target - reconstruction (no gradient) [tokens, d_out];
    dead: bool [d_hidden]."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return x.new_zeros(())
    pre = coder.pre_activation(x)[:, dead]
    ghost = torch.exp(torch.clamp(pre, max=0.0)) @ coder.W_dec[dead]
    # Scale the ghost output to half the residual's norm, so it points rather than pushes.
    r_norm = residual.norm(dim=-1, keepdim=True)
    g_norm = ghost.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    ghost = ghost * (r_norm / (2 * g_norm)).detach()
    mse = (ghost - residual).pow(2).sum(-1).mean() / residual.pow(2).sum(-1).mean().clamp_min(1e-8)
    return mse * (n_dead / dead.numel())
