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
from tests.helpers import TEXT, make_qk

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
    info = view.feature_info
    assert info["feature"] == feature and 0 <= info["density"] <= 1
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
