"""Head-loading vectors, k-means sweeps, cluster sizes and their power law, the shuffled null, and
two-layer value SAEs trained on stacked stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.analysis.clusters import (
    cluster_profiles,
    cluster_sizes,
    fit_power_law,
    kmeans,
    kmeans_sweep,
    members,
    shuffled_columns,
)
from attnviz.analysis.head_clusters import analyse_head_loadings, cluster_heads, cluster_tokens
from attnviz.analysis.head_loadings import (
    cross_layer_summary,
    expand_to_query_heads,
    head_loadings,
    layer_shares,
    query_head_usage,
)
from attnviz.data import collect_activations
from attnviz.data.stacked_store import StackedStore
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.errors import StoreMismatchError
from attnviz.training.config import SAETrainConfig
from attnviz.training.sae import SAETrainer

N_CTX = 24


def one_head_sae(spec, site: str, layers: list[int], heads_of: list[int]) -> SAE:
    """An SAE whose feature i's decoder lives on head heads_of[i] alone (random direction)."""
    sae = SAE(SAEConfig.for_model(spec, site, layers, len(heads_of)))
    blocks = sae.cfg.n_heads * len(layers)
    with torch.no_grad():
        dec = torch.zeros(len(heads_of), blocks, sae.cfg.d_head)
        for i, h in enumerate(heads_of):
            dec[i, h] = torch.randn(sae.cfg.d_head)
        sae.coder.W_dec.copy_(dec.reshape(len(heads_of), -1))
    return sae


def test_loadings_of_features_that_each_live_on_one_head_are_one_hot(tiny_llama_adapter):
    spec = tiny_llama_adapter.spec
    heads_of = [0, 3, 1, 2, 2, 0]
    sae = one_head_sae(spec, "z", [1], heads_of)
    z = head_loadings(sae)
    assert z.kind == "query" and z.labels == ["L1 H0", "L1 H1", "L1 H2", "L1 H3"]
    expected = torch.nn.functional.one_hot(torch.tensor(heads_of), 4).float()
    assert torch.allclose(z.normalised, expected)
    assert torch.allclose(z.raw.sum(-1), sae.W_dec.detach().norm(dim=-1))
    # Two layers: (layer, head) columns, layer-major.
    two = head_loadings(one_head_sae(spec, "z", [0, 1], [5, 0]))
    assert two.labels[4:6] == ["L1 H0", "L1 H1"]
    assert two.normalised[0].argmax() == 5 and two.normalised[1].argmax() == 0


def test_value_loadings_name_their_query_heads_and_expand_by_attention(tiny_llama_adapter):
    spec = tiny_llama_adapter.spec  # 4 query heads over 2 kv heads
    sae = one_head_sae(spec, "v", [1], [0, 1, 1])
    v = head_loadings(sae)
    assert v.kind == "kv" and v.group_size == 2
    assert v.labels == ["L1 KV0 (H0-1)", "L1 KV1 (H2-3)"]
    assert "2 query heads" in v.note
    tokens = tiny_llama_adapter.to_tokens("When Mary and John went to the store, John gave a")
    usage = query_head_usage(tiny_llama_adapter, sae, tokens)
    assert usage.shape == (3, 1, 4)
    # Independent reference for one feature and head: attention received times activation.
    x = tiny_llama_adapter.attention(tokens, 1, ["v", "pattern"])
    f = sae.encode(x.v.flatten(-2))[0]
    f[0] = 0
    want = (x.pattern[0, 2].sum(0) * f[:, 1]).sum()
    assert torch.allclose(usage[1, 0, 2], want, atol=1e-4)
    q = expand_to_query_heads(v, usage)
    assert q.kind == "query" and q.raw.shape == (3, 4)
    # Each kv head's loading is split over its two query heads, nothing lost or moved.
    assert torch.allclose(q.raw.reshape(3, 2, 2).sum(-1), v.raw, atol=1e-6)
    assert torch.all(q.raw[0, 2:] == 0) and torch.all(q.raw[1:, :2] == 0)


def test_loadings_refuse_a_residual_sae(tiny_llama_adapter):
    sae = SAE(SAEConfig.for_model(tiny_llama_adapter.spec, "resid_pre", 1, 8))
    with pytest.raises(ValueError, match="splits into heads"):
        head_loadings(sae)


