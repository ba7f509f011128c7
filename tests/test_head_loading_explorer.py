"""HeadLoadingExplorer, the Python side (no browser): what it sends equals the analysis
(attnviz.analysis.head_clusters) computed independently, the k request re-clusters, clicks give a
cluster's tokens and heads and a feature's examples and DFA, errors show in the widget. Tiny
random Llama (GQA 4 heads / 2 kv) with SAEs that rebuild the site closely (tests/helpers.py).
The browser side is tests/browser/test_head_loading_explorer.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.analysis.clusters import kmeans, shuffled_columns
from attnviz.analysis.head_clusters import analyse_head_loadings, cluster_heads, cluster_tokens
from attnviz.analysis.sae_examples import SAEFeatureActivations
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.widgets import static
from attnviz.widgets.arrays import decode_array
from attnviz.widgets.charts import series_values
from attnviz.widgets.feature_panel import examples_payload
from attnviz.widgets.head_loadings import HeadLoadingExplorer
from tests.helpers import TEXT, ask, check_figure_files, head_mixing_sae

KS = range(2, 9)


@pytest.fixture(autouse=True)
def bundles(monkeypatch, tmp_path):
    """Stand-in bundles, so these tests need no front-end build."""
    for name in ("head_loadings", "export_host"):
        (tmp_path / f"{name}.js").write_text("export default { render() {} };\n")
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)


@pytest.fixture(scope="module")
def sae(tiny_llama_adapter):
    return head_mixing_sae(tiny_llama_adapter.spec, "z", 1)


@pytest.fixture(scope="module")
def density(sae):
    d = torch.full((sae.cfg.d_sae,), 1e-3, dtype=torch.float64)
    d[[3, 40]] = 0.0  # dead: left out
    return d


@pytest.fixture(scope="module")
def contexts(tiny_llama_adapter):
    ids = tiny_llama_adapter.to_tokens(TEXT + " and then the dog ran home to sleep")
    return torch.cat([ids[:, :12], ids[:, 4:16], ids[:, 8:20]])


@pytest.fixture(scope="module")
def shown(sae, density):
    view = HeadLoadingExplorer(sae, density=density, ks=KS, seed=1, k=6)
    view.analyse()
    return view


def test_payloads_equal_the_analysis(shown, sae, density):
    ref = analyse_head_loadings(sae, density, KS, k=6, seed=1)
    data, cl = shown.data, shown.clustering
    assert shown.error == "" and shown.analysed and shown.k == ref.k
    np.testing.assert_array_equal(decode_array(data["features"]), ref.features)
    assert 3 not in ref.features and 40 not in ref.features
    np.testing.assert_allclose(decode_array(data["loadings"]), ref.vectors, atol=5e-4)
    np.testing.assert_allclose(decode_array(data["map"]), ref.map_2d, rtol=1e-5, atol=1e-6)
    assert data["projection"] == "PCA" and data["explained"] == pytest.approx(ref.explained)
    labels = decode_array(cl["labels"])
    np.testing.assert_array_equal(labels, ref.clustering.labels)
    assert cl["sizes"] == ref.clustering.sizes.tolist() == sorted(cl["sizes"], reverse=True)
    assert cl["null_sizes"] == ref.null_clustering.sizes.tolist()
    order = decode_array(cl["order"])
    cuts = np.cumsum([0, *cl["sizes"]])
    for c in range(ref.k):  # the heatmap's columns: cluster by cluster, nearest the centre first
        np.testing.assert_array_equal(ref.features[order[cuts[c] : cuts[c + 1]]],
                                      ref.cluster_features(c))  # fmt: skip
    profiles = decode_array(cl["profiles"])
    np.testing.assert_allclose(profiles[0], ref.vectors[labels == 0].mean(0), rtol=1e-5)
    assert cl["fit"]["slope"] == pytest.approx(ref.fit.slope)
    assert cl["fit"]["r2"] == pytest.approx(ref.fit.r2)
    assert cl["silhouette"] == pytest.approx(ref.clustering.silhouette)
    # the log-log plot: its points are the cluster sizes, its line the fit
    sizes = shown.charts["sizes"]
    assert sizes["x"]["log"] and sizes["y"]["log"]
    points, line, null = sizes["series"][:3]
    assert points["mode"] == "markers" and line["mode"] == "lines"
    assert series_values(points["y"]).tolist() == cl["sizes"]
    assert series_values(points["x"]).tolist() == list(range(1, ref.k + 1))
    ranks = np.arange(1, ref.k + 1)
    np.testing.assert_allclose(series_values(line["y"]), ref.fit.predict(ranks), rtol=1e-5)
    assert f"{ref.fit.slope:.2f}" in line["name"] and "R²" in line["name"]
    assert series_values(null["y"]).tolist() == cl["null_sizes"]
    # inertia and silhouette over k, real beside null, the chosen k marked
    for col in ("inertia", "silhouette"):
        real, shuffled, mark = shown.charts[col]["series"]
        assert series_values(real["x"]).tolist() == list(KS)
        np.testing.assert_allclose(series_values(real["y"]), ref.sweep[col], rtol=1e-5)
        np.testing.assert_allclose(
            series_values(shuffled["y"]), ref.sweep[f"null_{col}"], rtol=1e-5
        )
        assert series_values(mark["x"]).tolist() == [ref.k, ref.k] and mark["mode"] == "markers"
        row = ref.sweep.set_index("k").loc[ref.k]
        assert series_values(mark["y"]) == pytest.approx([row[col], row[f"null_{col}"]], rel=1e-5)
    assert any("no model given" in n for n in shown.notes)
    assert any("live" in n for n in shown.notes)


def test_the_k_request_reclusters_with_progress(shown, sae, density, monkeypatch):
    shown.feature = int(decode_array(shown.data["features"])[0])
    replies = ask(shown, monkeypatch, "k7", "cluster", k=7)
    assert [r["kind"] for r in replies if r["kind"] != "progress"] == ["answer"]
    assert sum(r["kind"] == "progress" for r in replies) >= 2
    ref = analyse_head_loadings(sae, density, KS, k=7, seed=1)
    assert shown.k == 7 and shown.clustering["k"] == 7 and shown.error == ""
    np.testing.assert_array_equal(decode_array(shown.clustering["labels"]), ref.clustering.labels)
    assert shown.clustering["null_sizes"] == ref.null_clustering.sizes.tolist()
    assert (
        series_values(shown.charts["sizes"]["series"][0]["y"]).tolist()
        == ref.clustering.sizes.tolist()
    )
    # the feature shown stays, and its new cluster is selected
    f = shown.feature
    assert shown.cluster == ref.cluster_of(f) == shown.feature_info["cluster"]
    assert shown.cluster_info["cluster"] == shown.cluster and shown.cluster_info["k"] == 7
    # a bad k is refused with the fix named; the picture stays
    replies = ask(shown, monkeypatch, "bad", "cluster", k=700)
    (final,) = [r for r in replies if r["kind"] != "progress"]
    assert final["kind"] == "error" and "between 2 and" in final["message"]
    assert shown.k == 7 and shown.clustering["k"] == 7
    # the same from Python, through the trait
    shown.k = 3
    assert shown.clustering["k"] == 3 and shown.clustering["sizes"] == kmeans(
        ref.vectors, 3, seed=1).sizes.tolist()  # fmt: skip
    shown.k = 1
    assert shown.k == 3 and "k = 1 is out of range" in shown.error
    shown.k = 4
    assert shown.error == ""
    # the null is the analysis's own: each head's column permuted across features
    assert np.allclose(np.sort(shuffled_columns(ref.vectors, 1, False), 0), np.sort(ref.vectors, 0))


def test_the_sweep_runs_as_a_request_on_first_display(sae, monkeypatch):
    view = HeadLoadingExplorer(sae, ks=range(2, 6))
    assert not view.analysed and view.data == {} and view.error == ""
    replies = ask(view, monkeypatch, "a", "analyse")
    progress = [r for r in replies if r["kind"] == "progress"]
    assert replies[-1]["kind"] == "answer" and replies[-1]["value"] == {"k": view.k}
    assert progress[-1]["done"] == progress[-1]["total"] == 8  # both sweeps, 4 k each
    assert view.analysed and len(decode_array(view.data["features"])) == sae.cfg.d_sae
    assert any("dead features are clustered too" in n for n in view.notes)
    again = ask(view, monkeypatch, "b", "analyse")  # a second view: the same analysis, at once
    assert again[-1]["value"] == {"k": view.k} and not [r for r in again if r["kind"] == "progress"]


def test_with_a_model_clicks_show_tokens_heads_examples_and_dfa(tiny_llama_adapter, sae, contexts):
    model = tiny_llama_adapter
    view = HeadLoadingExplorer(sae, model, ks=range(2, 7), examples_from=contexts)
    a = view.analyse()
    lib = SAEFeatureActivations(model, sae, contexts)
    assert torch.equal(view._density, lib.density())
    np.testing.assert_array_equal(a.features, np.nonzero(lib.density().numpy() >= 1e-5)[0])
    view.cluster = 1
    info = view.cluster_info
    ids = a.cluster_features(1)
    np.testing.assert_array_equal(decode_array(info["features"]), ids)
    words = cluster_tokens(lib, ids[:32])
    assert [t["token"] for t in info["tokens"]] == words.token.tolist()
    assert [t["count"] for t in info["tokens"]] == words["count"].tolist()
    heads = cluster_heads(model, sae, lib, ids[:8])
    assert info["heads"]["labels"] == ["H0", "H1", "H2", "H3"]
    np.testing.assert_allclose(info["heads"]["share"], heads.mean(0), rtol=1e-5)
    assert sum(info["heads"]["share"]) == pytest.approx(1.0)
    f = int(ids[0])
    view.feature = f
    fi = view.feature_info
    assert fi["feature"] == f and fi["cluster"] == 1 and view.error == ""
    assert fi["examples"] == examples_payload(lib.examples(f, k=8, window=10))
    assert fi["density"] == pytest.approx(float(lib.density()[f]))
    np.testing.assert_allclose(fi["share"], view._loadings.normalised[f].numpy(), rtol=1e-6)
    # the DFA of its top example adds up to the SAE's own pre-activation there
    d = fi["dfa"]
    cells = decode_array(d["cells"])
    top = lib.examples(f, k=1, window=0).iloc[0]
    assert (d["context"], d["dest"]) == (int(top.context), int(top.position))
    assert cells.shape == (4, d["dest"] + 1) and len(d["tokens"]) == d["dest"] + 1
    z = model.attention(contexts[d["context"] : d["context"] + 1], 1, ["z"]).z[0, d["dest"]]
    pre = float(sae.pre_activation(z.flatten()).detach()[f])
    assert cells.sum() + d["remainder"] == pytest.approx(pre, abs=1e-4)
    assert d["pre_activation"] == pytest.approx(pre, abs=1e-4)
    # activations already read for this SAE are used as they are, not read again
    again = HeadLoadingExplorer(sae, model, ks=range(2, 7), examples_from=lib)
    again.analyse()
    assert again._library is lib and again.clustering["sizes"] == view.clustering["sizes"]


def test_value_saes_have_kv_head_columns_and_query_head_usage(tiny_llama_adapter, contexts):
    sae = head_mixing_sae(tiny_llama_adapter.spec, "v", [0, 1])
    view = HeadLoadingExplorer(sae, tiny_llama_adapter, ks=range(2, 6), examples_from=contexts)
    assert view.heads == ["L0 KV0 (H0-1)", "L0 KV1 (H2-3)", "L1 KV0 (H0-1)", "L1 KV1 (H2-3)"]
    assert view.head_kind == "kv" and "2 query heads" in view.notes[0]
    assert "v of layer 0+1" in view.dictionary
    view.analyse()
    view.cluster = 0
    heads = view.cluster_info["heads"]
    assert heads["labels"] == [f"L{layer} H{h}" for layer in (0, 1) for h in range(4)]
    view.feature = int(decode_array(view.cluster_info["features"])[0])
    assert "dfa" not in view.feature_info and view.feature_info["examples"]  # DFA reads z only


def test_errors_name_the_fix_in_the_widget(tiny_llama_adapter, sae, density):
    resid = SAE(SAEConfig.for_model(tiny_llama_adapter.spec, "resid_pre", 1, 16))
    view = HeadLoadingExplorer(resid)
    assert "does not split into heads" in view.error and "--site z" in view.error
    assert view.heads == [] and view.data == {}
    assert "needs the model" in HeadLoadingExplorer("z-sae-L2").error
    with pytest.raises(TypeError, match="attnviz SAE"):
        HeadLoadingExplorer(object())  # type: ignore[arg-type]
    early = HeadLoadingExplorer(sae, density=density, ks=KS)
    early.cluster = 0  # before the sweep
    assert early.cluster == -1 and "not ready yet" in early.error
    bad_k = HeadLoadingExplorer(sae, density=density, ks=KS, k=10_000)
    bad_k.analyse()
    n = len(decode_array(bad_k.data["features"]))
    assert f"k = 10000 is out of range: choose k between 2 and {n}" in bad_k.error
    assert 2 <= bad_k.k <= 8  # the best silhouette instead
    bad_k.cluster = 99
    assert bad_k.cluster == -1 and f"clusters are 0-{bad_k.k - 1}" in bad_k.error
    bad_k.feature = 10**6
    assert bad_k.feature == -1 and "features 0-" in bad_k.error
    few = HeadLoadingExplorer(sae, density=density, ks=range(500, 600))
    with pytest.raises(Exception, match="has no k between 2 and"):
        few.analyse()
    dead = torch.zeros(sae.cfg.d_sae)
    with pytest.raises(Exception, match="0 features are live"):
        HeadLoadingExplorer(sae, density=dead, ks=KS).analyse()


def test_export_and_figure(shown, tmp_path):
    html = shown.to_html(tmp_path / "hl.html").read_text()
    assert '"clustering"' in html and "http://" not in html and "https://" not in html
    fig = shown.figure()
    assert len(fig.data) >= 4 and fig.data[0].type == "heatmap"
    assert list(fig.data[0].y) == shown.heads
    check_figure_files(shown, tmp_path, width=900, height=700)


@pytest.mark.slow
def test_shipped_value_saes_resolve_by_name(smollm2):
    view = HeadLoadingExplorer("v-sae-L17+L18", smollm2)
    assert view.error == "" and view.head_kind == "kv" and len(view.heads) == 6
    assert view.heads[0] == "L17 KV0 (H0-2)" and view.heads[-1] == "L18 KV2 (H6-8)"
    assert "no shipped dictionary 'nope'" in HeadLoadingExplorer("nope", smollm2).error
