"""What attnviz knows of Hugging Face model layouts: where the attention modules are, the spec,
the query/key weights with the norm folded in, and the model's own rotary tables.

Shared by the nnsight adapter and the TransformerBridge adapter, which both run HF modules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnviz.models.adapter import ModelSpec, QKWeights
from attnviz.models.rotary import Rotary

# Llama-like layouts: q/k/v/o projections, input_layernorm, rotary_emb on the inner model.
LLAMA_LIKE = ("llama", "mistral", "qwen2")
KNOWN_LAYOUTS = (*LLAMA_LIKE, "gpt2")


def is_llama_like(hf_model: Any) -> bool:
    return hf_model.config.model_type in LLAMA_LIKE


def blocks(hf_model: Any) -> Any:
    return hf_model.model.layers if is_llama_like(hf_model) else hf_model.transformer.h


def spec_from_hf(hf_model: Any, name: str, bos_token_id: int | None) -> ModelSpec:
    c = hf_model.config
    impl = getattr(c, "_attn_implementation", "eager")
    if impl != "eager":
        raise ValueError(
            f"{name} uses {impl!r} attention, which returns no pattern: load it with "
            "attn_implementation='eager'"
        )
    if c.model_type in LLAMA_LIKE:
        n_heads = c.num_attention_heads
        d_head = getattr(c, "head_dim", None) or c.hidden_size // n_heads
        return ModelSpec(
            name=name, n_layers=c.num_hidden_layers, d_model=c.hidden_size, n_heads=n_heads,
            n_kv_heads=c.num_key_value_heads, d_head=d_head, n_ctx=c.max_position_embeddings,
            d_vocab=c.vocab_size, positional="rotary", normalization="RMS",
            norm_eps=float(c.rms_norm_eps), attn_scale=float(d_head**0.5),
            bos_token_id=bos_token_id,
        )  # fmt: skip
    if c.model_type == "gpt2":
        if c.scale_attn_by_inverse_layer_idx or c.reorder_and_upcast_attn:
            raise NotImplementedError(
                "GPT-2 variants with per-layer attention scaling are not supported"
            )
        d_head = c.n_embd // c.n_head
        return ModelSpec(
            name=name, n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, n_kv_heads=c.n_head,
            d_head=d_head, n_ctx=c.n_positions, d_vocab=c.vocab_size, positional="absolute",
            normalization="LN", norm_eps=float(c.layer_norm_epsilon),
            attn_scale=float(d_head**0.5) if c.scale_attn_weights else 1.0,
            bos_token_id=bos_token_id,
        )  # fmt: skip
    raise NotImplementedError(
        f"attnviz does not know the layout of {c.model_type!r} models yet; "
        f"it knows {', '.join(KNOWN_LAYOUTS)}"
    )


def qk_weights(hf_model: Any, spec: ModelSpec, layer: int) -> QKWeights:
    """W_Q, b_Q, W_K, b_K per head, with the pre-attention norm's weight and bias folded in."""
    block = blocks(hf_model)[layer]
    if is_llama_like(hf_model):
        attn, norm = block.self_attn, block.input_layernorm
        W_Q, W_K = attn.q_proj.weight.T, attn.k_proj.weight.T  # [d_model, heads*d_head]
        b_Q = attn.q_proj.bias if attn.q_proj.bias is not None else torch.zeros(W_Q.shape[1])
        b_K = attn.k_proj.bias if attn.k_proj.bias is not None else torch.zeros(W_K.shape[1])
    else:
        norm = block.ln_1
        W = block.attn.c_attn.weight  # Conv1D: x @ W + b, [d_model, 3*d_model]
        W_Q, W_K = W[:, : spec.d_model], W[:, spec.d_model : 2 * spec.d_model]
        b_Q = block.attn.c_attn.bias[: spec.d_model]
        b_K = block.attn.c_attn.bias[spec.d_model : 2 * spec.d_model]
    b_Q, b_K = b_Q.to(W_Q), b_K.to(W_K)
    bias = getattr(norm, "bias", None)
    if bias is not None:
        b_Q = b_Q + bias @ W_Q
        b_K = b_K + bias @ W_K
    W_Q = W_Q * norm.weight[:, None]
    W_K = W_K * norm.weight[:, None]

    def per_head(W: Tensor, b: Tensor, n_heads: int) -> tuple[Tensor, Tensor]:
        W = W.reshape(spec.d_model, n_heads, spec.d_head).permute(1, 0, 2)
        return W.contiguous().detach(), b.reshape(n_heads, spec.d_head).detach()

    W_Q, b_Q = per_head(W_Q, b_Q, spec.n_heads)
    W_K, b_K = per_head(W_K, b_K, spec.n_kv_heads)
    return QKWeights(W_Q=W_Q, b_Q=b_Q, W_K=W_K, b_K=b_K)


def output_weights(hf_model: Any, spec: ModelSpec, layer: int) -> Tensor:
    """W_O [n_heads d_head d_model]: the attention output projection split by head."""
    block = blocks(hf_model)[layer]
    # Llama's Linear stores [out, in]; GPT-2's Conv1D already [in, out] = [heads*d_head, d_model].
    llama = is_llama_like(hf_model)
    W = block.self_attn.o_proj.weight.T if llama else block.attn.c_proj.weight
    return W.reshape(spec.n_heads, spec.d_head, spec.d_model).detach()


def rotary_tables(hf_model: Any, n_pos: int) -> Rotary | None:
    """The model's own rotary tables (so any rope scaling it uses is kept); None when absolute."""
    if not is_llama_like(hf_model):
        return None
    device = next(hf_model.parameters()).device
    probe = torch.zeros(1, dtype=torch.float32, device=device)
    positions = torch.arange(n_pos, device=device)[None]
    with torch.no_grad():
        cos, sin = hf_model.model.rotary_emb(probe, positions)
    # HF's tables repeat each frequency over the two halves of the head (non-adjacent pairs).
    return Rotary(cos=cos[0].float(), sin=sin[0].float(), adjacent_pairs=False)


class RotaryCache:
    """Grows a model's rotary tables by doubling, so repeated calls cost nothing."""

    def __init__(self, make):
        self._make = make
        self._tables: Rotary | None = None

    def get(self, n_pos: int) -> Rotary | None:
        if self._tables is None or self._tables.n_pos < n_pos:
            size = max(n_pos, 256 if self._tables is None else 2 * self._tables.n_pos)
            self._tables = self._make(size)
        return self._tables
