"""Query/key dictionaries: a pair of sparse encoder-decoders whose outputs are a layer's queries
and keys (before rotation).

- "qk_transcoder" (Sharkey et al. 2024): both read the normalised residual stream before the layer and are
  trained on the attention pattern they produce (KL), not on q/k reconstruction.
- "qk_sae": the L2 baseline; one SAE reads and rebuilds q, the other k.

Feature activations are f_Q [..., d_hidden_q] and f_K [..., d_hidden_k]; decoder rows viewed per
head are dec_Q [d_hidden_q, n_heads, d_head] and dec_K [d_hidden_k, n_kv_heads, d_head].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from attnviz._version import __version__
from attnviz.dictionaries.base import Dictionary
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.registry import register
from attnviz.dictionaries.sparse_coder import SparseCoder

VARIANTS = ("qk_transcoder", "qk_sae")
"""The two architectures this module registers (one config and module class serve both)."""


@dataclass
class QKConfig:
    architecture: str
    """"qk_transcoder" (reads the normalised residual) or "qk_sae" (reads q and k themselves)."""
    model: str
    """Name of the model the dictionary was trained on."""
    layer: int
    """Attention layer, counted from 0."""
    d_model: int
    """Residual stream width."""
    n_heads: int
    """Query heads."""
    n_kv_heads: int
    """Key/value heads (fewer than n_heads under grouped-query attention)."""
    d_head: int
    """Width of one head's query/key."""
    positional: str
    """"rotary" or "absolute": whether scores rotate q and k by position."""
    attn_scale: float
    """Scores are q . k / attn_scale."""
    d_hidden_q: int
    """Query features."""
    d_hidden_k: int
    """Key features."""
    k_q: int | None = None
    """TopK: query features active per token (Gao et al. 2024); None: ReLU (trained with a
    sparsity penalty)."""
    k_k: int | None = None
    """TopK: key features active per token; None: ReLU."""
    hook_in: str = "resid_normed"
    """What the encoders read (see attnviz.models.adapter for the convention)."""
    training: dict[str, Any] = field(default_factory=dict)
    """The settings it was trained with (TrainConfig as a dict)."""
    attnviz_version: str = __version__
    """The attnviz version that wrote it."""

    def __post_init__(self) -> None:
        if self.architecture not in VARIANTS:
            raise ValueError(
                f"{self.architecture!r} is not a QK dictionary architecture: use one of {VARIANTS}"
            )

    @classmethod
    def for_model(
        cls,
        spec: Any,
        layer: int,
        d_hidden_q: int,
        d_hidden_k: int | None = None,
        architecture: str = "qk_transcoder",
        **extra: Any,
    ) -> QKConfig:
        """A config matching an adapter's ModelSpec."""
        return cls(
            architecture=architecture, model=spec.name, layer=layer, d_model=spec.d_model,
            n_heads=spec.n_heads, n_kv_heads=spec.n_kv_heads, d_head=spec.d_head,
            positional=spec.positional, attn_scale=spec.attn_scale, d_hidden_q=d_hidden_q,
            d_hidden_k=d_hidden_k or d_hidden_q,
            hook_in="resid_normed" if architecture == "qk_transcoder" else "q,k", **extra,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QKConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class QKDictionary(Dictionary):
    """A query coder and a key coder for one attention layer."""

    def __init__(self, cfg: QKConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        d_q, d_k = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
        transcoder = cfg.architecture == "qk_transcoder"
        self.query = SparseCoder(cfg.d_model if transcoder else d_q, cfg.d_hidden_q, d_q, seed)
        self.key = SparseCoder(cfg.d_model if transcoder else d_k, cfg.d_hidden_k, d_k, seed + 1)
        self.query.k, self.key.k = cfg.k_q, cfg.k_k
        # Step 2's sparse (query feature, key feature, head) table, once trained.
        self.pairs: PairTable | None = None

    @property
    def is_transcoder(self) -> bool:
        return self.cfg.architecture == "qk_transcoder"

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The AttentionActivations fields the coders read."""
        return ("resid_normed",) if self.is_transcoder else ("q", "k")

    def inputs(self, acts: Any) -> dict[str, Tensor | None]:
        """What the dictionary reads from a layer's AttentionActivations (resid_normed, or q and
        k), on the dictionary's device and dtype: keyword arguments for self(...) / encode."""
        return {
            name: None if x is None else x.to(device=self.device, dtype=self.dtype)
            for name, x in (("resid_normed", acts.resid_normed), ("q", acts.q), ("k", acts.k))
        }

    def coder_input(self, resid_normed: Tensor | None, qk_act: Tensor | None) -> Tensor:
        """What a coder reads: resid_normed for a transcoder, its own q or k for an SAE."""
        if self.is_transcoder:
            if resid_normed is None:
                raise ValueError(
                    "a QK transcoder reads resid_normed: collect it, e.g. "
                    "model.attention(tokens, layer, ['resid_normed'])"
                )
            return resid_normed
        if qk_act is None:
            raise ValueError(
                "a q/k SAE reads q and k: collect them, e.g. model.attention(tokens, layer, ['q', 'k'])"
            )
        return qk_act.flatten(-2)

    def encode(
        self, resid_normed: Tensor | None = None, q: Tensor | None = None, k: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Feature activations (f_Q, f_K) for each position."""
        return (
            self.query.encode(self.coder_input(resid_normed, q)),
            self.key.encode(self.coder_input(resid_normed, k)),
        )

    def decode_q(self, f_q: Tensor) -> Tensor:
        """[..., d_hidden_q] -> un-rotated queries [..., n_heads, d_head]."""
        return self.query.decode(f_q).unflatten(-1, (self.cfg.n_heads, self.cfg.d_head))

    def decode_k(self, f_k: Tensor) -> Tensor:
        """[..., d_hidden_k] -> un-rotated keys [..., n_kv_heads, d_head]."""
        return self.key.decode(f_k).unflatten(-1, (self.cfg.n_kv_heads, self.cfg.d_head))

    def forward(
        self, resid_normed: Tensor | None = None, q: Tensor | None = None, k: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(q_hat, k_hat, f_Q, f_K)."""
        f_q, f_k = self.encode(resid_normed, q, k)
        return self.decode_q(f_q), self.decode_k(f_k), f_q, f_k

    @property
    def dec_q(self) -> Tensor:
        return self.query.W_dec.unflatten(-1, (self.cfg.n_heads, self.cfg.d_head))

    @property
    def dec_k(self) -> Tensor:
        return self.key.W_dec.unflatten(-1, (self.cfg.n_kv_heads, self.cfg.d_head))

    # ---- registry hooks (see dictionaries/base.py) ----------------------------------------

    def site_widths(self) -> dict[str, int]:
        c = self.cfg
        widths = {"q": c.n_heads * c.d_head, "k": c.n_kv_heads * c.d_head}
        return {"resid_normed": c.d_model, **widths} if self.is_transcoder else widths

    def spec_requirements(self) -> dict[str, Any]:
        c = self.cfg
        return {"d_model": c.d_model, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
                "d_head": c.d_head, "positional": c.positional}  # fmt: skip

    def extra_tensors(self) -> dict[str, Tensor]:
        return {} if self.pairs is None else self.pairs.tensors()

    def extra_config(self) -> dict[str, Any]:
        return {} if self.pairs is None else {"pairs_shape": list(self.pairs.shape)}

    def load_extra(self, tensors: dict[str, Tensor], raw_cfg: dict[str, Any]) -> None:
        if "pairs_shape" in raw_cfg:
            self.pairs = PairTable.from_tensors(tensors, tuple(raw_cfg["pairs_shape"]))  # type: ignore[arg-type]

    def extra_to(self, device: torch.device | str) -> None:
        if self.pairs is not None:
            self.pairs = self.pairs.to(device)


for _name, _summary in (
    (
        "qk_transcoder",
        "query and key transcoders from the normalised residual (Sharkey et al. 2024)",
    ),
    ("qk_sae", "L2 sparse autoencoders on q and k (the QK transcoders' baseline)"),
):
    register(_name, QKConfig, QKDictionary, _summary)
