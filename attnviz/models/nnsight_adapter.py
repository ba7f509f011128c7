"""The adapter over any Hugging Face causal LM, traced with nnsight (eager attention).

Two layouts are known: Llama-like (Llama, SmolLM2, Mistral, Qwen2: q/k/v/o projections, rotary)
and GPT-2 (fused c_attn, absolute positions). Replacing a head's pattern is done exactly by
replacing its z with pattern @ v, so it needs no access to the attention function's locals.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import Tensor

from attnviz.errors import RemoteUnavailableError
from attnviz.hub import ndif_problem
from attnviz.models import hf_layout
from attnviz.models.adapter import (
    AttentionActivations,
    ModelAdapter,
    QKWeights,
    add_at,
    normalise,
    positions_index,
)
from attnviz.models.attention import expand_kv_heads
from attnviz.models.interventions import (
    AddToResidual,
    AddToZ,
    Intervention,
    ReplacePattern,
    Splice,
)
from attnviz.models.rotary import Rotary


def _language_model(hf_model: Any, tokenizer: Any):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nnsight 0.8 marks LanguageModel as deprecated
        from nnsight import LanguageModel

        return LanguageModel(hf_model, tokenizer=tokenizer)


def require_ndif() -> None:
    """Fail at once, with what to do, when remote execution cannot work from here."""
    problem = ndif_problem()
    if problem is not None:
        raise RemoteUnavailableError(
            f"remote=True runs the model on NDIF, but {problem}. Run it here instead "
            "(remote=False, the default: the same code on this machine's CPU or GPU), or connect "
            "to the internet and set an NDIF API key."
        )


class NNsightAdapter(ModelAdapter):
    """remote=True sends every trace to NDIF (the model named by `lm`'s repo id runs there; its
    weights need not be here): reading activations, steering and sweeps run unchanged. Generation
    then reruns the sequence on each step (a KV cache does not cross the network)."""

    backend = "nnsight"

    def __init__(self, hf_model: Any, tokenizer: Any, name: str, bos_token_id: int | None = None,
                 *, remote: bool = False, lm: Any = None):  # fmt: skip
        if remote:
            require_ndif()
        hf_model.eval()
        if bos_token_id is None:
            bos_token_id = getattr(tokenizer, "bos_token_id", None)
        spec = hf_layout.spec_from_hf(hf_model, name, bos_token_id)
        device = torch.device("cpu") if remote else next(hf_model.parameters()).device
        super().__init__(spec, tokenizer, device)
        self.hf_model = hf_model
        self.remote = remote
        self.lm = lm if lm is not None else _language_model(hf_model, tokenizer)
        self.llama = hf_layout.is_llama_like(hf_model)
        self._rotary = hf_layout.RotaryCache(lambda n: hf_layout.rotary_tables(hf_model, n))

    def _trace(self, tokens: Tensor) -> Any:
        return self.lm.trace(tokens, remote=True) if self.remote else self.lm.trace(tokens)

    def _local_weights(self, what: str) -> None:
        if self.remote:
            raise RemoteUnavailableError(
                f"{what} of a remote model are on NDIF, not here: load the model locally "
                "(remote=False) to read its weights"
            )

    # ---- module paths ------------------------------------------------------------------

    def _layers(self, root: Any) -> Any:
        return root.model.layers if self.llama else root.transformer.h

    # ---- reading -----------------------------------------------------------------------

    def _attention(
        self, tokens: Tensor, layer: int, fields: tuple[str, ...], stop: bool
    ) -> AttentionActivations:
        s = self.spec
        b, n = tokens.shape
        need = set(fields)
        saved: dict[str, Any] = {}  # made outside: nnsight runs the block's body separately
        with self._trace(tokens) as tracer:
            block = self._layers(self.lm)[layer]
            attn = block.self_attn if self.llama else block.attn
            # nnsight requires reading modules in the order they run.
            if need & {"resid_pre", "resid_normed"}:
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
            if stop:
                tracer.stop()
        acts = AttentionActivations(layer=layer, tokens=tokens)
        if "resid_normed" in need:
            acts.resid_normed = normalise(saved["resid"], s.normalization, s.norm_eps)
        if "resid_pre" in need:
            acts.resid_pre = saved["resid"]
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
        self._local_weights("the query/key weights")
        return hf_layout.qk_weights(self.hf_model, self.spec, self.check_layer(layer))

    def output_weights(self, layer: int) -> Tensor:
        self._local_weights("the output weights")
        return hf_layout.output_weights(self.hf_model, self.spec, self.check_layer(layer))

    def rotary(self, layer: int, n_pos: int) -> Rotary | None:
        return self._rotary.get(n_pos)

    # ---- running with interventions ----------------------------------------------------

    def _run(self, tokens: Tensor, interventions: list[Intervention]) -> Tensor:
        s = self.spec
        by_layer: dict[int, list[Intervention]] = {}
        for iv in interventions:
            by_layer.setdefault(iv.layer, []).append(iv)
        with self._trace(tokens):
            for layer in sorted(by_layer):
                block = self._layers(self.lm)[layer]
                attn = block.self_attn if self.llama else block.attn
                ivs = by_layer[layer]
                for iv in ivs:  # the layer's input comes first
                    if isinstance(iv, AddToResidual):
                        h = block.input
                        index = positions_index(iv.positions, 0, tokens.shape[1])
                        if index is None:
                            continue
                        v = iv.vector.to(self.device)
                        h[:, index] += v[:, None] if v.ndim == 2 else v
                    elif isinstance(iv, Splice) and iv.site == "resid_pre":
                        block.input = iv.module(block.input)
                replacements = [iv for iv in ivs if isinstance(iv, ReplacePattern)]
                z_splices = [iv for iv in ivs if isinstance(iv, Splice) and iv.site == "z"]
                z_adds = [iv for iv in ivs if isinstance(iv, AddToZ)]
                if replacements:
                    v = (
                        attn.v_proj.output
                        if self.llama
                        else attn.c_attn.output[..., 2 * s.d_model :]
                    )
                if replacements or z_splices or z_adds:
                    out_proj = attn.o_proj if self.llama else attn.c_proj
                    z = out_proj.input
                    for iv in replacements:
                        z = self._replace_heads(z, v, iv)
                    for iv in z_splices:
                        z = iv.module(z)
                    for iv in z_adds:
                        index = positions_index(iv.positions, 0, tokens.shape[1])
                        if index is not None:
                            z = add_at(z, iv.vector.to(self.device), index)
                    out_proj.input = z
                for iv in ivs:
                    if isinstance(iv, Splice) and iv.site == "attn_out":
                        attn.output[0][:] = iv.module(attn.output[0])
                for iv in ivs:
                    if isinstance(iv, Splice) and iv.site == "resid_post":
                        block.output = iv.module(block.output)
            logits = self.lm.output.logits.save()
        return logits

    def _forward_cached(
        self, tokens: Tensor, interventions: list[Intervention], cache: Any
    ) -> tuple[Tensor, Any]:
        """The Hugging Face model's own KV cache, steered by forward pre-hooks on the layers
        (no tracing: a generation step is one small forward pass)."""
        if self.remote:
            return super()._forward_cached(tokens, interventions, cache)
        offset = 0 if cache is None else int(cache.get_seq_length())
        self.check_tokens(torch.zeros(1, offset + tokens.shape[1], dtype=torch.long))
        handles = []
        for iv in interventions:
            assert isinstance(iv, AddToResidual | AddToZ)

            def add(module: Any, args: tuple, kwargs: dict, iv: Any = iv) -> Any:
                key = "hidden_states" if isinstance(iv, AddToResidual) else "input"
                h = args[0] if args else kwargs[key]
                index = positions_index(iv.positions, offset, h.shape[1])
                if index is None:
                    return None
                h = add_at(h, iv.vector, index)
                return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, key: h})

            block = self._layers(self.hf_model)[iv.layer]
            if isinstance(iv, AddToZ):  # the input of the output projection is hook_z
                block = block.self_attn.o_proj if self.llama else block.attn.c_proj
            handles.append(block.register_forward_pre_hook(add, with_kwargs=True))
        # transformers renamed past_key_values to cache (5.x); take whichever this one has.
        key = (
            "cache"
            if "cache" in inspect.signature(self.hf_model.forward).parameters
            else "past_key_values"
        )
        try:
            out = self.hf_model(input_ids=tokens, use_cache=True, **{key: cache})
        finally:
            for h in handles:
                h.remove()
        return out.logits, getattr(out, key)

    def _replace_heads(self, z: Tensor, v_flat: Tensor, iv: ReplacePattern) -> Tensor:
        s = self.spec
        b, n, _ = z.shape
        v = expand_kv_heads(v_flat.reshape(b, n, s.n_kv_heads, s.d_head), s.n_heads)
        z = z.reshape(b, n, s.n_heads, s.d_head).clone()
        heads = list(iv.heads)
        new = torch.einsum("bhqk,bkhd->bqhd", iv.pattern.to(v), v[:, :, heads])
        z[:, :, heads] = new
        return z.reshape(b, n, s.n_heads * s.d_head)
