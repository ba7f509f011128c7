"""The real embedded model, SmolLM2-135M-Instruct, through both adapters."""

from __future__ import annotations

import pytest
import torch

import attnviz
from attnviz.errors import (
    ContextTooLongError,
    EmptyTextError,
    LayerOutOfRangeError,
    ModelUnavailableError,
    UnknownModelError,
)

pytestmark = pytest.mark.slow

TEXT = "The quick brown fox jumps over the lazy dog. Then the quick brown fox ran home to sleep."


def test_load_model_default_is_the_embedded_smollm2(smollm2):
    adapter = attnviz.load_model()
    s = adapter.spec
    assert (s.name, s.n_layers, s.n_heads, s.n_kv_heads, s.d_head, s.d_model) == (
        "smollm2-135m",
        30,
        9,
        3,
        64,
        576,
    )
    assert s.positional == "rotary" and s.normalization == "RMS"
    assert adapter.backend == "transformer_lens"
    assert adapter.to_tokens("Hi")[0, 0].item() == 0  # contexts start with <|endoftext|>
    # load_model builds it from the saved TransformerLens weights, the fixture by converting the
    # Hugging Face model: the same model either way.
    from attnviz.models.embedded import converted_dir

    assert (converted_dir() / "transformer_lens-float32.safetensors").is_file()
    assert adapter.spec == smollm2.spec
    tokens = smollm2.to_tokens(TEXT)
    torch.testing.assert_close(adapter.run(tokens), smollm2.run(tokens), rtol=0, atol=1e-5)


def test_real_weights_know_facts(smollm2):
    tokens = smollm2.to_tokens("The capital of France is")
    top = smollm2.run(tokens)[0, -1].argmax().item()
    assert smollm2.tokenizer.decode([top]).strip() == "Paris"


def test_transformer_lens_and_hugging_face_logits_agree(smollm2, smollm2_hf):
    hf_model, _ = smollm2_hf
    tokens = smollm2.to_tokens(TEXT)
    with torch.no_grad():
        hf_logits = hf_model(tokens).logits
    diff = (smollm2.run(tokens) - hf_logits).abs().max().item()
    # Measured 6e-5 on logits of magnitude ~30 (float32, CPU).
    assert diff < 1e-3, diff


@pytest.mark.parametrize("backend", ["smollm2", "smollm2_nnsight", "smollm2_bridge"])
@pytest.mark.parametrize("layer", [0, 15, 29])
def test_pattern_recomputed_from_q_and_k(request, backend, layer):
    adapter = request.getfixturevalue(backend)
    tokens = adapter.to_tokens(TEXT)
    acts = adapter.attention(tokens, layer)
    recomputed = adapter.pattern_from_qk(acts.q, acts.k, layer)
    assert (recomputed - acts.pattern).abs().max().item() < 1e-5
    assert acts.k.shape[2] == 3 and acts.q.shape[2] == 9  # grouped-query attention


def test_backends_agree(smollm2, smollm2_nnsight, smollm2_bridge):
    tokens = smollm2.to_tokens(TEXT)
    assert torch.allclose(smollm2.run(tokens), smollm2_nnsight.run(tokens), atol=1e-3)
    assert torch.allclose(smollm2_bridge.run(tokens), smollm2_nnsight.run(tokens), atol=1e-4)
    a = smollm2.attention(tokens, 7, ["resid_normed", "q", "k", "pattern"])
    b = smollm2_nnsight.attention(tokens, 7, ["resid_normed", "q", "k", "pattern"])
    for name in ("resid_normed", "q", "k", "pattern"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-4), name


def test_layer_out_of_range(smollm2):
    with pytest.raises(
        LayerOutOfRangeError, match=r"layer 30 is out of range: smollm2-135m has layers 0-29"
    ):
        smollm2.attention(smollm2.to_tokens(TEXT), 30)
    with pytest.raises(LayerOutOfRangeError):
        smollm2.attention(smollm2.to_tokens(TEXT), -1)


def test_empty_text(smollm2):
    with pytest.raises(EmptyTextError, match="empty"):
        smollm2.to_tokens("   ")
    with pytest.raises(EmptyTextError, match="no tokens"):
        smollm2.attention(torch.zeros(1, 0, dtype=torch.long), 0)


def test_context_too_long(smollm2):
    long_tokens = torch.zeros(1, 8193, dtype=torch.long)
    with pytest.raises(
        ContextTooLongError, match="8193 tokens but smollm2-135m allows at most 8192"
    ):
        smollm2.attention(long_tokens, 0)
    text = "word " * 9000
    with pytest.raises(ContextTooLongError, match="truncate=True"):
        smollm2.to_tokens(text)
    assert smollm2.to_tokens(text, truncate=True).shape == (1, 8192)


def test_tokens_from_another_tokenizer(smollm2):
    with pytest.raises(ValueError, match="another tokenizer"):
        smollm2.run(torch.tensor([[50256, 60000]]))


def test_unknown_and_offline_models(monkeypatch):
    with pytest.raises(UnknownModelError, match="smollm2-135m"):
        attnviz.load_model("gpt-7")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("attnviz.models.loading._cached", lambda hf_id: False)
    with pytest.raises(ModelUnavailableError, match=r"load_model\('smollm2-135m'\)"):
        attnviz.load_model("gpt2")
    with pytest.raises(ModelUnavailableError, match="hub"):
        attnviz.load_model("HuggingFaceTB/SmolLM2-360M")
