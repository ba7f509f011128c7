"""Finding dead features and resampling them (seed 001: resampling remains a strong default)."""

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
        fired = (f.reshape(-1, f.shape[-1]) > 0).sum(0)
        self.fired_total += fired
        self.tokens_seen += f.reshape(-1, f.shape[-1]).shape[0]
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
