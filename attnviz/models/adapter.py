"""The one interface through which the rest of attnviz reads and steers a model's attention.

Two implementations: TransformerLens (`tl_adapter.py`) and nnsight over any Hugging Face causal LM
(`nnsight_adapter.py`). Conventions shared by both:

- `resid_normed` is the residual stream before a layer after its norm *without* the norm's weight
  and bias (x / rms(x) for RMSNorm, (x - mean) / std for LayerNorm). `qk_weights` folds the norm's
  weight and bias into W_Q / W_K, so q = resid_normed @ W_Q + b_Q exactly.
- q and k are before rotation; k and v have n_kv_heads heads (grouped-query attention: query head h
  reads kv head h // (n_heads // n_kv_heads)).
- Scores are (q_rot . k_rot) / attn_scale with a causal mask of -inf, softmaxed over sources.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from attnviz.errors import ContextTooLongError, EmptyTextError, LayerOutOfRangeError
from attnviz.models.attention import causal_mask, pattern_from_qk
from attnviz.models.interventions import (
    Additive,
    AddToResidual,
    Intervention,
    ReplacePattern,
    Splice,
)
from attnviz.models.rotary import Rotary

ACTIVATION_FIELDS = ("resid_pre", "resid_normed", "q", "k", "q_rot", "k_rot", "v", "z", "pattern")
SPLICE_SITES = ("resid_pre", "z", "attn_out", "resid_post")


@dataclass(frozen=True)
class ModelSpec:
    """The shapes and conventions of a model's attention, the same whatever the backend."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    n_ctx: int
    d_vocab: int
    positional: str  # "rotary" | "absolute"
    normalization: str  # "RMS" | "LN"
    norm_eps: float
    attn_scale: float  # scores are divided by this
    bos_token_id: int | None

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        return head // self.group_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttentionActivations:
    """One layer's attention internals for a batch (a field is None when it was not asked for).

    Shapes: resid_pre (the residual stream before the layer), resid_normed (the same after the
    norm without its weight) [batch pos d_model]; q, q_rot, z [batch pos n_heads d_head];
    k, k_rot, v [batch pos n_kv_heads d_head]; pattern [batch n_heads dest src].
    """

    layer: int
    tokens: Tensor
    resid_pre: Tensor | None = None
    resid_normed: Tensor | None = None
    q: Tensor | None = None
    k: Tensor | None = None
    q_rot: Tensor | None = None
    k_rot: Tensor | None = None
    v: Tensor | None = None
    z: Tensor | None = None
    pattern: Tensor | None = None

    def as_dict(self) -> dict[str, Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in ACTIVATION_FIELDS and getattr(self, f.name) is not None
        }


@dataclass
class QKWeights:
    """What a layer's queries and keys are computed with, norm weights folded in.

    W_Q [n_heads d_model d_head], b_Q [n_heads d_head], W_K [n_kv_heads d_model d_head],
    b_K [n_kv_heads d_head]."""

    W_Q: Tensor
    b_Q: Tensor
    W_K: Tensor
    b_K: Tensor

    def queries(self, resid_normed: Tensor) -> Tensor:
        return torch.einsum("...d,hde->...he", resid_normed, self.W_Q) + self.b_Q

    def keys(self, resid_normed: Tensor) -> Tensor:
        return torch.einsum("...d,hde->...he", resid_normed, self.W_K) + self.b_K


