"""The adapter over any Hugging Face causal LM, traced with nnsight (eager attention).

Two layouts are known: Llama-like (Llama, SmolLM2, Mistral, Qwen2: q/k/v/o projections, rotary)
and GPT-2 (fused c_attn, absolute positions). Replacing a head's pattern is done exactly by
replacing its z with pattern @ v, so it needs no access to the attention function's locals.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from attnviz.models.adapter import (
    AddToResidual,
    AttentionActivations,
    Intervention,
    ModelAdapter,
    ModelSpec,
    QKWeights,
    ReplacePattern,
    Splice,
    normalise,
    positions_index,
)
from attnviz.models.rotary import Rotary
from attnviz.models.tl_convert import LLAMA_LIKE
from attnviz.analysis.patterns import expand_kv_heads


def _language_model(hf_model: Any, tokenizer: Any):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nnsight 0.8 marks LanguageModel as deprecated
        from nnsight import LanguageModel

        return LanguageModel(hf_model, tokenizer=tokenizer)


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
        )
    if c.model_type == "gpt2":
        if c.scale_attn_by_inverse_layer_idx or c.reorder_and_upcast_attn:
            raise NotImplementedError("GPT-2 variants with per-layer attention scaling are not supported")
        d_head = c.n_embd // c.n_head
        return ModelSpec(
            name=name, n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, n_kv_heads=c.n_head,
            d_head=d_head, n_ctx=c.n_positions, d_vocab=c.vocab_size, positional="absolute",
            normalization="LN", norm_eps=float(c.layer_norm_epsilon),
            attn_scale=float(d_head**0.5) if c.scale_attn_weights else 1.0,
            bos_token_id=bos_token_id,
        )
    raise NotImplementedError(
        f"the nnsight adapter does not know the layout of {c.model_type!r} models yet; "
        f"it knows {', '.join((*LLAMA_LIKE, 'gpt2'))}"
    )


class NNsightAdapter(ModelAdapter):
    backend = "nnsight"

    def __init__(self, hf_model: Any, tokenizer: Any, name: str, bos_token_id: int | None = None):
        hf_model.eval()
        if bos_token_id is None:
            bos_token_id = getattr(tokenizer, "bos_token_id", None)
        spec = spec_from_hf(hf_model, name, bos_token_id)
        super().__init__(spec, tokenizer, next(hf_model.parameters()).device)
        self.hf_model = hf_model
        self.lm = _language_model(hf_model, tokenizer)
        self.llama = hf_model.config.model_type in LLAMA_LIKE
        self._rotary: Rotary | None = None

    # ---- module paths ------------------------------------------------------------------

    def _layers(self, root: Any) -> Any:
        return root.model.layers if self.llama else root.transformer.h

    def _norm(self, layer: int) -> Any:
        block = self._layers(self.hf_model)[layer]
        return block.input_layernorm if self.llama else block.ln_1

    # ---- reading -----------------------------------------------------------------------

    def _attention(self, tokens: Tensor, layer: int, fields: tuple[str, ...]) -> AttentionActivations:
        s = self.spec
        b, n = tokens.shape
        need = set(fields)
        saved: dict[str, Any] = {}  # made outside: nnsight runs the block's body separately
        with self.lm.trace(tokens) as tracer:
            block = self._layers(self.lm)[layer]
            attn = block.self_attn if self.llama else block.attn
            # nnsight requires reading modules in the order they run.
            if "resid_normed" in need:
                saved["resid"] = block.input.save()
            if need & {"q", "k", "q_rot", "k_rot", "v"}:
                if self.llama:
                    saved["q"] = attn.q_proj.output.save()
                    saved["k"] = attn.k_proj.output.save()
                    saved["v"] = attn.v_proj.output.save()
                else:
                    saved["qkv"] = attn.c_attn.output.save()
            if "z" in need:
                saved["z"] = (attn.o_proj if self.llama else attn.c_proj).input.save()
            if "pattern" in need:
                saved["pattern"] = attn.output[1].save()
            tracer.stop()
        acts = AttentionActivations(layer=layer, tokens=tokens)
        if "resid" in saved:
            acts.resid_normed = normalise(saved["resid"], s.normalization, s.norm_eps)
        if "qkv" in saved:
            q, k, v = saved["qkv"].split(s.d_model, dim=-1)
            saved.update(q=q, k=k, v=v)
        heads = {"q": s.n_heads, "k": s.n_kv_heads, "v": s.n_kv_heads}
        for f, h in heads.items():
            if f in saved:
                saved[f] = saved[f].reshape(b, n, h, s.d_head)
        for f in ("q", "k", "v"):
            if f in need:
                setattr(acts, f, saved[f])
        if "q_rot" in need:
            acts.q_rot = self.rotate(saved["q"], layer)
        if "k_rot" in need:
            acts.k_rot = self.rotate(saved["k"], layer)
        if "z" in need:
            acts.z = saved["z"].reshape(b, n, s.n_heads, s.d_head)
        if "pattern" in need:
            acts.pattern = saved["pattern"]
        return acts

    def qk_weights(self, layer: int) -> QKWeights:
        s = self.spec
        block = self._layers(self.hf_model)[self.check_layer(layer)]
        norm = self._norm(layer)
        if self.llama:
            attn = block.self_attn
            W_Q = attn.q_proj.weight.T  # [d_model, n_heads*d_head]
            W_K = attn.k_proj.weight.T
            b_Q = attn.q_proj.bias if attn.q_proj.bias is not None else torch.zeros(W_Q.shape[1])
            b_K = attn.k_proj.bias if attn.k_proj.bias is not None else torch.zeros(W_K.shape[1])
        else:
            W = block.attn.c_attn.weight  # Conv1D: x @ W + b, [d_model, 3*d_model]
            W_Q, W_K = W[:, : s.d_model], W[:, s.d_model : 2 * s.d_model]
            b_Q = block.attn.c_attn.bias[: s.d_model]
            b_K = block.attn.c_attn.bias[s.d_model : 2 * s.d_model]
        w = norm.weight
        bias = getattr(norm, "bias", None)
        b_Q, b_K = b_Q.to(W_Q), b_K.to(W_K)
        if bias is not None:
            b_Q = b_Q + bias @ W_Q
            b_K = b_K + bias @ W_K
        W_Q = W_Q * w[:, None]
        W_K = W_K * w[:, None]

        def per_head(W: Tensor, bvec: Tensor, h: int) -> tuple[Tensor, Tensor]:
            return (
                W.reshape(s.d_model, h, s.d_head).permute(1, 0, 2).contiguous().detach(),
                bvec.reshape(h, s.d_head).detach(),
            )

        W_Q, b_Q = per_head(W_Q, b_Q, s.n_heads)
        W_K, b_K = per_head(W_K, b_K, s.n_kv_heads)
        return QKWeights(W_Q=W_Q, b_Q=b_Q, W_K=W_K, b_K=b_K)

    def rotary(self, layer: int, n_pos: int) -> Rotary | None:
        if not self.llama:
            return None
        if self._rotary is None or self._rotary.n_pos < n_pos:
            size = max(n_pos, 256 if self._rotary is None else 2 * self._rotary.n_pos)
            rotary_emb = self.hf_model.model.rotary_emb
            probe = torch.zeros(1, dtype=torch.float32, device=self.device)
            positions = torch.arange(size, device=self.device)[None]
            with torch.no_grad():
                cos, sin = rotary_emb(probe, positions)
            # HF's tables repeat each frequency over the two halves of the head (non-adjacent pairs).
            self._rotary = Rotary(cos=cos[0].float(), sin=sin[0].float(), adjacent_pairs=False)
        return self._rotary

    # ---- running with interventions ----------------------------------------------------

    def _run(self, tokens: Tensor, interventions: list[Intervention]) -> Tensor:
        s = self.spec
        by_layer: dict[int, list[Intervention]] = {}
        for iv in interventions:
            by_layer.setdefault(iv.layer, []).append(iv)
        with self.lm.trace(tokens):
            for layer in sorted(by_layer):
                block = self._layers(self.lm)[layer]
                attn = block.self_attn if self.llama else block.attn
                ivs = by_layer[layer]
                for iv in ivs:  # the layer's input comes first
                    if isinstance(iv, AddToResidual):
                        h = block.input
                        h[:, positions_index(iv.positions)] += iv.vector.to(self.device)
                    elif isinstance(iv, Splice) and iv.site == "resid_pre":
                        block.input = iv.module(block.input)
                replacements = [iv for iv in ivs if isinstance(iv, ReplacePattern)]
                z_splices = [iv for iv in ivs if isinstance(iv, Splice) and iv.site == "z"]
                if replacements:
                    v = attn.v_proj.output if self.llama else attn.c_attn.output[..., 2 * s.d_model :]
                if replacements or z_splices:
                    out_proj = attn.o_proj if self.llama else attn.c_proj
                    z = out_proj.input
                    for iv in replacements:
                        z = self._replace_heads(z, v, iv)
                    for iv in z_splices:
                        z = iv.module(z)
                    out_proj.input = z
                for iv in ivs:
                    if isinstance(iv, Splice) and iv.site == "attn_out":
                        attn.output[0][:] = iv.module(attn.output[0])
                for iv in ivs:
                    if isinstance(iv, Splice) and iv.site == "resid_post":
                        block.output = iv.module(block.output)
            logits = self.lm.output.logits.save()
        return logits

    def _replace_heads(self, z: Tensor, v_flat: Tensor, iv: ReplacePattern) -> Tensor:
        s = self.spec
        b, n, _ = z.shape
        v = expand_kv_heads(v_flat.reshape(b, n, s.n_kv_heads, s.d_head), s.n_heads)
        z = z.reshape(b, n, s.n_heads, s.d_head).clone()
        heads = list(iv.heads)
        new = torch.einsum("bhqk,bkhd->bqhd", iv.pattern.to(v), v[:, :, heads])
        z[:, :, heads] = new
        return z.reshape(b, n, s.n_heads * s.d_head)
