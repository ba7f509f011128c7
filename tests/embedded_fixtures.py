"""Session fixtures around the embedded SmolLM2-135M (loaded once; ~15 s on 2 cores)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_hf():
    from attnviz.models.embedded import load_hf_smollm2

    return load_hf_smollm2()


@pytest.fixture(scope="session")
def smollm2(smollm2_hf):
    """The embedded model behind the TransformerLens adapter (what load_model() returns)."""
    from attnviz.models.loading import _wrap_hf
    from attnviz.models.registry import resolve

    hf_model, tokenizer = smollm2_hf
    return _wrap_hf(hf_model, tokenizer, resolve("smollm2-135m"), "transformer_lens", "cpu", None)


@pytest.fixture(scope="session")
def smollm2_nnsight(smollm2_hf):
    from attnviz.models.loading import _wrap_hf
    from attnviz.models.registry import resolve

    hf_model, tokenizer = smollm2_hf
    return _wrap_hf(hf_model, tokenizer, resolve("smollm2-135m"), "nnsight", "cpu", None)


@pytest.fixture(scope="session")
def smollm2_bridge():
    """Its own copy of the weights: booting a bridge rewires the HF modules it wraps."""
    from attnviz.models.embedded import load_hf_smollm2
    from attnviz.models.loading import _wrap_hf
    from attnviz.models.registry import resolve

    hf_model, tokenizer = load_hf_smollm2()
    return _wrap_hf(hf_model, tokenizer, resolve("smollm2-135m"), "transformer_bridge", "cpu", None)