class ModelAdapter(ABC):
    """Backend-independent access to a causal LM's attention layers."""

    backend: str = "abstract"

    def __init__(self, spec: ModelSpec, tokenizer: Any, device: torch.device):
        self.spec = spec
        self.tokenizer = tokenizer
        self.device = device

    # ---- checks and tokens -------------------------------------------------------------

    def check_layer(self, layer: int) -> int:
        n = self.spec.n_layers
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n:
            raise LayerOutOfRangeError(
                f"layer {layer!r} is out of range: {self.spec.name} has layers 0-{n - 1}"
            )
        return layer

    def check_tokens(self, tokens: Tensor | Sequence[Sequence[int]]) -> Tensor:
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] == 0:
            raise EmptyTextError("the prompt has no tokens: give at least one token of text")
        if tokens.shape[1] > self.spec.n_ctx:
            raise ContextTooLongError(
                f"the context has {tokens.shape[1]} tokens but {self.spec.name} allows at most "
                f"{self.spec.n_ctx}: shorten it, or tokenise with truncate=True"
            )
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.spec.d_vocab:
            raise ValueError(
                f"token ids must lie in 0-{self.spec.d_vocab - 1} for {self.spec.name}; got "
                f"{int(tokens.min())}-{int(tokens.max())} (tokens from another tokenizer?)"
            )
        return tokens.to(self.device)

    def to_tokens(
        self, text: str | Sequence[str], prepend_bos: bool = True, truncate: bool = False
    ) -> Tensor:
        """Token ids [batch pos]; several texts must tokenise to the same length."""
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or any(not t.strip() for t in texts):
            raise EmptyTextError("the text is empty: give a prompt with at least one word")
        rows = []
        for t in texts:
            ids = list(self.tokenizer(t, add_special_tokens=False)["input_ids"])
            if prepend_bos and self.spec.bos_token_id is not None:
                ids = [self.spec.bos_token_id, *ids]
            if truncate:
                ids = ids[: self.spec.n_ctx]
            rows.append(ids)
        if len({len(r) for r in rows}) != 1:
            raise ValueError(
                "texts tokenise to different lengths "
                f"({sorted({len(r) for r in rows})}): pass them one at a time"
            )
        return self.check_tokens(rows)

    def to_str_tokens(self, tokens: Tensor) -> list[str]:
        """The text of each token. Byte-level BPE splits some characters (CJK, emoji) across
        tokens, whose bytes alone decode to U+FFFD; each token of such a run shows the run's
        text with its piece marked: "日本[1/3]", "日本[2/3]", ... (see merged_pieces)."""
        ids = torch.as_tensor(tokens).reshape(-1).tolist()
        return merged_pieces(ids, lambda run: self.tokenizer.decode(run))

    # ---- what analysis needs -----------------------------------------------------------

    def attention(
        self,
        tokens: Tensor,
        layer: int,
        fields: Sequence[str] = ACTIVATION_FIELDS,
        stop: bool = True,
    ) -> AttentionActivations:
        """Run up to and including `layer` and return its attention internals.

        stop=False runs the whole model anyway (only to measure what stopping saves)."""
        unknown = set(fields) - set(ACTIVATION_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown activation fields {sorted(unknown)}: choose from {ACTIVATION_FIELDS}"
            )
        tokens = self.check_tokens(tokens)
        with torch.no_grad():
            return self._attention(tokens, self.check_layer(layer), tuple(fields), stop)

    def each_pattern(self, tokens: Tensor, fn: Any, layers: Sequence[int] | None = None) -> None:
        """Call fn(layer, pattern [batch heads dest src]) for every layer (or `layers`) of one
        forward pass where the backend allows (TransformerLens: hooks), else one pass per layer.
        fn may raise to stop the pass early."""
        tokens = self.check_tokens(tokens)
        for layer in range(self.spec.n_layers) if layers is None else layers:
            fn(layer, self.attention(tokens, layer, ["pattern"]).pattern)

    def rotary(self, layer: int, n_pos: int) -> Rotary | None:
        """The layer's rotary tables for positions 0..n_pos-1; None for absolute positions."""
        return None

    def rotate(self, x: Tensor, layer: int, positions: Tensor | None = None) -> Tensor:
        """Rotate q or k [..., pos, heads, d_head] by their positions (identity when absolute)."""
        n = x.shape[-3] if positions is None else int(positions.max()) + 1
        rot = self.rotary(layer, n)
        return x if rot is None else rot.apply(x, positions)

    def causal_mask(self, n_pos: int) -> Tensor:
        return causal_mask(n_pos, device=self.device)

    @property
    def attn_scale(self) -> float:
        return self.spec.attn_scale

    def pattern_from_qk(self, q: Tensor, k: Tensor, layer: int) -> Tensor:
        """The pattern [batch heads dest src] from un-rotated q and k, as the model computes it."""
        return pattern_from_qk(self.rotate(q, layer), self.rotate(k, layer), self.attn_scale)

    def run(self, tokens: Tensor, interventions: Sequence[Intervention] = ()) -> Tensor:
        """Logits [batch pos vocab] of a full forward pass with the interventions applied."""
        tokens = self.check_tokens(tokens)
        for iv in interventions:
            self.check_layer(iv.layer)
            if isinstance(iv, Splice) and iv.site not in SPLICE_SITES:
                raise ValueError(f"unknown splice site {iv.site!r}: choose from {SPLICE_SITES}")
            if isinstance(iv, Additive):
                self._check_additive(iv, tokens.shape[0])
            if isinstance(iv, ReplacePattern):
                want = (tokens.shape[0], len(iv.heads), tokens.shape[1], tokens.shape[1])
                if tuple(iv.pattern.shape) != want:
                    raise ValueError(
                        f"replacement pattern has shape {tuple(iv.pattern.shape)}, expected {want}"
                    )
        with torch.no_grad():
            return self._run(tokens, list(interventions))

    def forward_cached(
        self, tokens: Tensor, interventions: Sequence[Intervention] = (), cache: Any = None
    ) -> tuple[Tensor, Any]:
        """Logits [batch new vocab] of `tokens`, the positions after those `cache` holds (None: a
        new sequence), and the cache to pass with the next tokens. Interventions: AddToResidual and
        AddToZ (their positions count from the sequence's start, so steering holds on every step)."""
        tokens = self.check_tokens(tokens)
        for iv in interventions:
            self.check_layer(iv.layer)
            if not isinstance(iv, Additive):
                raise ValueError(f"{type(iv).__name__} needs the whole sequence: use run()")
            self._check_additive(iv, tokens.shape[0])
        with torch.no_grad():
            return self._forward_cached(tokens, list(interventions), cache)

    def _check_additive(self, iv: Additive, batch: int) -> None:
        s = self.spec
        width = s.d_model if isinstance(iv, AddToResidual) else s.n_heads * s.d_head
        where = "the residual stream" if isinstance(iv, AddToResidual) else "hook_z"
        if iv.vector.shape[-1] != width or iv.vector.ndim not in (1, 2):
            raise ValueError(
                f"a vector for {where} of {s.name} is [{width}] (or [batch, {width}]); got shape "
                f"{tuple(iv.vector.shape)}"
            )
        if iv.vector.ndim == 2 and iv.vector.shape[0] != batch:
            raise ValueError(f"{iv.vector.shape[0]} vectors for a batch of {batch}")

    def output_weights(self, layer: int) -> Tensor:
        """W_O [n_heads d_head d_model]: what each head writes to the residual stream per unit
        of its z (the attention output is sum_h z_h @ W_O[h], plus a bias)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose W_O")

    def _forward_cached(
        self, tokens: Tensor, interventions: list[Intervention], cache: Any
    ) -> tuple[Tensor, Any]:
        """Without a KV cache of the backend's own: the whole sequence again (the 'cache' is
        the tokens so far). Backends that have one override this."""
        seq = tokens if cache is None else torch.cat([cache, tokens], 1)
        self.check_tokens(seq)
        return self._run(seq, interventions)[:, -tokens.shape[1] :], seq

    def loss(self, tokens: Tensor, interventions: Sequence[Intervention] = ()) -> Tensor:
        """Next-token cross-entropy per position [batch pos-1]."""
        tokens = self.check_tokens(tokens)
        logits = self.run(tokens, interventions)
        # One context's log-probabilities at a time: a vocabulary-sized copy of one context, not
        # of the batch (4 x 128 tokens x 49k is 100 MB; Binder gives 2 GB in all).
        losses = [
            -row[:-1].float().log_softmax(-1).gather(-1, ids[1:, None])[..., 0]
            for row, ids in zip(logits, tokens, strict=True)
        ]
        return torch.stack(losses)

    @abstractmethod
    def qk_weights(self, layer: int) -> QKWeights: ...

    @abstractmethod
    def _attention(
        self, tokens: Tensor, layer: int, fields: tuple[str, ...], stop: bool
    ) -> AttentionActivations: ...

    @abstractmethod
    def _run(self, tokens: Tensor, interventions: list[Intervention]) -> Tensor: ...

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"{type(self).__name__}({s.name}: {s.n_layers} layers, {s.n_heads} heads "
            f"({s.n_kv_heads} kv), d_model {s.d_model}, {s.positional} positions, on {self.device})"
        )


def normalise(resid: Tensor, normalization: str, eps: float) -> Tensor:
    """The norm before attention without its weight and bias."""
    x = resid.float()
    if normalization == "RMS":
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    elif normalization == "LN":
        x = x - x.mean(-1, keepdim=True)
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    else:
        raise ValueError(f"unknown normalization {normalization!r}")
    return out.to(resid.dtype)


REPLACEMENT = "\ufffd"
MAX_PIECES = 8  # a UTF-8 character is at most 4 bytes; runs of several characters can be longer


def merged_pieces(ids: Sequence[int], decode: Any) -> list[str]:
    """Token texts, with runs of tokens that each hold part of a character decoded together:
    every token of the run shows "<run text>[k/m]" (piece k of m). A token that really decodes to
    U+FFFD (the character itself) stays as it is."""
    texts = [decode([i]) for i in ids]
    i = 0
    while i < len(ids):
        if REPLACEMENT not in texts[i]:
            i += 1
            continue
        for j in range(i + 2, min(len(ids), i + MAX_PIECES) + 1):
            whole = decode(list(ids[i:j]))
            if REPLACEMENT not in whole:
                for k in range(i, j):
                    texts[k] = f"{whole}[{k - i + 1}/{j - i}]"
                i = j
                break
        else:
            i += 1
    return texts


def positions_index(
    positions: Sequence[int] | slice | None, offset: int = 0, length: int | None = None
) -> Any:
    """The index, into a run of `length` positions that starts at absolute position `offset`,
    of the absolute `positions` that fall inside it; None when none do. (A cached generation
    step runs the positions after the cache's: offset = the cache's length.)"""
    if positions is None:
        return slice(None)
    if offset == 0 and length is None:
        return positions
    end = offset + (length if length is not None else 1 << 62)
    if isinstance(positions, slice):
        if positions.step not in (None, 1):
            raise ValueError(f"positions {positions}: a slice with a step is not supported")
        start = max(positions.start or 0, offset)
        stop = end if positions.stop is None else min(positions.stop, end)
        return slice(start - offset, stop - offset) if start < stop else None
    inside = [int(p) - offset for p in positions if offset <= int(p) < end]
    return inside or None


def add_at(resid: Tensor, vector: Tensor, index: Any) -> Tensor:
    """resid [batch pos d] + vector ([d] or [batch, d]) at the positions `index` (a copy). An
    activation split into heads [batch pos heads d_head] takes a vector of heads * d_head."""
    out = resid.reshape(*resid.shape[:2], -1).clone()
    v = vector.to(out)
    out[:, index] += v[:, None, :] if v.ndim == 2 else v
    return out.reshape(resid.shape)
