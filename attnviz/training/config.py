"""Training settings for QK dictionaries; the same dataclass drives the command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class QKTrainConfig:
    architecture: str = "qk_transcoder"
    """"qk_transcoder" (pattern KL, seed 000) or "qk_sae" (the L2 baseline on q and k)."""
    d_hidden_q: int = 1024
    """Query features."""
    d_hidden_k: int = 1024
    """Key features."""
    lr: float = 1e-3
    """Adam learning rate (after warm-up)."""
    adam_beta1: float = 0.0
    """Adam beta1; 0 often helps sparse dictionaries (seed 001)."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    sparsity: float = 3e-3
    """Coefficient of the L0.5 penalty sum_i sqrt(f_i * |dec_i| + eps) per token."""
    kl_weights: tuple[float, float, float] = (3.0, 1.0, 1.0)
    """Weights of KL(true || q^k^), KL(true || q^k), KL(true || qk^) (seed 000: 3, 1, 1)."""
    batch_contexts: int = 16
    """Contexts per step (each a full row of positions, so patterns can be rebuilt)."""
    tokens: int = 1_000_000
    """Training tokens in total (the store is repeated in epochs if it is smaller)."""
    warmup_steps: int = 200
    """Steps over which the learning rate and the sparsity coefficient ramp up from zero."""
    resample_every: int = 1000
    """Steps between resamplings of dead features (0: never)."""
    dead_window: int = 500
    """A feature that has not fired for this many steps counts as dead."""
    ghost_grads: bool = True
    """Rescaled ghost grads (seed 001): loss times the dead fraction, activation exp(min(x, 0))."""
    unit_norm_decoder: bool = True
    """Keep decoder rows at unit norm (activations then carry the magnitude)."""
    eval_every: int = 250
    """Steps between evaluations on the store's last chunk, which is never trained on."""
    checkpoint_every: int = 250
    """Steps between checkpoints (training resumes from the last one)."""
    seed: int = 0
    """Seed for initialisation and data order."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kl_weights"] = list(self.kl_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QKTrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "kl_weights" in d:
            d["kl_weights"] = tuple(d["kl_weights"])
        return cls(**d)
