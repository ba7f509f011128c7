"""FeatureAttribution and PairExplorer's "what moves along this edge", the Python side (no
browser), and the SAE feature examples behind them. Tiny random Llama (GQA 4 heads / 2 kv)
with an SAE that rebuilds hook_z exactly (features +x_i and -x_i), so the first-use check passes
and every number has a reference computed another way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.analysis.dfa import edge_features, feature_attribution
from attnviz.analysis.sae_examples import SAEFeatureActivations
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.widgets import static
from attnviz.widgets.arrays import decode_array
from attnviz.widgets.feature_attribution import FeatureAttribution
from attnviz.widgets.pair_explorer import PairExplorer
from tests.helpers import TEXT, check_figure_files, make_qk

LAYER = 1


@pytest.fixture(autouse=True)
def bundles(monkeypatch, tmp_path):
    """Stand-in bundles, so these tests need no front-end build."""
    for name in ("feature_attribution", "pair_explorer", "export_host"):
        (tmp_path / f"{name}.js").write_text("export default { render() {} };\n")
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)


def exact_sae(spec, layer: int = LAYER, bias: float = 0.0) -> SAE:
    """A z SAE whose 2 * d_in features are relu(x_i) and relu(-x_i), decoded back to x exactly;
    a non-zero `bias` gives b_dec (subtracted before encoding, added back after: still exact) and
    so a DFA remainder of -b_dec . W_enc[:, f] = -+b_dec[i]."""
    sae = SAE(SAEConfig.for_model(spec, "z", layer, d_sae=2 * spec.n_heads * spec.d_head))
    d = sae.cfg.d_in
    eye = torch.eye(d)
    with torch.no_grad():
        sae.coder.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.coder.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.coder.b_enc.zero_()
        sae.coder.b_out.copy_(bias * torch.randn(d, generator=torch.Generator().manual_seed(0)))
    return sae


@pytest.fixture(scope="module")
def sae(tiny_llama_adapter):
    return exact_sae(tiny_llama_adapter.spec)


@pytest.fixture(scope="module")
def contexts(tiny_llama_adapter):
    return tiny_llama_adapter.to_tokens(TEXT)[:, :12].repeat(3, 1)


def reference(model, sae, text, dest):
    acts = model.attention(model.to_tokens(text), LAYER, ["pattern", "v", "z"])
    pre = sae.pre_activation(acts.z[0, dest]).detach()
    return acts, pre, sae.activation(pre)


def test_a_clicked_token_lists_its_active_features_by_activation(tiny_llama_adapter, sae, contexts):
    view = FeatureAttribution(tiny_llama_adapter, TEXT, sae=sae, examples_from=contexts)
    assert view.error == "" and view.layers == [LAYER] and view.features == {}
    assert "hook_z of layer 1" in view.dictionary
    n = len(view.tokens)
    view.dest = n - 2
    got = view.features
    _, pre, f = reference(tiny_llama_adapter, sae, TEXT, n - 2)
    assert got["dest"] == n - 2 and got["n_active"] == int((f > 0).sum())
    ids = [r["feature"] for r in got["rows"]]
    acts = [r["activation"] for r in got["rows"]]
    assert len(ids) == min(20, got["n_active"]) and acts == sorted(acts, reverse=True)
    assert ids == f.argsort(descending=True)[: len(ids)].tolist()
    np.testing.assert_allclose(acts, f[ids].numpy(), rtol=1e-5)
    pres = [r["pre_activation"] for r in got["rows"]]
    np.testing.assert_allclose(pres, pre[ids].numpy(), rtol=1e-5)
    # head bars: each feature reads one coordinate, so its decoder lives in one head
    row = got["rows"][0]
    assert sum(row["heads"]) == pytest.approx(1, abs=1e-3)
    assert row["heads"][(row["feature"] % sae.cfg.d_in) // sae.cfg.d_head] == pytest.approx(1)


def test_dfa_cells_add_up_to_the_pre_activation(tiny_llama_adapter, contexts):
    sae = exact_sae(tiny_llama_adapter.spec, bias=0.05)  # a remainder to add
    view = FeatureAttribution(tiny_llama_adapter, TEXT, sae=sae, examples_from=contexts)
    dest = len(view.tokens) - 1
    view.dest = dest
    feature = view.features["rows"][0]["feature"]
    view.feature = feature
    d = view.dfa
    cells = decode_array(d["cells"])
    acts, pre, f = reference(tiny_llama_adapter, sae, TEXT, dest)
    assert view.error == "" and cells.shape == (4, dest + 1) and cells.dtype == np.float32
    i = feature % sae.cfg.d_in
    assert d["remainder"] == pytest.approx(
        float(sae.b_dec[i].detach()) * (-1 if feature == i else 1)
    )
    assert abs(d["remainder"]) > 1e-4
    assert cells.sum() + d["remainder"] == pytest.approx(d["pre_activation"], abs=1e-4)
    assert d["pre_activation"] == pytest.approx(float(pre[feature]), abs=1e-6)
    assert d["activation"] == pytest.approx(float(f[feature]), abs=1e-6)
    ref = feature_attribution(sae, acts.pattern[0], acts.v[0], dest, [feature])
    np.testing.assert_allclose(cells, ref.cells[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(d["by_head"], ref.by_head[0].numpy(), atol=1e-5)
    # exactly one head carries a feature that reads one of its coordinates
    assert np.count_nonzero(np.abs(cells).sum(1) > 1e-9) == 1
    # the examples need the model: a trait write leaves them to the `examples` request
    assert view.feature_info == {}
    info = view.select(dest, feature) and view.feature_info
    assert info["feature"] == feature and info["layer"] == LAYER and 0 <= info["density"] <= 1
    assert info["n_tokens"] == 3 * 11  # BOS left out
    # another token keeps the feature and redoes its DFA there
    view.dest = 3
    assert view.dfa["feature"] == feature and decode_array(view.dfa["cells"]).shape == (4, 4)
    view.feature = 10_000
    assert "out of range" in view.error
    view.dest = 500
    assert "out of range" in view.error
    view.prompt = TEXT + " again"  # a new prompt clears the selection
    assert view.dest == -1 and view.dfa == {} and view.features == {} and view.error == ""


def test_examples_and_density_match_a_dense_reference(tiny_llama_adapter, sae, contexts):
    library = SAEFeatureActivations(tiny_llama_adapter, sae, contexts, batch_size=2)
    z = tiny_llama_adapter.attention(contexts, LAYER, ["z"]).z
    dense = sae.encode(z).detach()
    dense[:, 0] = 0
    want = (dense[:, 1:] > 0).double().mean((0, 1))
    torch.testing.assert_close(library.density(), want)
    feature = int(dense.sum((0, 1)).argmax())
    torch.testing.assert_close(library.column(feature), dense[..., feature], atol=2e-3, rtol=1e-3)
    ex = library.examples(feature, k=4, window=2)
    assert len(ex) == 4 and ex["activation"].is_monotonic_decreasing
    assert ex["activation"].iloc[0] == pytest.approx(float(dense[..., feature].max()), rel=1e-3)
    assert (ex["position"] > 0).all()  # never BOS
    silent = int((dense > 0).sum((0, 1)).argmin())
    if library.density()[silent] == 0:
        assert library.examples(silent).empty


def test_missing_and_mismatched_saes_show_errors_that_name_the_fix(tiny_llama_adapter, sae):
    view = FeatureAttribution(tiny_llama_adapter, TEXT, sae=sae)
    view.layer = 0
    assert "no hook_z SAE for tiny-llama layer 0" in view.error
    assert "attnviz train sae --site z --layer 0" in view.error and view.layer == LAYER
    none = FeatureAttribution(tiny_llama_adapter, TEXT, sae=[])
    assert none.layers == [] and "attnviz train sae --site z" in none.error
    untrained = SAE(SAEConfig.for_model(tiny_llama_adapter.spec, "z", LAYER, d_sae=32), seed=1)
    bad = FeatureAttribution(tiny_llama_adapter, TEXT, sae=untrained)
    assert "FVU" in bad.error and bad.features == {}
    filed_wrong = FeatureAttribution(tiny_llama_adapter, TEXT, sae={0: sae})
    assert "not hook_z of layer 0" in filed_wrong.error
    view.prompt = ""
    assert "empty" in view.error
    with pytest.raises(TypeError, match="SAE objects"):
        FeatureAttribution(tiny_llama_adapter, TEXT, sae=["not an SAE"])


def test_long_prompts_and_export(tiny_llama_adapter, sae, contexts, tmp_path):
    text = " ".join(["alpha beta gamma delta"] * 30)
    view = FeatureAttribution(tiny_llama_adapter, text, sae=sae, max_size=16,
                              examples_from=contexts, dest=100, feature=3)  # fmt: skip
    cells = decode_array(view.dfa["cells"])
    assert view.error == "" and cells.shape == (4, 101)
    assert cells.sum() + view.dfa["remainder"] == pytest.approx(
        view.dfa["pre_activation"], abs=2e-3
    )
    page = view.to_html(tmp_path / "dfa.html").read_text()
    assert '"dfa":' in page and "$bytes" in page
    fig = view.figure()
    assert fig.data[0].z.shape == (4, 101)


def test_an_edge_lists_the_features_it_carries_and_follows_them(tiny_llama_adapter, sae, contexts):
    qk = make_qk(tiny_llama_adapter.spec, layer=LAYER)
    fa = FeatureAttribution(tiny_llama_adapter, "something else", sae=sae, examples_from=contexts)
    view = PairExplorer(tiny_llama_adapter, TEXT, qk=qk, attribution=fa, cell=(9, 4))
    view.head = 2
    e = view.edge
    assert view.error == "" and (e["head"], e["dest"], e["src"]) == (2, 9, 4) and e["linked"]
    acts = tiny_llama_adapter.attention(tiny_llama_adapter.to_tokens(TEXT), LAYER, ["pattern", "v"])
    ids, contribution, pre = edge_features(sae, acts.pattern[0], acts.v[0], 9, 2, 4, top=8)
    assert [r["feature"] for r in e["rows"]] == ids.tolist()
    got = [r["contribution"] for r in e["rows"]]
    np.testing.assert_allclose(got, contribution.numpy(), atol=1e-6)
    np.testing.assert_allclose([r["pre_activation"] for r in e["rows"]], pre.numpy(), atol=1e-6)
    assert [abs(c) for c in got] == sorted((abs(c) for c in got), reverse=True) and abs(got[0]) > 0
    first = e["rows"][0]
    assert first["share"] == pytest.approx(first["contribution"] / first["pre_activation"])
    # following a feature: the linked widget shows its DFA at the destination, whose cell
    # (head 2, source 4) is the contribution listed here
    view.follow = {"feature": first["feature"]}
    assert view.error == "" and fa.prompt == TEXT and fa.dest == 9
    cells = decode_array(fa.dfa["cells"])
    for row in e["rows"]:
        fa.feature = row["feature"]
        assert decode_array(fa.dfa["cells"])[2, 4] == pytest.approx(row["contribution"], abs=1e-6)
    assert cells.shape == (4, 10)


def test_an_edge_without_an_sae_says_how_to_get_one(tiny_llama_adapter):
    qk = make_qk(tiny_llama_adapter.spec, layer=LAYER)
    view = PairExplorer(tiny_llama_adapter, TEXT, qk=qk, sae=[], cell=(9, 4))
    assert "attnviz train sae --site z --layer 1" in view.edge["message"]
    assert view.decomposition["rows"]  # the QK half still stands
    view.follow = {"feature": 3}
    assert "no FeatureAttribution is linked" in view.error


class Sent(list):
    """Stands in for widget.send: every message the widget sends, in order."""

    def __call__(self, content, buffers=None):
        self.append(content)

    def final(self, rid: str) -> dict:
        (reply,) = [m for m in self if m.get("id") == rid and m["kind"] != "progress"]
        return reply


def ask(view, rid: str, **args) -> None:
    msg = {"kind": "request", "id": rid, "method": "examples", "args": args}
    view.requests.on_message(view, msg, [])
    view.requests.wait(60)


def test_examples_are_a_request_with_progress_and_cancel(tiny_llama_adapter, sae, contexts):
    many = contexts.repeat(3, 1)  # 9 contexts: 3 forward passes of EXAMPLE_BATCH = 4
    view = FeatureAttribution(tiny_llama_adapter, TEXT, sae=sae, examples_from=many)
    view.send = sent = Sent()
    dest = len(view.tokens) - 1
    view.dest = dest
    feature = view.features["rows"][0]["feature"]
    view.feature = feature  # what a click does: the DFA at once, the examples left to a request
    assert view.dfa["feature"] == feature and view.feature_info == {}
    ask(view, "bad", feature=10_000, layer=LAYER)
    assert "out of range" in sent.final("bad")["message"]
    assert view.feature_info == {} and view._libraries == {}
    ask(view, "r1", feature=feature, layer=LAYER)
    assert sent.final("r1") == {"kind": "answer", "id": "r1", "buffer_paths": [],
                                "value": {"feature": feature, "layer": LAYER}}  # fmt: skip
    steps = [m for m in sent if m.get("id") == "r1" and m["kind"] == "progress"]
    assert steps[-1]["done"] == steps[-1]["total"] == 3 and len(steps) >= 1
    info = view.feature_info
    assert info["feature"] == feature and info["n_tokens"] == 9 * 11
    library = SAEFeatureActivations(tiny_llama_adapter, sae, many)
    assert info["density"] == pytest.approx(float(library.density()[feature]))
    assert [e["activation"] for e in info["examples"]] == pytest.approx(
        library.examples(feature, k=8, window=10)["activation"].tolist(), rel=1e-3
    )
    # the next feature of the layer comes with its DFA: the search is not run again
    other = view.features["rows"][1]["feature"]
    view.feature = other
    assert view.feature_info["feature"] == other and view.error == ""
    # an answer for a feature no longer shown does not overwrite the one shown
    ask(view, "late", feature=feature, layer=LAYER)
    assert sent.final("late")["kind"] == "answer" and view.feature_info["feature"] == other
    view.requests.close()


def test_a_cancelled_search_stops_between_forward_passes(
    tiny_llama_adapter, sae, contexts, monkeypatch
):
    view = FeatureAttribution(
        tiny_llama_adapter, TEXT, sae=sae, examples_from=contexts.repeat(4, 1)
    )
    view.send = sent = Sent()
    passes = []
    real = tiny_llama_adapter.attention

    def attention(*args, **kwargs):
        passes.append(1)
        if len(passes) == 1:  # the user cancels while the first pass runs
            view.requests.on_message(view, {"kind": "cancel", "id": "c"}, [])
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_llama_adapter, "attention", attention)
    ask(view, "c", feature=3, layer=LAYER)
    assert sent.final("c") == {"kind": "cancelled", "id": "c"}
    assert len(passes) == 1 and view._libraries == {}  # 3 passes were due; nothing half-built kept
    view.requests.close()


def test_a_new_layer_keeps_the_token_and_lists_that_layers_features(
    tiny_llama_adapter, sae, contexts
):
    saes = [exact_sae(tiny_llama_adapter.spec, layer=0), sae]
    view = FeatureAttribution(tiny_llama_adapter, TEXT, sae=saes, examples_from=contexts)
    assert view.layers == [0, 1] and view.layer == 0
    dest = len(view.tokens) - 2
    view.select(dest, view.select(dest)["rows"][0]["feature"])
    at0 = view.features
    assert view.feature_info["layer"] == 0
    view.layer = 1
    _, _, f = reference(tiny_llama_adapter, sae, TEXT, dest)
    got = view.features
    assert view.error == "" and view.dest == dest and got["layer"] == 1
    assert [r["feature"] for r in got["rows"]] == f.argsort(descending=True)[
        : len(got["rows"])
    ].tolist()
    assert got["rows"] != at0["rows"] and "hook_z of layer 1" in view.dictionary
    assert view.feature == -1 and view.dfa == {} and view.feature_info == {}
    view.feature = got["rows"][0]["feature"]
    d = view.dfa
    assert d["layer"] == 1 and decode_array(d["cells"]).sum() + d["remainder"] == pytest.approx(
        d["pre_activation"], abs=1e-4
    )
    view.layer = 0  # back: the same features as before at the same token
    assert view.features == at0 and view.dest == dest


def test_pair_explorer_reads_the_linked_widgets_saes(tiny_llama_adapter, sae):
    fa = FeatureAttribution(tiny_llama_adapter, TEXT, sae=sae)
    pe = PairExplorer(tiny_llama_adapter, TEXT, qk=make_qk(tiny_llama_adapter.spec, layer=LAYER),
                      attribution=fa)  # fmt: skip
    assert fa.saes.layers == [LAYER] and pe._sae_set() is fa.saes
    assert fa.saes.get(LAYER) is sae


@pytest.mark.slow
def test_png_of_the_dfa_and_of_the_features(tiny_llama_adapter, sae, contexts, tmp_path):
    """Through plotly, kaleido and Debian chromium, as the other widgets' to_png."""
    view = FeatureAttribution(tiny_llama_adapter, TEXT, sae=sae, examples_from=contexts)
    view.select(len(view.tokens) - 1)
    bars = view.to_png(tmp_path / "features.png", scale=1).read_bytes()
    view.feature = view.features["rows"][0]["feature"]
    data = view.to_png(tmp_path / "dfa.png", scale=2).read_bytes()
    for png in (bars, data):
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR" and len(png) > 10_000
    size = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert size == (1400, 1000)  # plotly's default 700 x 500 figure at scale 2
    assert bars != data
    check_figure_files(view, tmp_path)
