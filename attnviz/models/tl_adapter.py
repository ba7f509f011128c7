"""The adapter over a TransformerLens HookedTransformer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnviz.models import hf_layout
from attnviz.models.adapter import (
    AttentionActivations,
    ModelAdapter,
    ModelSpec,
    QKWeights,
    add_at,
    normalise,
    positions_index,
)
from attnviz.models.hf_layout import RotaryCache
from attnviz.models.interventions import (
    AddToResidual,
    AddToZ,
    Intervention,
    ReplacePattern,
    Splice,
)
from attnviz.models.rotary import Rotary

_SPLICE_HOOKS = {
    "resid_pre": "blocks.{L}.hook_resid_pre",
    "z": "blocks.{L}.attn.hook_z",
    "attn_out": "blocks.{L}.hook_attn_out",
    "resid_post": "blocks.{L}.hook_resid_post",
}


def spec_from_tl(model: Any, name: str | None = None) -> ModelSpec:
    cfg = model.cfg
    norm = cfg.normalization_type or "LN"
    if norm not in ("LN", "LNPre", "RMS", "RMSPre"):
        raise ValueError(f"normalization {norm!r} is not supported (LayerNorm and RMSNorm are)")
    if cfg.positional_embedding_type not in ("standard", "rotary", "shortformer"):
        raise ValueError(
            f"positional embedding {cfg.positional_embedding_type!r} is not supported yet: "
            "attnviz handles absolute (GPT-2) and rotary (Llama) positions"
        )
    tok = model.tokenizer
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    return ModelSpec(
        name=name or cfg.model_name,
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_key_value_heads or cfg.n_heads,
        d_head=cfg.d_head,
        n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab,
        positional="rotary" if cfg.positional_embedding_type == "rotary" else "absolute",
        normalization="RMS" if norm.startswith("RMS") else "LN",
        norm_eps=cfg.eps,
        attn_scale=float(cfg.attn_scale if cfg.use_attn_scale else 1.0),
        bos_token_id=bos,
    )


class TransformerLensAdapter(ModelAdapter):
    backend = "transformer_lens"
    one_pass_patterns = True  # each_pattern reads every layer in one forward pass

    def __init__(self, model: Any, name: str | None = None, spec: ModelSpec | None = None):
        model.eval()
        super().__init__(spec or spec_from_tl(model, name), model.tokenizer, model.cfg.device)
        self.model = model
        self.device = next(model.parameters()).device
        self._rotary: dict[int, RotaryCache] = {}

    def _hook(self, layer: int, name: str) -> str:
        return f"blocks.{layer}.{name}"

    def _attention(
        self, tokens: Tensor, layer: int, fields: tuple[str, ...], stop: bool
    ) -> AttentionActivations:
        rotary = self.spec.positional == "rotary"
        names = {
            "resid_pre": self._hook(layer, "hook_resid_pre"),
            "q": self._hook(layer, "attn.hook_q"),
            "k": self._hook(layer, "attn.hook_k"),
            "q_rot": self._hook(layer, "attn.hook_rot_q" if rotary else "attn.hook_q"),
            "k_rot": self._hook(layer, "attn.hook_rot_k" if rotary else "attn.hook_k"),
            "v": self._hook(layer, "attn.hook_v"),
            "z": self._hook(layer, "attn.hook_z"),
            "pattern": self._hook(layer, "attn.hook_pattern"),
        }
        wanted = {"resid_pre" if f == "resid_normed" else f for f in fields}
        hook_names = {names[f] for f in wanted}
        _, cache = self.model.run_with_cache(
            tokens,
            names_filter=lambda n: n in hook_names,
            stop_at_layer=layer + 1 if stop else None,
        )
        acts = AttentionActivations(layer=layer, tokens=tokens)
        for f in fields:
            if f == "resid_normed":
                resid = cache[names["resid_pre"]]
                acts.resid_normed = normalise(resid, self.spec.normalization, self.spec.norm_eps)
            else:
                setattr(acts, f, cache[names[f]])
        return acts

    def each_pattern(self, tokens: Tensor, fn: Any, layers: Any = None) -> None:
        tokens = self.check_tokens(tokens)
        wanted = list(range(self.spec.n_layers)) if layers is None else list(layers)
        last = max(wanted)
        hooks = [
            (self._hook(L, "attn.hook_pattern"), lambda p, hook, L=L: fn(L, p.detach()))
            for L in wanted
        ]
        with torch.no_grad():
            self.model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=last + 1)

    def qk_weights(self, layer: int) -> QKWeights:
        attn = self.model.blocks[self.check_layer(layer)].attn
        gqa = self.spec.n_kv_heads != self.spec.n_heads
        W_K = attn._W_K if gqa else attn.W_K
        b_K = attn._b_K if gqa else attn.b_K
        W_Q, b_Q = attn.W_Q, attn.b_Q
        ln = self.model.blocks[layer].ln1
        # A model loaded without fold_ln keeps the norm's weight / bias: fold them here.
        w = getattr(ln, "w", None)
        b = getattr(ln, "b", None)
        if b is not None:
            b_Q = b_Q + torch.einsum("d,hde->he", b, W_Q)
            b_K = b_K + torch.einsum("d,hde->he", b, W_K)
        if w is not None:
            W_Q = W_Q * w[None, :, None]
            W_K = W_K * w[None, :, None]
        return QKWeights(W_Q=W_Q.detach(), b_Q=b_Q.detach(), W_K=W_K.detach(), b_K=b_K.detach())

    def output_weights(self, layer: int) -> Tensor:
        return self.model.blocks[self.check_layer(layer)].attn.W_O.detach()

    def rotary(self, layer: int, n_pos: int) -> Rotary | None:
        if self.spec.positional != "rotary":
            return None
        if layer not in self._rotary:
            attn, cfg = self.model.blocks[layer].attn, self.model.cfg

            def make(size: int) -> Rotary:
                sin, cos = attn.calculate_sin_cos_rotary(
                    cfg.rotary_dim, size, base=cfg.rotary_base, dtype=torch.float32
                )
                return Rotary(
                    cos=cos.to(self.device),
                    sin=sin.to(self.device),
                    adjacent_pairs=bool(cfg.rotary_adjacent_pairs),
                )

            self._rotary[layer] = RotaryCache(make)
        return self._rotary[layer].get(n_pos)

    def _run(self, tokens: Tensor, interventions: list[Intervention]) -> Tensor:
        hooks = [self._tl_hook(iv) for iv in interventions]
        return self.model.run_with_hooks(tokens, fwd_hooks=hooks)

    def _forward_cached(
        self, tokens: Tensor, interventions: list[Intervention], cache: Any
    ) -> tuple[Tensor, Any]:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        if cache is None:
            cache = TransformerLensKeyValueCache.init_cache(
                self.model.cfg, self.device, tokens.shape[0]
            )
        offset = cache[0].past_keys.shape[1]
        self.check_tokens(torch.zeros(1, offset + tokens.shape[1], dtype=torch.long))
        hooks = [self._tl_hook(iv, offset) for iv in interventions]
        with self.model.hooks(fwd_hooks=hooks):
            logits = self.model(tokens, past_kv_cache=cache)
        return logits, cache

    def _tl_hook(self, iv: Intervention, offset: int = 0):
        L = iv.layer
        if isinstance(iv, ReplacePattern):
            heads = list(iv.heads)

            def replace_pattern(pattern, hook):
                pattern = pattern.clone()
                pattern[:, heads] = iv.pattern.to(pattern)
                return pattern

            return self._hook(L, "attn.hook_pattern"), replace_pattern
        if isinstance(iv, AddToResidual):

            def add_vector(resid, hook):
                index = positions_index(iv.positions, offset, resid.shape[1])
                return resid if index is None else add_at(resid, iv.vector, index)

            return self._hook(L, "hook_resid_pre"), add_vector
        if isinstance(iv, AddToZ):

            def add_to_z(z, hook):  # [batch pos heads d_head]
                index = positions_index(iv.positions, offset, z.shape[1])
                return z if index is None else add_at(z, iv.vector, index)

            return self._hook(L, "attn.hook_z"), add_to_z
        if isinstance(iv, Splice):

            def splice(act, hook):
                if iv.site == "z":
                    flat = act.flatten(-2)
                    return iv.module(flat).reshape(act.shape).to(act)
                return iv.module(act).to(act)

            return _SPLICE_HOOKS[iv.site].format(L=L), splice
        raise TypeError(f"unknown intervention {iv!r}")


class TransformerBridgeAdapter(TransformerLensAdapter):
    """TransformerLens 3.x's TransformerBridge: TransformerLens hook names over the Hugging Face
    modules themselves. Hooks come from the bridge; the spec, query/key weights and rotary tables
    come from the wrapped HF model (the bridge's config does not always carry them).

    Booting a bridge rewires the HF model it wraps: give it a model of its own, not one that
    an nnsight adapter also traces."""

    backend = "transformer_bridge"
    one_pass_patterns = False  # its hooks are read one layer at a time

    def __init__(self, bridge: Any, name: str | None = None, bos_token_id: int | None = None):
        if not getattr(bridge, "compatibility_mode", False):
            # Hook aliases (blocks.L.attn.hook_q ...) without re-processing the weights.
            bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
        self.hf_model = bridge.original_model
        label = name or getattr(bridge.cfg, "model_name", None) or "model"
        if bos_token_id is None:
            bos_token_id = getattr(bridge.tokenizer, "bos_token_id", None)
        spec = hf_layout.spec_from_hf(self.hf_model, label, bos_token_id)
        super().__init__(bridge, label, spec=spec)
        self._hf_rotary = RotaryCache(lambda n: hf_layout.rotary_tables(self.hf_model, n))

    def qk_weights(self, layer: int) -> QKWeights:
        return hf_layout.qk_weights(self.hf_model, self.spec, self.check_layer(layer))

    def output_weights(self, layer: int) -> Tensor:
        return hf_layout.output_weights(self.hf_model, self.spec, self.check_layer(layer))

    # The bridge's forward takes no TransformerLens KV cache: generation reruns the sequence.
    _forward_cached = ModelAdapter._forward_cached

    def rotary(self, layer: int, n_pos: int) -> Rotary | None:
        return self._hf_rotary.get(n_pos)
