"""PatternExplorer and PairExplorer, the Python side: traits, recomputation, clicks, errors (no
browser). Tiny random Llama for the mechanics; the embedded model with its shipped dictionaries
for what a user sees first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.widgets import static
from attnviz.widgets.arrays import decode_array
from attnviz.widgets.pair_explorer import PairExplorer
from attnviz.widgets.pattern_explorer import PatternExplorer
from attnviz.widgets.qk_widget import dictionaries_by_layer
from tests.helpers import TEXT, make_qk


@pytest.fixture(autouse=True)
def bundles(monkeypatch, tmp_path):
    """Stand-in bundles, so these tests need no front-end build."""
    for name in ("pattern_explorer", "pair_explorer"):
        (tmp_path / f"{name}.js").write_text("export default { render() {} };\n")
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)


@pytest.fixture(scope="module")
def qk(tiny_llama_adapter):
    return make_qk(tiny_llama_adapter.spec, layer=1)


def test_pattern_explorer_sends_every_panel(tiny_llama_adapter, qk):
    view = PatternExplorer(tiny_llama_adapter, TEXT, qk=qk)
    n = len(view.tokens)
    heads = tiny_llama_adapter.spec.n_heads
    assert view.error == "" and view.layers == [1] and view.layer == 1 and view.has_masked
    assert set(view.panels) == {"true", "transcoder", "masked", "diff_transcoder", "diff_masked"}
    rec = view.reconstruction
    for key in ("true", "transcoder", "masked"):
        x = decode_array(view.panels[key])
        assert x.shape == (heads, n, n)
        ok = ~np.isnan(x)
        want = rec.pattern(key).float().numpy()
        assert np.abs(x[ok] - want[ok]).max() <= view.panels[key]["scale"] / 2 + 1e-3
    diff = decode_array(view.panels["diff_transcoder"])
    want = (rec.transcoder.float() - rec.true.float()).numpy()
    ok = ~np.isnan(diff)
    assert np.abs(diff[ok] - want[ok]).max() <= view.panels["diff_transcoder"]["scale"] + 1e-3
    assert len(view.kl["transcoder"]) == heads and len(view.kl["masked"]) == heads
    np.testing.assert_allclose(view.kl["transcoder"], rec.kl_transcoder.numpy(), atol=1e-4)
    assert f"{qk.pairs.nnz:,} kept pairs" in view.dictionary


def test_long_prompts_are_pooled_and_differences_keep_their_sign(tiny_llama_adapter, qk):
    text = " ".join(["alpha beta gamma delta"] * 30)
    view = PatternExplorer(tiny_llama_adapter, text, qk=qk, max_size=16)
    n = len(view.tokens)
    factor = view.downsampled
    assert factor == -(-n // 16) and factor > 1
    side = -(-n // factor)
    assert decode_array(view.panels["true"]).shape[1:] == (side, side)
    diff = decode_array(view.panels["diff_transcoder"])
    rec = view.reconstruction
    full = (rec.transcoder.float() - rec.true.float())[0, :factor, :factor]
    block = full[torch.ones(factor, factor).tril().bool()]
    want = float(block[block.abs().argmax()])
    assert diff[0, 0, 0] == pytest.approx(want, abs=view.panels["diff_transcoder"]["scale"] + 1e-3)


def test_layers_without_dictionaries_and_bad_prompts_show_errors(tiny_llama_adapter, qk):
    view = PatternExplorer(tiny_llama_adapter, TEXT, qk=qk)
    before = view.panels
    view.layer = 0
    assert "no QK dictionary for tiny-llama layer 0" in view.error and "--layer 0" in view.error
    assert view.panels is before and view.layer == 1  # the layer on screen, message kept
    view.prompt = TEXT + " too"  # a new prompt is not refused for the layer that failed
    assert view.error == "" and view.layer == 1 and view.panels is not before
    view.prompt = ""
    assert "empty" in view.error
    nothing = PatternExplorer(tiny_llama_adapter, TEXT, qk=[])
    assert nothing.layers == [] and "no QK dictionary" in nothing.error


def test_dictionaries_are_checked_when_given(tiny_llama_adapter, qk):
    assert dictionaries_by_layer(tiny_llama_adapter, {1: qk}) == {1: qk}
    # a dictionary filed under another layer: the widget starts and says what is wrong
    view = PatternExplorer(tiny_llama_adapter, TEXT, qk={0: qk})
    assert view.layers == [0] and view.panels == {}
    assert "trained on layer 1 of" in view.error and "not layer 0" in view.error
    with pytest.raises(ValueError, match="two dictionaries for layer 1"):
        dictionaries_by_layer(tiny_llama_adapter, [qk, qk])
    with pytest.raises(TypeError, match="QKDictionary"):
        dictionaries_by_layer(tiny_llama_adapter, ["not a dictionary"])


def test_pair_explorer_click_decomposes_and_adds_up(tiny_llama_adapter, qk):
    view = PairExplorer(tiny_llama_adapter, TEXT, qk=qk)
    n = len(view.tokens)
    assert view.decomposition == {} and view.map == "masked"
    view.clicked = [n - 1, 2]
    d = view.decomposition
    assert view.error == "" and (d["dest"], d["src"], d["head"]) == (n - 1, 2, 0)
    assert d["kind"] == "masked" and d["dest_token"] == view.tokens[n - 1]
    assert sum(r["contribution"] for r in d["rows"]) == pytest.approx(d["score"], abs=1e-4)
    assert d["total"] == pytest.approx(d["score"], abs=1e-4)
    assert d["score"] == pytest.approx(view.reconstruction.score(0, n - 1, 2), abs=1e-6)
    kinds = [r["kind"] for r in d["rows"]]
    assert kinds[-3:] == ["query_x_key_bias", "query_bias_x_key", "bias_x_bias"]
    # a new head or map redoes the same cell
    view.head = 3
    assert view.decomposition["head"] == 3 and view.decomposition["dest"] == n - 1
    view.map = "transcoder"
    assert view.decomposition["kind"] == "transcoder"
    rec = view.reconstruction
    assert view.decomposition["score"] == pytest.approx(rec.score(3, n - 1, 2, "transcoder"))


def test_pooled_clicks_pick_the_strongest_cell_of_the_block(tiny_llama_adapter, qk):
    text = " ".join(["alpha beta gamma delta"] * 30)
    view = PairExplorer(tiny_llama_adapter, text, qk=qk, max_size=16)
    f = view.downsampled
    view.head = 1
    view.clicked = [3, 1]
    d = view.decomposition
    assert 3 * f <= d["dest"] < 4 * f and f <= d["src"] < 2 * f
    block = view.reconstruction.pattern(view.view)[1, 3 * f : 4 * f, f : 2 * f].float()
    assert float(view.reconstruction.pattern(view.view)[1, d["dest"], d["src"]]) == float(
        block.max()
    )
    view.clicked = [0, 5]  # a block of future cells only
    assert "only future cells" in view.error


def test_feature_clicks_find_examples(tiny_llama_adapter, qk):
    contexts = tiny_llama_adapter.to_tokens(TEXT)[:, :12].repeat(3, 1)
    view = PairExplorer(tiny_llama_adapter, TEXT, qk=qk, examples_from=contexts, cell=(9, 4))
    row = next(r for r in view.decomposition["rows"] if r["kind"] == "pair")
    view.feature = {"side": "k", "index": row["k_feature"]}
    info = view.feature_info
    assert view.error == "" and (info["side"], info["index"]) == ("k", row["k_feature"])
    assert info["n_tokens"] == 36 and 0 <= info["density"] <= 1
    assert sum(info["histogram"]["counts"]) + info["dead"] == qk.cfg.d_hidden_k
    for ex in info["examples"]:
        assert len(ex["tokens"]) == len(ex["acts"]) and ex["acts"][ex["center"]] == pytest.approx(
            ex["activation"], abs=1e-3
        )
    acts = [ex["activation"] for ex in info["examples"]]
    assert acts == sorted(acts, reverse=True) and acts[0] > 0
    view.feature = {"side": "q", "index": 10_000}
    assert "out of range" in view.error
    view.prompt = TEXT + " again"  # same layer: the feature panel stays, the cell goes
    assert view.decomposition == {} and view.feature_info["index"] == row["k_feature"]


@pytest.mark.slow
def test_shipped_dictionaries_on_the_embedded_model(smollm2):
    view = PatternExplorer(smollm2, "When Mary and John went to the store, John gave a drink to")
    assert view.layers == [3, 15, 25] and view.layer == 3 and view.error == ""
    assert max(view.kl["transcoder"]) < 1.0  # trained: far better than chance
    view.layer = 15
    assert view.error == "" and "layer 15" in view.dictionary
    pairs = PairExplorer(smollm2, "When Mary and John went to the store, John gave a drink to",
                         layer=25, cell=(14, 4))  # fmt: skip
    d = pairs.decomposition
    assert d["total"] == pytest.approx(d["score"], abs=1e-3) and d["kind"] == "masked"


def test_a_window_shows_a_stretch_at_full_resolution(tiny_llama_adapter, qk):
    text = " ".join(["alpha beta gamma delta"] * 30)
    view = PatternExplorer(tiny_llama_adapter, text, qk=qk, max_size=16)
    n = len(view.tokens)
    assert view.downsampled > 1 and view.window == [] and view.offset == 0
    calls = []
    view.compute = lambda *a: calls.append(a)  # a window must not run the model again
    view.window = [8, 24]
    assert calls == [] and view.error == ""
    assert (view.downsampled, view.offset, view.window) == (1, 8, [8, 24])
    got = decode_array(view.panels["true"])
    want = view.reconstruction.true[:, 8:24, 8:24].float().numpy()
    assert got.shape == want.shape == (4, 16, 16)
    ok = ~np.isnan(got)
    assert np.abs(got[ok] - want[ok]).max() <= view.panels["true"]["scale"] / 2 + 2e-3
    assert np.isnan(got[:, 0, 1]).all() and not np.isnan(got[:, 1, 0]).any()  # causal in the window
    before = view.panels
    view.window = [30, 10]
    assert "not a token range" in view.error and view.window == [8, 24] and view.panels is before
    view.window = [0, n + 5]
    assert "not a token range" in view.error
    view.window = []
    assert view.error == "" and view.offset == 0 and view.downsampled > 1


def test_a_new_prompt_resets_the_window_and_clicks_count_from_it(tiny_llama_adapter, qk):
    text = " ".join(["alpha beta gamma delta"] * 30)
    view = PairExplorer(tiny_llama_adapter, text, qk=qk, max_size=16)
    view.window = [40, 52]
    view.clicked = [5, 2]
    d = view.decomposition
    assert (d["dest"], d["src"]) == (45, 42) and view.error == ""
    view.prompt = text + " again"
    assert view.window == [] and view.offset == 0 and view.decomposition == {}


def test_a_dictionary_for_another_model_is_a_message_in_the_widget(tiny_llama_adapter, qk):
    from attnviz.models.nnsight_adapter import NNsightAdapter
    from tests.tiny_models import tiny_gpt2

    gpt2 = NNsightAdapter(
        tiny_gpt2(seed=0), tiny_llama_adapter.tokenizer, "tiny-gpt2", bos_token_id=0
    )
    view = PairExplorer(gpt2, TEXT, qk=qk)  # no exception: the widget shows it
    assert "does not fit tiny-gpt2" in view.error and "attnviz.load_model(" in view.error
    assert view.panels == {} and view.tokens == []


def test_a_new_prompt_is_sent_in_two_steps_patterns_first(tiny_llama_adapter, qk):
    """The first message carries the model's and the transcoders' patterns (masked_pending, no
    KL yet); the KLs and the masked map follow in the same kernel call."""
    view = PatternExplorer(tiny_llama_adapter, TEXT, qk=qk)
    sent: list[dict] = []
    original = view.send_state

    def record(key=None):
        sent.append({k: getattr(view, k) for k in ("masked_pending", "kl", "panels")})
        return original(key)

    view.send_state = record
    view.prompt = TEXT + " again"
    firsts = [s for s in sent if s["masked_pending"]]
    assert firsts and "masked" not in firsts[0]["panels"] and firsts[0]["kl"] == {}
    assert "transcoder" in firsts[0]["panels"] and "diff_transcoder" in firsts[0]["panels"]
    assert not view.masked_pending and set(view.kl) == {"transcoder", "masked", "bias"}
    assert "masked" in view.panels and "diff_masked" in view.panels
    assert 0 < view.timings["painted_s"] <= view.timings["complete_s"]