def test_kmeans_is_reproducible_and_finds_planted_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(6)
    x = np.concatenate([centres[i] + 0.02 * rng.standard_normal((n, 6)) for i, n in
                        enumerate([60, 30, 15, 8, 4, 2])])  # fmt: skip
    a, b = kmeans(x, 6, seed=3), kmeans(x, 6, seed=3)
    assert np.array_equal(a.labels, b.labels) and np.allclose(a.centres, b.centres)
    assert a.sizes.tolist() == [60, 30, 15, 8, 4, 2]  # renumbered largest first
    assert a.silhouette > 0.9
    frame, by_k = kmeans_sweep(x, range(2, 9), seed=0)
    assert frame.k.tolist() == list(range(2, 9)) and set(by_k) == set(range(2, 9))
    assert frame.inertia.is_monotonic_decreasing
    assert frame.set_index("k").silhouette.idxmax() == 6
    # The null keeps each column's values and destroys which columns go together.
    null = shuffled_columns(x, seed=0, renormalise=False)
    assert np.allclose(np.sort(null, 0), np.sort(x, 0))
    assert kmeans(null, 6, seed=0).silhouette < a.silhouette - 0.15
    profiles = cluster_profiles(x, a)
    assert profiles["size"].tolist() == [60, 30, 15, 8, 4, 2]
    assert profiles.top.tolist() == [0, 1, 2, 3, 4, 5]
    near = members(a, 0, x)
    assert len(near) == 60 and np.all(a.labels[near] == 0)


def test_the_power_law_fit_recovers_a_known_exponent():
    ranks = np.arange(1, 41)
    exact = np.round(4000 * ranks**-1.3)
    fit = fit_power_law(np.random.default_rng(0).permutation(exact))  # order does not matter
    assert abs(fit.slope + 1.3) < 0.02 and fit.r2 > 0.999 and fit.n == 40
    assert np.allclose(fit.predict(ranks[:3]), exact[:3], rtol=0.03)
    flat = fit_power_law(np.full(20, 50))
    assert abs(flat.slope) < 1e-9
    assert cluster_sizes(np.array([2, 2, 0, 5, 2, 0])).tolist() == [3, 2, 1]
    with pytest.raises(ValueError, match="two non-empty"):
        fit_power_law(np.array([7]))


