"""Build a TransformerLens HookedTransformer from a Hugging Face model already in memory.

TransformerLens's own loader resolves names on the hub; the embedded model (and any model a user
built from a config) has no hub name, so its config is translated here and its weights go through
TransformerLens's converters.

Converting holds the Hugging Face model, the converted weights and the new model at once (~2.7
GB peak for the 135M embedded model, more than Binder's 2 GB). So the converted, LN-folded
weights are saved once (``save_hooked_transformer``) and later loads build the model empty and
take the saved tensors as its parameters (``load_hooked_transformer``: ~0.6 GB peak).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from attnviz.models.hf_layout import LLAMA_LIKE


def tl_config_dict(hf_config: Any) -> dict[str, Any]:
    kind = hf_config.model_type
    if kind in LLAMA_LIKE:
        n_heads = hf_config.num_attention_heads
        d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads
        n_kv = hf_config.num_key_value_heads
        rope = getattr(hf_config, "rope_parameters", None) or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default":
            raise NotImplementedError(
                f"rope scaling {rope_type!r} is not translated to TransformerLens here: "
                "load this model with backend='nnsight'"
            )
        return {
            "d_model": hf_config.hidden_size,
            "d_head": d_head,
            "n_heads": n_heads,
            "d_mlp": hf_config.intermediate_size,
            "n_layers": hf_config.num_hidden_layers,
            "n_ctx": hf_config.max_position_embeddings,
            "eps": hf_config.rms_norm_eps,
            "d_vocab": hf_config.vocab_size,
            "act_fn": hf_config.hidden_act,
            "n_key_value_heads": n_kv if n_kv != n_heads else None,
            "normalization_type": "RMS",
            "positional_embedding_type": "rotary",
            "rotary_adjacent_pairs": False,
            "rotary_dim": d_head,
            "rotary_base": float(rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))),
            "final_rms": True,
            "gated_mlp": True,
            "original_architecture": "LlamaForCausalLM",
            "tie_word_embeddings": bool(getattr(hf_config, "tie_word_embeddings", False)),
        }
    if kind == "gpt2":
        return {
            "d_model": hf_config.n_embd,
            "d_head": hf_config.n_embd // hf_config.n_head,
            "n_heads": hf_config.n_head,
            "d_mlp": hf_config.n_inner or 4 * hf_config.n_embd,
            "n_layers": hf_config.n_layer,
            "n_ctx": hf_config.n_positions,
            "eps": hf_config.layer_norm_epsilon,
            "d_vocab": hf_config.vocab_size,
            "act_fn": hf_config.activation_function,
            "use_attn_scale": bool(getattr(hf_config, "scale_attn_weights", True)),
            "scale_attn_by_inverse_layer_idx": bool(hf_config.scale_attn_by_inverse_layer_idx),
            "normalization_type": "LN",
            "original_architecture": "GPT2LMHeadModel",
        }
    raise NotImplementedError(
        f"model type {kind!r} has no TransformerLens translation in attnviz: use backend='nnsight', "
        "or a name TransformerLens knows (see `attnviz models`)"
    )


def hooked_transformer_from_hf(hf_model: Any, tokenizer: Any, name: str, device=None, dtype=None):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import (
        convert_gpt2_weights,
        convert_llama_weights,
    )

    cfg_dict = tl_config_dict(hf_model.config)
    tied = cfg_dict.pop("tie_word_embeddings", False)
    dtype = dtype or torch.float32
    device = device or "cpu"
    cfg = HookedTransformerConfig(
        **cfg_dict, model_name=name, device=str(device), dtype=dtype, default_prepend_bos=True
    )
    if cfg_dict["original_architecture"] == "GPT2LMHeadModel":
        state = convert_gpt2_weights(hf_model, cfg)
    else:
        state = convert_llama_weights(hf_model, cfg)
        if tied:  # the converter reads lm_head, which a tied model shares with the embedding
            state["unembed.W_U"] = hf_model.model.embed_tokens.weight.T
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    # fold_ln is exact; centring would shift logits, which the adapter tests compare with HF's.
    model.load_and_process_state_dict(
        {k: v.to(dtype) for k, v in state.items()},
        fold_ln=True,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    model.to(device)
    model.eval()
    return model


class StaleWeightsError(RuntimeError):
    """Saved weights from another version: convert again."""


def _saved_metadata(normalization_type: str) -> dict[str, str]:
    import transformer_lens

    version = getattr(transformer_lens, "__version__", "?")
    return {"normalization_type": normalization_type, "format": f"1 transformer_lens {version}"}


def save_hooked_transformer(model: Any, path: Path) -> None:
    """The model's (folded) weights as safetensors at `path`, written whole or not at all."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=_saved_metadata(str(model.cfg.normalization_type)))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_hooked_transformer(path: Path, hf_config: Any, tokenizer: Any, name: str, device=None,
                            dtype=None):  # fmt: skip
    """A HookedTransformer with the weights save_hooked_transformer wrote, built without random
    initialisation and without a second copy of the weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg_dict = tl_config_dict(hf_config)
    cfg_dict.pop("tie_word_embeddings", None)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != _saved_metadata("")["format"]:
        raise StaleWeightsError(f"{path} was written by another TransformerLens or attnviz")
    cfg_dict["normalization_type"] = meta["normalization_type"]
    dtype = dtype or torch.float32
    cfg = HookedTransformerConfig(**cfg_dict, model_name=name, device=str(device or "cpu"),
                                  dtype=dtype, default_prepend_bos=True, init_weights=False)  # fmt: skip
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state = {
        k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(path)).items()
    }
    model.load_state_dict(state, strict=True, assign=True)  # the tensors become the parameters
    model.to(device or "cpu")
    model.eval()
    return model
