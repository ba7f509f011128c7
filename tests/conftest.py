"""Shared fixtures: tiny random models (fast) and the embedded SmolLM2 (slow, loaded once)."""

import pytest

from tests.embedded_fixtures import (  # noqa: F401
    smollm2,
    smollm2_bridge,
    smollm2_hf,
    smollm2_nnsight,
)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The embedded SmolLM2 tokenizer (converted once if its files are missing)."""
    from tests.tiny_models import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_adapter(tiny_tokenizer):
    """A 2-layer random Llama (rotary, GQA 4 heads / 2 kv) behind the nnsight adapter; BOS id 0."""
    from attnviz.models.nnsight_adapter import NNsightAdapter
    from tests.tiny_models import tiny_llama

    return NNsightAdapter(tiny_llama(seed=0), tiny_tokenizer, "tiny-llama", bos_token_id=0)
