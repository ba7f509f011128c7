"""Small randomly initialised models built from configs (no download), for fast tests."""

from __future__ import annotations

import functools

import torch

VOCAB = 49152  # the SmolLM2 tokenizer's size, so the embedded tokenizer can serve the tiny models


@functools.cache
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from attnviz.models.embedded import converted_dir, load_hf_smollm2

    if not (converted_dir() / "tokenizer.json").is_file():
        load_hf_smollm2()
    return AutoTokenizer.from_pretrained(str(converted_dir()))


def tiny_llama(seed: int = 0, n_layers: int = 2, sharpen: float = 1.0):
    """Rotary positions, RMSNorm, grouped-query attention (4 query heads share 2 kv heads).

    sharpen > 1 scales W_Q and W_K, so patterns are peaked (as in trained models) rather than
    nearly uniform."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        attn_implementation="eager",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    # Random RMSNorm weights, so folding them into W_Q / W_K is really tested.
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.self_attn.q_proj.weight.mul_(sharpen)
            layer.self_attn.k_proj.weight.mul_(sharpen)
    return model


def tiny_gpt2(seed: int = 0, n_layers: int = 2):
    """Absolute positions, LayerNorm with bias, biased q/k/v."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_embd=64,
        n_layer=n_layers,
        n_head=4,
        n_positions=256,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.ln_1.weight.uniform_(0.5, 1.5)
            block.ln_1.bias.normal_(0, 0.1)
            block.attn.c_attn.bias.normal_(0, 0.1)
    return model


def adapters_for(hf_model, name: str):
    """The same weights behind both backends: (TransformerLens adapter, nnsight adapter)."""
    from attnviz.models.nnsight_adapter import NNsightAdapter
    from attnviz.models.tl_adapter import TransformerLensAdapter
    from attnviz.models.tl_convert import hooked_transformer_from_hf

    tokenizer = smollm2_tokenizer()
    tl = hooked_transformer_from_hf(hf_model, tokenizer, name)
    return TransformerLensAdapter(tl, name), NNsightAdapter(
        hf_model, tokenizer, name, bos_token_id=0
    )


def bridge_adapter_for(hf_model, name: str):
    """The same weights behind TransformerLens's TransformerBridge (booted from a local config)."""
    import tempfile

    from transformer_lens.model_bridge import TransformerBridge

    from attnviz.models.tl_adapter import TransformerBridgeAdapter

    config_dir = tempfile.mkdtemp(prefix="attnviz-bridge-")
    hf_model.config.save_pretrained(config_dir)
    bridge = TransformerBridge.boot_transformers(
        config_dir, hf_model=hf_model, tokenizer=smollm2_tokenizer()
    )
    return TransformerBridgeAdapter(bridge, name, bos_token_id=0)
