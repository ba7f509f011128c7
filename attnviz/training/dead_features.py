"""Dead features: finding them, and three remedies the training loop can apply.

- resampling (Bricken et al. 2023; still a strong default in the GDM progress update, 2024);
- rescaled ghost grads (Anthropic circuits update, January 2024);
- an L1 penalty on negative pre-activations (Anthropic attention update, 2025), which keeps
  every feature's pre-activation from sinking far below zero, where no gradient reaches it;
- AuxK (Gao et al. 2024), for TopK SAEs: the dead features' k_aux largest pre-activations
  reconstruct the error the live ones leave, which gives dead features a gradient even though
  TopK never selects them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnviz.dictionaries.sparse_coder import SparseCoder


class FiringTracker:
    """Steps since each feature last fired."""

    def __init__(self, d_hidden: int, device: torch.device | str = "cpu"):
        self.steps_since = torch.zeros(d_hidden, dtype=torch.long, device=device)
        self.fired_total = torch.zeros(d_hidden, dtype=torch.long, device=device)
        self.tokens_seen = 0

    def update(self, f: Tensor) -> None:
        flat = f.reshape(-1, f.shape[-1])
        self.update_counts((flat > 0).sum(0), flat.shape[0])

    def update_counts(self, fired: Tensor, n_tokens: int) -> None:
        """One step's firing counts per feature (summed over processes in a distributed run)."""
        self.fired_total += fired
        self.tokens_seen += int(n_tokens)
        self.steps_since = torch.where(fired > 0, 0, self.steps_since + 1)

    def dead(self, window: int) -> Tensor:
        return self.steps_since >= window

    def density(self) -> Tensor:
        return self.fired_total.float() / max(self.tokens_seen, 1)

    def state(self) -> dict[str, Tensor]:
        return {
            "steps_since": self.steps_since,
            "fired_total": self.fired_total,
            "tokens_seen": torch.tensor(self.tokens_seen),
        }

    def load(self, state: dict[str, Tensor]) -> None:
        self.steps_since = state["steps_since"].clone()
        self.fired_total = state["fired_total"].clone()
        self.tokens_seen = int(state["tokens_seen"])


@torch.no_grad()
def resample(
    coder: SparseCoder,
    dead: Tensor,
    x: Tensor,
    residual: Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    encoder_scale: float = 0.2,
) -> int:
    """Point each dead feature at an input that is badly reconstructed (chosen with probability
    proportional to the squared error): decoder row = that input's residual direction, encoder
    column = its centred input direction at 0.2 x the mean live encoder norm; Adam state reset.

    x: coder inputs [tokens, d_in]; residual: target - reconstruction [tokens, d_out]."""
    idx = dead.nonzero(as_tuple=True)[0]
    if idx.numel() == 0:
        return 0
    err = residual.pow(2).sum(-1)
    if float(err.sum()) <= 0:
        return 0
    picks = torch.multinomial(err.cpu(), idx.numel(), replacement=True, generator=generator)
    picks = picks.to(x.device)
    directions = residual[picks]
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    inputs = x[picks] - coder.b_pre
    inputs = inputs / inputs.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    live_norm = coder.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    coder.W_dec[idx] = directions
    coder.W_enc[:, idx] = (inputs * live_norm * encoder_scale).T
    coder.b_enc[idx] = 0.0
    for param, rows in (
        (coder.W_dec, (idx,)),
        (coder.W_enc, (slice(None), idx)),
        (coder.b_enc, (idx,)),
    ):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0.0
    return int(idx.numel())


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


def negative_pre_penalty(coder: SparseCoder, x: Tensor) -> Tensor:
    """sum_i max(-pre_i, 0) per token, averaged over tokens: an L1 penalty on the negative part
    of the pre-activations. A feature whose pre-activation is negative everywhere gets a gradient
    pulling it back towards firing, so it cannot die quietly.

    x: coder input [tokens, d_in]."""
    return torch.relu(-coder.pre_activation(x)).sum(-1).mean()


def auxk_loss(coder: SparseCoder, x: Tensor, residual: Tensor, dead: Tensor, k_aux: int) -> Tensor:
    """AuxK: || e - TopK_{k_aux}(dead pre-activations) W_dec[dead] ||^2 / ||e||^2, e the residual
    (target - reconstruction, no gradient). Only the dead features' encoder columns are computed.

    x: coder input [tokens, d_in]; residual [tokens, d_out]; dead: bool [d_hidden]."""
    idx = dead.nonzero(as_tuple=True)[0]
    if idx.numel() == 0:
        return x.new_zeros(())
    pre = (x - coder.b_pre) @ coder.W_enc[:, idx] + coder.b_enc[idx]
    top = pre.topk(min(int(k_aux), idx.numel()), dim=-1)
    # Scattered into [tokens, n_dead] and multiplied: gathering decoder rows per token would
    # build [tokens, k_aux, d] (over a GB at 2k tokens x 256 x 576).
    code = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
    e_hat = code @ coder.W_dec[idx]
    err = (residual - e_hat).pow(2).sum(-1).mean()
    return err / residual.pow(2).sum(-1).mean().clamp_min(1e-8)
