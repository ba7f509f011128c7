"""Cells of tutorial 05 head loadings: (kind, source) pairs, kind "md" or "code"."""

CELLS = [
    (
        "md",
        """# Which heads a feature lives on: value SAEs, head loadings and their clusters

An SAE trained on a layer's **value vectors** (all heads concatenated) writes each feature as a
decoder row with one block per value head. The norm of each block is the feature's **head
loading**; the vector of them says which heads carry the feature. Anthropic's attention update
(2025) clustered these vectors with k-means, found clusters of induction, delimiter and code
features whose sizes follow a power law, and found that an SAE over two layers at once looks
like the one-layer ones. This notebook trains a small value SAE, loads the shipped ones, sweeps
k beside a shuffled null, finds an induction cluster by computation, and compares one- and
two-layer SAEs.

SmolLM2 uses grouped-query attention: 9 query heads read 3 value heads, three each, so a value
loading names a value head; which of its query heads *moves* the feature is a second question,
answered below from the attention patterns.""",
    ),
    (
        "code",
        """import numpy as np
import pandas as pd
import torch

import attnviz
from attnviz.dictionaries.pretrained import list_pretrained, load_pretrained

model = attnviz.load_model()  # SmolLM2-135M-Instruct, offline
shipped = pd.DataFrame(list_pretrained(model.spec.name))
shipped[shipped.site == "v"][["name", "layer", "features", "architecture"]]""",
    ),
    (
        "md",
        """## Training a small value SAE

A few thousand tokens of `v` at layer 18 (the layer with the strongest induction head) and a
top-k SAE of 512 features, 16 active per token, with AuxK (Gao et al. 2024) so features that
stop firing still get a gradient. Too small to be good; enough to see the method.
`attnviz train sae --site v --layer L` trains real ones.""",
    ),
    (
        "code",
        """from attnviz.analysis.head_loadings import head_loadings
from attnviz.data import collect_activations
from attnviz.training.config import SAETrainConfig
from attnviz.training.sae import SAETrainer

store = collect_activations(model, "pydocs", layer=18, n_tokens=48 * 128, out_dir="v-store",
                            fields=("v",), chunk_contexts=16, progress=False)
cfg = SAETrainConfig(site="v", architecture="topk", k=16, d_sae=512, tokens=48 * 128 * 6,
                     batch_contexts=4, warmup_steps=10, lr=4e-3, eval_every=1000,
                     checkpoint_every=10_000, resample_every=0, ghost_grads=False, aux_k=96)
small = SAETrainer(store, cfg, "v-sae-run").run(progress=False)
loadings = head_loadings(small)
print(loadings.note)
loadings.frame().describe().loc[["mean", "max"]].round(2)""",
    ),
    (
        "md",
        """## The shipped value SAEs: a k sweep beside the null

The shipped layer-18 value SAE (2,048 features, 32 active per token). Features that never fire
on held-out text are left out (their decoders say nothing about heads). For each k, k-means on
the normalised loadings (rows sum to 1) gives an inertia and a silhouette; the same sweep on the
**shuffled null** (each head's column permuted across features: every head keeps its loadings,
but which heads load *together* is destroyed) shows how much of that is structure.""",
    ),
    (
        "code",
        """from attnviz.analysis.head_clusters import analyse_head_loadings
from attnviz.analysis.sae_examples import SAEFeatureActivations
from attnviz.dictionaries.pretrained import held_out_contexts

held = held_out_contexts(model, 16)  # documents no shipped SAE saw
v18 = load_pretrained(model.spec.name, "v-sae-L18")
examples18 = SAEFeatureActivations(model, v18, held)
a18 = analyse_head_loadings(v18, examples18.density(), ks=range(2, 33), seed=0)
print("; ".join(a18.notes))
a18.sweep[["k", "inertia", "null_inertia", "silhouette", "null_silhouette"]].iloc[::5].round(3)""",
    ),
    (
        "code",
        """s = a18.summary()
print(f"k = {s['k']}: silhouette {s['silhouette']:.3f} (null {s['null_silhouette']:.3f})")
print(f"cluster sizes {a18.clustering.sizes.tolist()} (null: {a18.null_clustering.sizes.tolist()})")
print(f"rank-size power law: slope {s['slope']:.2f} +- {s['slope_stderr']:.2f}, R^2 {s['r2']:.2f}; "
      f"null: slope {s['null_slope']:.2f}, R^2 {s['null_r2']:.2f}")""",
    ),
    (
        "md",
        """A value loading names a value head; each is read by three query heads. Splitting each
feature's loading over those three by how much attention each pays to where the feature fires
(on held-out text) gives loadings over the nine query heads: a group's three add up to its
value head's loading.""",
    ),
    (
        "code",
        """from attnviz.analysis.head_loadings import expand_to_query_heads, query_head_usage

usage = query_head_usage(model, v18, held[:4])
expanded = expand_to_query_heads(a18.loadings, usage)
expanded.frame().iloc[a18.features].mean().round(3).to_frame("mean loading").T""",
    ),
    (
        "md",
        """Read the sweep against the null before the power law: with three value heads a loading
vector lives on a triangle, and the null clusters nearly as well as the real loadings do.
The hook_z SAE of the same layer splits by its nine *query* heads, and there the clusters have
more to say.

## An induction cluster, found by computation

Layer 18's strongest induction head is found on repeated random sequences (from the second copy
on, it attends from each token to the token after its earlier copy). We cluster the z SAE's
head loadings, then measure, for every feature, how much of its **direct feature attribution**
on those sequences comes through the induction head (`dfa_head_shares`: |DFA| per head, over
every position where the feature fires, weighted by its activation). The cluster with the
highest mean share is the induction cluster; the share a head gets by chance is 1/9.""",
    ),
    (
        "code",
        """from attnviz.analysis.head_clusters import dfa_head_shares
from attnviz.analysis.patterns import head_scores, repeated_random_tokens

scores = head_scores(model, [18])
HEAD = int(scores.loc[scores.induction.idxmax(), "head"])
z18 = load_pretrained(model.spec.name, "z-sae-L18")
examples_z = SAEFeatureActivations(model, z18, held)
az = analyse_head_loadings(z18, examples_z.density(), ks=range(2, 33), seed=0)
rep = repeated_random_tokens(32, model.spec.d_vocab, model.spec.bos_token_id, batch=1, seed=0)
shares = dfa_head_shares(model, z18, rep)[:, HEAD].numpy()
fired = shares[az.features] > 0
table = pd.DataFrame({"cluster": az.clustering.labels[fired], "share": shares[az.features][fired]})
by_cluster = table.groupby("cluster").share.agg(["mean", "size"])
INDUCTION = int(by_cluster[by_cluster["size"] >= 3]["mean"].idxmax())
loads_on = int(np.argmax(az.clustering.centres[INDUCTION]))
print(f"induction head: layer 18 head {HEAD} (score {scores.induction.max():.2f}); z SAE k = {az.k}")
print(f"cluster {INDUCTION}: {by_cluster.loc[INDUCTION, 'mean']:.0%} of its features' DFA comes "
      f"through head {HEAD} (all clusters: {table.share.mean():.0%}; chance 11%); its mean loading "
      f"peaks on head {loads_on} ({az.clustering.centres[INDUCTION].max():.2f})")
by_cluster.sort_values("mean", ascending=False).head(5).round(3)""",
    ),
    (
        "code",
        """from attnviz.analysis.head_clusters import cluster_tokens

members = az.cluster_features(INDUCTION)[:12]
print("features nearest the centre:", members.tolist())
cluster_tokens(examples_z, members)""",
    ),
    (
        "md",
        """## The HeadLoadingExplorer

The same analysis, to look at: the features x heads heatmap sorted by cluster, the k slider
(each move re-clusters as a request with a progress bar), inertia and silhouette over k beside
the shuffled null, the cluster sizes on log-log axes with the fitted slope, and a 2-D map of the
features. Click a cluster for its loading profile, features, top tokens and the heads its
features' DFA flows through; click a feature for its loadings, examples and the DFA of its top
example. Here it opens on the induction cluster found above.""",
    ),
    (
        "code",
        """from attnviz.widgets.head_loadings import HeadLoadingExplorer

explorer = HeadLoadingExplorer(z18, model, k=az.k, ks=range(2, 33), examples_from=examples_z)
explorer.analyse()  # the sweep now (on display the widget would ask for it itself)
explorer.cluster = INDUCTION
info = explorer.cluster_info
print(f"cluster {INDUCTION}: {info['size']} features; DFA share by head:",
      [round(v, 2) for v in info["heads"]["share"]])
explorer""",
    ),
    (
        "md",
        """## One layer or two

The shipped two-layer SAE reads layers 17 and 18 concatenated (4,096 features). Each feature's
loading splits between the layers; the update found that most features live on one layer and
that the two-layer SAE's clusters look like the one-layer ones. Here, per feature, the share
of its loading on layer 17, and the cluster figures of all three SAEs side by side.""",
    ),
    (
        "code",
        """from attnviz.analysis.head_loadings import cross_layer_summary, layer_shares

both = load_pretrained(model.spec.name, "v-sae-L17+L18")
v17 = load_pretrained(model.spec.name, "v-sae-L17")
rows = {}
for name, sae in (("L17", v17), ("L18", v18), ("L17+L18", both)):
    density = SAEFeatureActivations(model, sae, held).density()
    a = analyse_head_loadings(sae, density, ks=range(2, 33), seed=0)
    rows[name] = a.summary()
    if name == "L17+L18":
        alive = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
        alive[a.features] = True
        print(cross_layer_summary(head_loadings(sae), alive=alive))
        shares = layer_shares(head_loadings(sae)).iloc[a.features]
        print(np.histogram(shares["L17"], bins=5, range=(0, 1))[0], "features by share on L17")
pd.DataFrame(rows).T[["features", "k", "silhouette", "null_silhouette", "slope", "r2"]].round(3)""",
    ),
]
