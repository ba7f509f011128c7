"""Training settings; the same dataclasses drive the command line (one flag per field, help from
the field's docstring).

`LoopConfig` holds what every architecture's training shares (optimiser, schedule, dead-feature
remedies, evaluation, checkpoints); each architecture's config extends it with its own fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class LoopConfig:
    lr: float = 1e-3
    """Adam learning rate (after warm-up)."""
    adam_beta1: float = 0.0
    """Adam beta1; 0 often helps sparse dictionaries (GDM progress update, 2024)."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    batch_contexts: int = 16
    """Contexts per step, over all processes (each a full row of positions)."""
    tokens: int = 1_000_000
    """Training tokens in total (the store is repeated in epochs if it is smaller)."""
    warmup_steps: int = 200
    """Steps over which the learning rate and the sparsity coefficient ramp up from zero."""
    resample_every: int = 1000
    """Steps between resamplings of dead features (0: never)."""
    dead_window: int = 500
    """A feature that has not fired for this many steps counts as dead."""
    ghost_grads: bool = True
    """Rescaled ghost grads: loss times the dead fraction, activation exp(min(x, 0))."""
    aux_k: int = 0
    """AuxK for TopK SAEs (Gao et al. 2024): dead features whose largest pre-activations model
    the error; 0: off (Gao et al. use 512, or half the input width when it is smaller)."""
    aux_k_coef: float = 1 / 32
    """Weight of the AuxK loss (relative to the reconstruction error, which is 1.0 at the mean)."""
    neg_pre_penalty: float = 0.0
    """Coefficient of the L1 penalty on negative pre-activations (Anthropic 2025); 0: off."""
    unit_norm_decoder: bool = True
    """Keep decoder rows at unit norm (activations then carry the magnitude)."""
    eval_every: int = 250
    """Steps between evaluations on the store's last chunk, which is never trained on."""
    checkpoint_every: int = 250
    """Steps between checkpoints (training resumes from the last one)."""
    seed: int = 0
    """Seed for initialisation and data order."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        defaults = {f.name: f.default for f in fields(cls)}
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(defaults[k], tuple) else v
            for k, v in d.items()
            if k in defaults
        }
        return cls(**values)


@dataclass
class QKTrainConfig(LoopConfig):
    architecture: str = "qk_transcoder"
    """"qk_transcoder" (pattern KL, Sharkey et al. 2024) or "qk_sae" (L2 on q and k)."""
    d_hidden_q: int = 1024
    """Query features."""
    d_hidden_k: int = 1024
    """Key features."""
    sparsity: float = 3e-3
    """Coefficient of the L0.5 penalty sum_i sqrt(f_i * |dec_i| + eps) per token."""
    kl_weights: tuple[float, float, float] = (3.0, 1.0, 1.0)
    """Weights of KL(true || q^k^), KL(true || q^k), KL(true || qk^) (Sharkey et al.: 3, 1, 1)."""
    k_q: int = 0
    """TopK transcoders (Gao et al. 2024): query features active per token, a fixed L0 and no
    sparsity penalty (pair with --aux-k for dead features); 0: ReLU with the L0.5 penalty."""
    k_k: int = 0
    """TopK: key features active per token; 0: ReLU with the L0.5 penalty."""

    def __post_init__(self) -> None:
        for name, k, width in (
            ("k_q", self.k_q, self.d_hidden_q),
            ("k_k", self.k_k, self.d_hidden_k),
        ):
            if not 0 <= k < width:
                raise ValueError(
                    f"{name} = {k}: choose 0 (ReLU with the L0.5 penalty) or a TopK k between 1 "
                    f"and the {width} features less one"
                )


@dataclass
class TrainJobConfig:
    """Where `attnviz train ...` gets its activations and puts its result (the dictionary's own
    settings are the architecture's config)."""

    layer: int = field(default=0, metadata={"required": True})
    """Attention layer, counted from 0."""
    model: str = "smollm2-135m"
    """Model name (see `attnviz models`)."""
    backend: str | None = None
    """transformer_lens or nnsight (default: the model's usual one)."""
    corpus: str = "pydocs"
    """Corpus name, text file or folder."""
    store: str | None = None
    """Activation store (collected first if missing, resumed if partial)."""
    collect_tokens: int = 262_144
    """Tokens to collect into the store."""
    n_ctx: int = 128
    """Tokens per context."""
    batch_size: int = 16
    """Contexts per forward pass while collecting."""
    device: str | None = None
    """cuda / cpu (default: cuda when available)."""
    out: str | None = None
    """Output directory (resumed if it holds a checkpoint)."""


@dataclass
class SAETrainConfig(LoopConfig):
    site: str = "z"
    """Where the SAE reads: z (hook_z), v, or a residual site the store holds."""
    architecture: str = "standard"
    """"standard" (ReLU + L1), "topk" or "batchtopk" (saved as jumprelu with a threshold)."""
    d_sae: int = 2048
    """Features."""
    k: int = 16
    """Active features per token (topk and batchtopk)."""
    sparsity: float = 5.0
    """L1 coefficient for "standard": sum_i f_i |W_dec,i| per token, against the error that
    is 1.0 for predicting the mean."""
    init: str = "random"
    """Initial feature directions: "random" (decoder rows anywhere, encoder apart), "tied" (the
    encoder the decoder's transpose, Gao et al. 2024) or "subspace" (tied, with the rows drawn
    inside the inputs' active subspace: attention outputs fill only part of their width, and
    directions outside it never fire; Wang et al. 2025)."""
    subspace_variance: float = 0.99
    """"subspace": the share of the inputs' variance the principal directions spanning the
    active subspace explain."""

    def __post_init__(self) -> None:
        if self.architecture not in ("standard", "topk", "batchtopk"):
            raise ValueError(
                f"architecture {self.architecture!r}: choose standard, topk or batchtopk"
            )
        if self.init not in ("random", "tied", "subspace"):
            raise ValueError(f"init {self.init!r}: choose random, tied or subspace")
        if not 0 < self.subspace_variance <= 1:
            raise ValueError(f"subspace_variance must be in (0, 1], got {self.subspace_variance}")
