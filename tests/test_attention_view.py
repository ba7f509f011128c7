"""AttentionView, the Python side: traits, recomputation, errors, long prompts (no browser)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from attnviz.widgets import static
from attnviz.widgets.arrays import decode_array, payload_nbytes
from attnviz.widgets.attention_view import AttentionView, pool_blocks
from attnviz.widgets.static import MissingBundleError

PROMPT = "When Mary and John went to the store, John gave a drink to"

pytestmark = pytest.mark.slow  # the embedded model


@pytest.fixture(autouse=True)
def bundle(monkeypatch, tmp_path):
    """A stand-in bundle, so these tests need no front-end build."""
    (tmp_path / "attention_view.js").write_text("export default { render() {} };\n")
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)


def causal_rows(view: AttentionView) -> np.ndarray:
    x = decode_array(view.patterns)
    n = x.shape[-1]
    future = np.triu(np.ones((n, n), dtype=bool), 1)
    assert np.isnan(x[:, future]).all() and not np.isnan(x[:, ~future]).any()
    return x


def test_traits_after_construction(smollm2):
    view = AttentionView(smollm2, PROMPT, layer=3)
    tokens = smollm2.to_str_tokens(smollm2.to_tokens(PROMPT)[0])
    assert view.tokens == tokens and view.tokens[0] == "<|endoftext|>"
    assert (view.prompt, view.layer, view.head) == (PROMPT, 3, 0)
    assert (view.layers, view.n_heads) == (list(range(30)), 9)
    assert view.error == "" and view.busy is False and view.downsampled == 1
    assert view.patterns["dtype"] == "uint8"
    x = causal_rows(view)
    n = len(tokens)
    assert x.shape == (9, n, n)
    np.testing.assert_allclose(np.nansum(x, axis=-1), 1.0, atol=0.05)
    # the same numbers as the adapter's, within the uint8 step
    want = smollm2.attention(smollm2.to_tokens(PROMPT), 3, ["pattern"]).pattern[0].float().numpy()
    mask = ~np.isnan(x)
    assert np.abs(x[mask] - want[mask]).max() <= view.patterns["scale"] / 2 + 1e-6
    assert "layer 3" in repr(view)


def test_every_trait_is_synced():
    names = ["prompt", "layer", "head", "tokens", "patterns", "layers", "n_heads"]
    names += ["downsampled", "error", "busy"]
    for name in names:
        assert AttentionView.class_traits()[name].metadata.get("sync") is True, name


def test_float16_patterns(smollm2):
    view = AttentionView(smollm2, "Hello there", layer=0, dtype="float16")
    x = causal_rows(view)
    assert view.patterns["dtype"] == "float16"
    np.testing.assert_allclose(np.nansum(x, axis=-1), 1.0, atol=5e-3)


def test_prompt_and_layer_changes_recompute(smollm2):
    view = AttentionView(smollm2, PROMPT, layer=3)
    before = decode_array(view.patterns)
    busy_seen = []
    view.observe(lambda c: busy_seen.append(c["new"]), "busy")

    view.prompt = "The cat sat on the mat"
    assert view.tokens == smollm2.to_str_tokens(smollm2.to_tokens("The cat sat on the mat")[0])
    assert decode_array(view.patterns).shape == (9, len(view.tokens), len(view.tokens))
    assert busy_seen == [True, False] and view.busy is False

    view.prompt = PROMPT
    np.testing.assert_array_equal(decode_array(view.patterns), before)
    view.layer = 4
    after = decode_array(view.patterns)
    assert after.shape == before.shape and not np.allclose(
        np.nan_to_num(after), np.nan_to_num(before)
    )


def test_head_is_front_end_only(smollm2, monkeypatch):
    view = AttentionView(smollm2, "One two three", layer=1)
    calls = []
    monkeypatch.setattr(view, "compute", lambda *a: calls.append(a))
    view.head = 8
    assert calls == [] and view.head == 8
    view.head = 9  # shown in the widget, not raised; the shown head stays
    assert "head 9 is out of range" in view.error and "heads 0-8" in view.error
    assert view.head == 8 and calls == []
    view.head = 2
    assert view.error == "" and view.head == 2
    bad = AttentionView(smollm2, "One two three", layer=1, head=12)
    assert "head 12 is out of range" in bad.error and bad.head == 0 and len(bad.tokens) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": ""}, "empty"),
        ({"prompt": "   \n"}, "empty"),
        ({"layer": 30}, "layer 30 is out of range: smollm2-135m has layers 0-29"),
        ({"layer": -1}, "out of range"),
    ],
)
def test_bad_input_sets_error_and_keeps_the_picture(smollm2, change, message):
    view = AttentionView(smollm2, PROMPT, layer=3)
    tokens, patterns = list(view.tokens), view.patterns
    for name, value in change.items():
        setattr(view, name, value)  # no exception: the widget shows it
    assert message in view.error
    assert view.tokens == tokens and view.patterns is patterns and view.busy is False
    assert view.layer == 3  # the layer still on screen, not the one refused
    view.prompt, view.layer = "A fresh start", 2  # a good input clears the error
    assert view.error == "" and view.tokens[1] == "A"


def test_too_long_prompt_is_an_error(smollm2, monkeypatch):
    monkeypatch.setattr(smollm2, "spec", dataclasses.replace(smollm2.spec, n_ctx=16))
    view = AttentionView(smollm2, "short prompt", layer=0)
    assert view.error == ""
    view.prompt = "word " * 40
    assert "allows at most 16" in view.error and view.tokens[1:] == ["short", " prompt"]
    assert "tick 'cut to context' to show its first 16 tokens" in view.error
    assert "truncate=True" not in view.error  # widget users cannot pass that
    view.truncate = True  # the widget's "cut to context" box
    n = 1 + len(smollm2.tokenizer("word " * 40, add_special_tokens=False)["input_ids"])
    assert view.error == "" and len(view.tokens) == 16 and view.cut_from == n > 16
    view.prompt = "short again"
    assert view.cut_from == 0 and len(view.tokens) == 3


def test_a_bad_first_input_shows_an_error_not_a_traceback(smollm2):
    view = AttentionView(smollm2, "", layer=0)
    assert "empty" in view.error and view.tokens == [] and view.patterns == {}
    view.prompt = "now it works"
    assert view.error == "" and len(view.tokens) == 4


def test_long_prompts_are_max_pooled_and_stay_compact(smollm2):
    text = " ".join(f"word{i}" for i in range(400))  # about 1200 tokens
    view = AttentionView(smollm2, text, layer=0)
    n = len(view.tokens)
    assert n > 1024 and view.error == ""
    factor = view.downsampled
    assert factor == -(-n // 512) >= 3
    side = -(-n // factor)
    assert view.patterns["shape"] == [9, side, side] and side <= 512
    assert view.patterns["dtype"] == "uint8"
    assert payload_nbytes(view.patterns) <= 9 * 512 * 512 + 200
    x = decode_array(view.patterns)
    # a block is masked only when all of it lies in the future; the diagonal is never masked
    assert np.isnan(x[:, 0, 1:]).all() and not np.isnan(np.diagonal(x, axis1=1, axis2=2)).any()
    # max-pooling keeps the sharpest weight of each block
    full = smollm2.attention(smollm2.to_tokens(text), 0, ["pattern"]).pattern[0].float()
    top = full[:, :factor, :factor].amax(dim=(-1, -2)).numpy()
    np.testing.assert_allclose(x[:, 0, 0], top, atol=view.patterns["scale"] / 2 + 1e-6)


def test_pool_blocks_pads_with_masked_cells():
    p = torch.tril(torch.ones(2, 5, 5)) / torch.arange(1, 6)[:, None]
    same, mask = pool_blocks(p, 1)
    assert same is p and mask.equal(torch.ones(5, 5, dtype=torch.bool).triu(1))
    pooled, mask = pool_blocks(p, 2)
    assert pooled.shape == (2, 3, 3)
    assert mask[0].tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    assert pooled[0, 0, 0] == 1.0 and pooled[0, 2, 2] == pytest.approx(0.2)


@pytest.mark.parametrize("n, factor", [(12, 2), (13, 4), (7, 7), (9, 3), (5, 8)])
def test_block_extrema_match_max_pooling_of_a_padded_pattern(n, factor):
    """Rows-then-columns reduction = max_pool2d over blocks, partial end blocks included."""
    import torch.nn.functional as F

    from attnviz.widgets.pooling import block_extrema, pool_signed

    x = torch.randn(3, n, n, generator=torch.Generator().manual_seed(n)).tril()
    pad = -n % factor
    padded = F.pad(x, (0, pad, 0, pad), value=-float("inf"))
    assert block_extrema(x, factor).equal(F.max_pool2d(padded[None], factor, factor)[0])
    low = -F.max_pool2d(F.pad(-x, (0, pad, 0, pad), value=-float("inf"))[None], factor, factor)[0]
    assert block_extrema(x, factor, largest=False).equal(low)
    # the signed pooling keeps each block's value of largest magnitude, sign and all
    pooled, _ = pool_signed(x, factor, zero_future=True)
    assert pooled.abs().equal(
        F.max_pool2d(F.pad(x.abs(), (0, pad, 0, pad))[None], factor, factor)[0]
    )
    small = torch.tensor([[[0.1, 0.0], [-0.5, 0.3]]])
    assert pool_signed(small, 2, zero_future=True)[0].item() == pytest.approx(-0.5)


def test_missing_bundle_is_a_clear_error(smollm2, monkeypatch, tmp_path):
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path / "empty")
    with pytest.raises(MissingBundleError, match="make widgets"):
        AttentionView(smollm2, PROMPT)


def test_a_sink_head_is_named_and_shown_without_its_sink(smollm2):
    """Layer 18 head 8 of the embedded model puts >99.9% of its attention on the first token:
    on the weights scale the rest is below the uint8 step; without the first token each row's
    remainder is rescaled in the kernel (full precision) and shows."""
    view = AttentionView(smollm2, PROMPT, layer=18)
    assert view.sink[8] > 0.999 and min(view.sink) < 0.9
    plain = decode_array(view.patterns)[8]
    assert np.nanmax(plain[1:, 1:]) < view.patterns["scale"]  # nothing off the sink survives
    view.scale = "off_first"
    rest = decode_array(view.patterns)[8]
    full = smollm2.attention(smollm2.to_tokens(PROMPT), 18, ["pattern"]).pattern[0, 8].double()
    want = (full[:, 1:] / full[:, 1:].sum(-1, keepdim=True)).numpy()
    got = rest[:, 1:]
    mask = ~np.isnan(got)
    mask[0] = False  # the first token's own row has nothing besides itself
    assert np.abs(got[mask] - want[mask]).max() <= view.patterns["scale"] / 2 + 1e-4
    assert (rest[:, 0] == 0).all()  # the sink's column is left out
    view.scale = "log"
    logged = decode_array(view.patterns)[8]
    assert np.nanmin(logged) >= -4 - 1e-3 and np.nanmax(logged) <= 1e-3
    with pytest.raises(Exception, match="unknown scale"):
        view.scale = "contrast"
    assert view.scale == "log"


def test_a_window_leaves_out_the_first_token_not_its_own_first_column(smollm2):
    text = " ".join(["the cat sat on the mat and then the dog ran home"] * 4)
    view = AttentionView(smollm2, text, layer=18, max_size=16, scale="off_first")
    n = len(view.tokens)
    view.window = [10, 26]
    x = decode_array(view.patterns)
    full = smollm2.attention(smollm2.to_tokens(text), 18, ["pattern"]).pattern[0].double()
    rest = full[:, 10:26, 1:].sum(-1, keepdim=True)
    want = (full[:, 10:26, 10:26] / rest).numpy()
    mask = ~np.isnan(x)
    # kept in bfloat16 past max_size: 3 significant digits, tiny weights included
    assert n > 26 and np.abs(x[mask] - want[mask]).max() <= view.patterns["scale"] / 2 + 0.005
    assert x[:, :, 0][mask[:, :, 0]].max() > 0.05  # the window's first column is a real token


def test_anything_wrap_accepts_is_wrapped_and_the_rest_says_what_to_pass(smollm2):
    from attnviz.errors import NotAModelError
    from tests.tiny_models import tiny_llama

    with pytest.raises(NotAModelError, match=r"not the name 'gpt2'.*attnviz\.load_model\('gpt2'\)"):
        AttentionView("gpt2", PROMPT)
    with pytest.raises(NotAModelError, match="got None"):
        AttentionView(None, PROMPT)
    with pytest.raises(NotAModelError, match=r"attnviz\.wrap\(model, tokenizer\)"):
        AttentionView(tiny_llama(), PROMPT)  # a Hugging Face model: its tokenizer is missing
    with pytest.raises(NotAModelError, match="got a object"):
        AttentionView(object(), PROMPT)
    raw = AttentionView(smollm2.model, PROMPT, layer=3)  # the HookedTransformer itself
    assert raw.error == "" and raw.model.backend == "transformer_lens"
    n = len(raw.tokens)
    assert decode_array(raw.patterns).shape == (9, n, n)
    want = raw.model.attention(raw.model.to_tokens(PROMPT), 3, ["pattern"]).pattern[0].numpy()
    got = decode_array(raw.patterns)
    mask = ~np.isnan(got)
    assert np.abs(got[mask] - want[mask]).max() <= raw.patterns["scale"] / 2 + 1e-6


def test_characters_split_across_tokens_keep_their_text(smollm2):
    view = AttentionView(smollm2, "日本語 🙂", layer=0)
    assert "\ufffd" not in "".join(view.tokens)
    assert view.tokens[1:3] == ["日[1/2]", "日[2/2]"] and "語[1/3]" in view.tokens


def test_layers_below_the_shown_one_come_from_the_same_forward_pass(smollm2, monkeypatch):
    view = AttentionView(smollm2, PROMPT, layer=6)
    fresh = AttentionView(smollm2, PROMPT, layer=2)

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran for a kept layer")

    with monkeypatch.context() as patch:
        patch.setattr(smollm2, "attention", no_model)
        patch.setattr(smollm2, "each_pattern", no_model)
        view.layer = 2  # kept from the pass that computed layer 6: nothing runs
    np.testing.assert_array_equal(decode_array(view.patterns), decode_array(fresh.patterns))
    assert view.sink == fresh.sink and view.error == "" and view.layer == 2
    view.scale = "off_first"  # needs full precision: computed for layer 2 on demand
    fresh.scale = "off_first"
    np.testing.assert_array_equal(decode_array(view.patterns), decode_array(fresh.patterns))
    view.scale = "weights"
    view.prompt = "A different prompt now"  # a new prompt: nothing kept from the old one
    other = AttentionView(smollm2, "A different prompt now", layer=2)
    np.testing.assert_array_equal(decode_array(view.patterns), decode_array(other.patterns))
    view.layer = 1
    assert view.tokens == other.tokens
    np.testing.assert_array_equal(
        decode_array(view.patterns),
        decode_array(AttentionView(smollm2, "A different prompt now", layer=1).patterns),
    )