@pytest.fixture(scope="module")
def two_stores(tiny_llama_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("v-stores")
    return [
        collect_activations(
            tiny_llama_adapter,
            "pydocs",
            layer=layer,
            n_tokens=N_CTX * 48,
            out_dir=out / f"L{layer}",
            fields=("v",),
            n_ctx=N_CTX,
            chunk_contexts=16,
            progress=False,
        )
        for layer in (0, 1)
    ]


def test_a_stacked_store_reads_layers_side_by_side(two_stores, tiny_llama_adapter, tmp_path):
    stacked = StackedStore(two_stores)
    assert stacked.layers == [0, 1] and stacked.field_shape("v") == (4, 16)
    chunk = stacked.read_chunk(1, ("v", "tokens"))
    a, b = (s.read_chunk(1, ("v",))["v"] for s in two_stores)
    assert torch.equal(chunk["v"], torch.cat([a, b], dim=1))
    other = collect_activations(
        tiny_llama_adapter, "pydocs", layer=1, n_tokens=N_CTX * 16, out_dir=tmp_path / "o",
        fields=("v",), n_ctx=N_CTX * 2, chunk_contexts=16, progress=False,
    )  # fmt: skip
    with pytest.raises(StoreMismatchError, match="n_ctx"):
        StackedStore([two_stores[0], other])


def test_a_two_layer_value_sae_trains_and_splits_its_loading_by_layer(two_stores, tmp_path):
    cfg = SAETrainConfig(
        site="v", architecture="topk", d_sae=64, k=8, tokens=N_CTX * 8 * 30, batch_contexts=8,
        warmup_steps=3, eval_every=10, checkpoint_every=10, resample_every=0, aux_k=32,
        ghost_grads=False,
    )  # fmt: skip
    sae = SAETrainer(StackedStore(two_stores), cfg, tmp_path / "run").run(progress=False)
    assert sae.cfg.layers == [0, 1] and sae.cfg.d_in == 2 * 2 * 16
    loadings = head_loadings(sae)
    assert loadings.labels == ["L0 KV0 (H0-1)", "L0 KV1 (H2-3)", "L1 KV0 (H0-1)", "L1 KV1 (H2-3)"]
    shares = layer_shares(loadings)
    assert list(shares.columns) == ["L0", "L1"] and np.allclose(shares.sum(1), 1)
    summary = cross_layer_summary(loadings, both_at=0.2)
    assert summary["features"] == 64
    assert summary["both"] == int((shares.min(1) >= 0.2).sum())


def test_the_analysis_clusters_live_features_by_head_beside_the_null(tiny_llama_adapter):
    spec = tiny_llama_adapter.spec
    groups = [24, 12, 8, 5, 4, 3]  # features per (layer, head) column 0..5 of a two-layer SAE
    heads_of = [h for h, n in enumerate(groups) for _ in range(n)]
    sae = one_head_sae(spec, "z", [0, 1], heads_of)
    density = torch.full((len(heads_of),), 1e-3)
    density[5] = 0.0  # dead: left out
    steps = []
    a = analyse_head_loadings(
        sae, density, ks=range(2, 9), seed=0, progress=lambda d, t: steps.append((d, t))
    )
    assert 5 not in a.features and len(a.features) == len(heads_of) - 1
    assert steps[-1] == (14, 14)  # both sweeps reported
    assert a.k == 6  # the best silhouette
    assert a.clustering.sizes.tolist() == [23, 12, 8, 5, 4, 3]
    s = a.summary()
    assert s["silhouette"] > 0.99 and s["silhouette"] > s["null_silhouette"]
    assert a.fit is not None and a.fit.slope < 0 and a.fit.n == 6
    assert a.map_2d.shape == (len(a.features), 2)
    cluster = a.cluster_of(0)
    assert all(heads_of[f] == 0 for f in a.cluster_features(cluster))
    with pytest.raises(ValueError, match="not clustered"):
        a.cluster_of(5)
    few = analyse_head_loadings(sae, density, ks=[3], k=3)
    assert few.fit is None  # three sizes make no power law


def test_cluster_tokens_and_heads_read_the_examples(tiny_llama_adapter, two_stores):
    from attnviz.analysis.sae_examples import SAEFeatureActivations

    spec = tiny_llama_adapter.spec
    sae = one_head_sae(spec, "z", [1], [0, 1, 2, 3])
    with torch.no_grad():
        sae.coder.W_enc.copy_(sae.W_dec.T)  # each feature reads its own head's direction
    tokens = two_stores[0].read_chunk(0, ("tokens",))["tokens"].long().view(-1, N_CTX)[:6]
    ex = SAEFeatureActivations(tiny_llama_adapter, sae, tokens)
    words = cluster_tokens(ex, [0, 1], per_feature=3)
    assert words["count"].sum() <= 6 and words["features"].max() <= 2
    heads = cluster_heads(tiny_llama_adapter, sae, ex, [0, 2])
    assert list(heads.columns) == ["H0", "H1", "H2", "H3"]
    assert np.allclose(heads.sum(1), 1)
    # Feature 2 reads head 2's block only, so all of its DFA comes through head 2.
    assert heads.loc[2, "H2"] > 0.999


def test_dfa_head_shares_follow_the_heads_a_feature_reads(tiny_llama_adapter):
    from attnviz.analysis.head_clusters import dfa_head_shares

    sae = one_head_sae(tiny_llama_adapter.spec, "z", [1], [0, 1, 2, 3, 3])
    with torch.no_grad():
        sae.coder.W_enc.copy_(sae.W_dec.T)  # feature i reads head heads_of[i] only
        sae.coder.b_enc.fill_(-1e-3)
    tokens = tiny_llama_adapter.to_tokens("When Mary and John went to the store, John gave a drink")
    shares = dfa_head_shares(tiny_llama_adapter, sae, tokens)
    assert shares.shape == (5, 4)
    fired = shares.sum(-1) > 0
    assert fired.any()
    for f, h in enumerate([0, 1, 2, 3, 3]):
        if fired[f]:
            assert shares[f, h] > 0.999
