"""`load_model`: a name in, a ModelAdapter out, on the best device there is."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from attnviz.device import resolve_device, resolve_dtype
from attnviz.errors import ModelUnavailableError, NotAModelError
from attnviz.hub import hub_reachable, offline_reason
from attnviz.models.adapter import ModelAdapter
from attnviz.models.registry import DEFAULT_MODEL, KnownModel, resolve

BACKENDS = ("transformer_lens", "nnsight", "transformer_bridge")


def load_model(
    name: str = DEFAULT_MODEL,
    backend: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    remote: bool = False,
) -> ModelAdapter:
    """Load a model by name and wrap it in an adapter.

    backend: "transformer_lens" (HookedTransformer; default for the embedded model and
    TransformerLens names), "nnsight" (default for other Hugging Face ids) or "transformer_bridge"
    (TransformerLens 3's TransformerBridge). device: CUDA when available, else CPU.
    remote: run on NDIF through nnsight (its weights are not downloaded); fails at once, saying
    why, when NDIF cannot be used from here.
    """
    entry = resolve(name)
    if remote:
        return _remote(entry, backend)
    if backend is None:
        backend = (
            "nnsight" if entry.source == "hub" and entry.tl_name is None else "transformer_lens"
        )
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {BACKENDS}")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if entry.source == "embedded":
        from attnviz.models.embedded import load_hf_smollm2

        if backend == "transformer_lens":  # from its saved TransformerLens weights
            from attnviz.models.embedded import load_tl_smollm2

            return _tl_adapter(load_tl_smollm2(entry.name, dtype=dt, device=dev), entry)
        hf_model, tokenizer = load_hf_smollm2(dtype=dt, device=dev)
        return _wrap_hf(hf_model, tokenizer, entry, backend, dev, dt)
    _require_hub(entry)
    if backend == "transformer_bridge":
        return _bridge(entry.hf_id, None, None, entry, dev, dt)
    if backend == "transformer_lens" and entry.tl_name is not None:
        from transformer_lens import HookedTransformer

        from attnviz.models.tl_adapter import TransformerLensAdapter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = HookedTransformer.from_pretrained(entry.tl_name, device=str(dev), dtype=dt)
        return TransformerLensAdapter(model, entry.name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(entry.hf_id)
    hf_model = AutoModelForCausalLM.from_pretrained(
        entry.hf_id, dtype=dt, attn_implementation="eager"
    )
    torch.nn.Module.to(hf_model, dev)
    return _wrap_hf(hf_model, tokenizer, entry, backend, dev, dt)


def _remote(entry: KnownModel, backend: str | None) -> ModelAdapter:
    if backend not in (None, "nnsight"):
        raise ValueError(
            f"remote=True runs through nnsight: use backend='nnsight', not {backend!r}"
        )
    from attnviz.models.nnsight_adapter import NNsightAdapter, require_ndif

    require_ndif()
    _require_hub(entry)  # the config and tokenizer still come from the hub
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nnsight import LanguageModel

        lm = LanguageModel(entry.hf_id)  # meta weights: NDIF holds the real ones
    return NNsightAdapter(lm._model, lm.tokenizer, entry.name, entry.bos_token_id,
                          remote=True, lm=lm)  # fmt: skip


def _bridge(source: str, hf_model, tokenizer, entry: KnownModel, dev, dt) -> ModelAdapter:
    from transformer_lens.model_bridge import TransformerBridge

    from attnviz.models.tl_adapter import TransformerBridgeAdapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(
            source, hf_model=hf_model, tokenizer=tokenizer, device=dev, dtype=dt
        )
    return TransformerBridgeAdapter(bridge, entry.name, bos_token_id=entry.bos_token_id)


def _wrap_hf(hf_model, tokenizer, entry: KnownModel, backend: str, dev, dt) -> ModelAdapter:
    if backend == "transformer_bridge":
        from attnviz.models.embedded import converted_dir

        # Booted from the local config next to the converted weights: no hub access.
        return _bridge(str(converted_dir()), hf_model, tokenizer, entry, dev, dt)
    if backend == "nnsight":
        from attnviz.models.nnsight_adapter import NNsightAdapter

        return NNsightAdapter(hf_model, tokenizer, entry.name, bos_token_id=entry.bos_token_id)
    from attnviz.models.tl_convert import hooked_transformer_from_hf

    model = hooked_transformer_from_hf(hf_model, tokenizer, entry.name, device=dev, dtype=dt)
    return _tl_adapter(model, entry)


def _tl_adapter(model, entry: KnownModel) -> ModelAdapter:
    from attnviz.models.tl_adapter import TransformerLensAdapter, spec_from_tl

    spec = spec_from_tl(model, entry.name)
    if entry.bos_token_id is not None:
        from dataclasses import replace

        spec = replace(spec, bos_token_id=entry.bos_token_id)
    return TransformerLensAdapter(model, entry.name, spec=spec)


def _require_hub(entry: KnownModel) -> None:
    """Fail at once, not after a long time-out, when a hub model is neither cached nor reachable."""
    if _cached(entry.hf_id) or (offline_reason() is None and hub_reachable()):
        return
    raise ModelUnavailableError(
        f"{entry.name} is downloaded from the Hugging Face hub, which cannot be reached from here "
        f"(and it is not in the local cache). Offline, use the embedded default: "
        f"attnviz.load_model({DEFAULT_MODEL!r})."
    )


def _cached(hf_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(hf_id, "config.json")
    return isinstance(found, str)


def wrap(model: Any, tokenizer: Any = None, name: str | None = None) -> ModelAdapter:
    """An adapter for a model you already loaded: a HookedTransformer, a Hugging Face causal LM
    (with eager attention), or an nnsight LanguageModel."""
    from transformer_lens import HookedTransformer

    if hasattr(model, "original_model") and hasattr(model, "run_with_cache"):  # TransformerBridge
        from attnviz.models.tl_adapter import TransformerBridgeAdapter

        return TransformerBridgeAdapter(model, name)
    if isinstance(model, HookedTransformer):
        from attnviz.models.tl_adapter import TransformerLensAdapter

        return TransformerLensAdapter(model, name)
    hf_model = getattr(model, "_model", model)  # nnsight keeps the wrapped module here
    if isinstance(hf_model, torch.nn.Module) and hasattr(hf_model, "config"):
        from attnviz.models.nnsight_adapter import NNsightAdapter

        tokenizer = tokenizer or getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("pass the model's tokenizer: wrap(model, tokenizer)")
        label = name or getattr(hf_model.config, "name_or_path", None) or "model"
        return NNsightAdapter(hf_model, tokenizer, label)
    raise TypeError(
        f"cannot wrap a {type(model).__name__}: give a HookedTransformer, a Hugging Face causal "
        "LM or an nnsight LanguageModel"
    )


def as_adapter(model: Any, needed_by: str = "this") -> ModelAdapter:
    """`model` as an attnviz adapter: an adapter as it is; a HookedTransformer, TransformerBridge,
    nnsight LanguageModel or Hugging Face model (with its tokenizer attached) wrapped; anything
    else a NotAModelError saying what to pass."""
    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, str):
        raise NotAModelError(
            f"{needed_by} needs a loaded model, not the name {model!r}: "
            f"model = attnviz.load_model({model!r}) (offline: attnviz.load_model() loads the "
            "embedded default), then pass model"
        )
    if model is None:
        raise NotAModelError(
            f"{needed_by} needs a model, got None: model = attnviz.load_model() (the embedded "
            "default), or attnviz.wrap(your_model) for one you loaded"
        )
    try:
        return wrap(model)
    except ValueError as err:  # a Hugging Face model without its tokenizer
        raise NotAModelError(
            f"{needed_by} cannot use this {type(model).__name__} as it is ({err}): pass "
            "attnviz.wrap(model, tokenizer)"
        ) from None
    except TypeError:
        raise NotAModelError(
            f"{needed_by} needs a model; got a {type(model).__name__}. Pass an attnviz model "
            "(attnviz.load_model(...)), or a HookedTransformer, TransformerBridge, nnsight "
            "LanguageModel or Hugging Face causal LM (attnviz.wrap(model, tokenizer))"
        ) from None
