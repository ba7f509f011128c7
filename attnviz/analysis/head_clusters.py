"""Clusters of SAE features by head loading, and what each cluster is: the whole analysis the
HeadLoadingExplorer shows, as pure functions (Anthropic's attention update, 2025).

`analyse_head_loadings` sweeps k-means over the live features' normalised loading vectors (a
dead feature's decoder is wherever initialisation or resampling left it, so it says nothing about
heads), beside the same sweep on the shuffled null, and fits the cluster sizes' power law at the
chosen k for both. `cluster_tokens` and `cluster_heads` say what a cluster responds to and which
heads' attention carries it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.clusters import (
    Clustering,
    PowerLawFit,
    fit_power_law,
    kmeans,
    kmeans_sweep,
    shuffled_columns,
)
from attnviz.analysis.dfa import feature_attribution
from attnviz.analysis.head_loadings import HeadLoadings, head_loadings, query_head_usage

if TYPE_CHECKING:
    from attnviz.analysis.sae_examples import SAEFeatureActivations
    from attnviz.dictionaries.sae import SAE

__all__ = [
    "HeadLoadingAnalysis",
    "analyse_head_loadings",
    "cluster_heads",
    "cluster_tokens",
    "default_k",
    "dfa_head_shares",
]

LIVE_DENSITY = 1e-5
"""A feature is live when it fires on at least this fraction of the held-out tokens."""


@dataclass
class HeadLoadingAnalysis:
    """What k-means makes of one SAE's head loadings."""

    loadings: HeadLoadings
    features: np.ndarray
    """[n] the feature ids clustered (the live ones)."""
    vectors: np.ndarray
    """[n, n_heads] their normalised loadings (rows sum to 1)."""
    sweep: pd.DataFrame
    """k, inertia, silhouette, largest, smallest; and null_inertia, null_silhouette."""
    clustering: Clustering
    """At the chosen k."""
    fit: PowerLawFit | None
    """Rank-size power law of the cluster sizes at the chosen k (None with < 5 clusters)."""
    null_clustering: Clustering
    null_fit: PowerLawFit | None
    map_2d: np.ndarray
    """[n, 2] the loading vectors' first two principal components."""
    explained: tuple[float, float]
    """Variance fraction of each of the two components."""
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        return self.clustering.k

    def cluster_of(self, feature: int) -> int:
        """The cluster of a feature id (ValueError for a feature that was not clustered)."""
        hit = np.nonzero(self.features == feature)[0]
        if not len(hit):
            raise ValueError(f"feature {feature} was not clustered (dead on the held-out text)")
        return int(self.clustering.labels[hit[0]])

    def cluster_features(self, cluster: int) -> np.ndarray:
        """Feature ids of a cluster, nearest its centre first."""
        idx = np.nonzero(self.clustering.labels == cluster)[0]
        dist = np.linalg.norm(self.vectors[idx] - self.clustering.centres[cluster], axis=1)
        return self.features[idx[np.argsort(dist, kind="stable")]]

    def summary(self) -> dict[str, float]:
        """The figures a report quotes: k, silhouette real vs null, power-law slopes and fits."""
        row = self.sweep.set_index("k").loc[self.k]
        out = {
            "features": len(self.features), "k": self.k,
            "silhouette": float(row.silhouette), "null_silhouette": float(row.null_silhouette),
        }  # fmt: skip
        for name, fit in (("", self.fit), ("null_", self.null_fit)):
            out[f"{name}slope"] = fit.slope if fit else float("nan")
            out[f"{name}slope_stderr"] = fit.stderr if fit else float("nan")
            out[f"{name}r2"] = fit.r2 if fit else float("nan")
        return out


def _pca_2d(x: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float((s**2).sum()) or 1.0
    comps = centred @ vt[:2].T
    if comps.shape[1] < 2:
        comps = np.pad(comps, ((0, 0), (0, 2 - comps.shape[1])))
    var = [float(v**2 / total) for v in s[:2]] + [0.0, 0.0]
    return comps, (var[0], var[1])


MIN_FIT_CLUSTERS = 5
"""Fewer clusters than this give no power-law fit (two points always lie on a line)."""
MIN_DEFAULT_K = 4
"""The default k is looked for from here up: below it, k-means on a simplex splits trivially."""


def _safe_fit(c: Clustering) -> PowerLawFit | None:
    return fit_power_law(c.sizes) if (c.sizes > 0).sum() >= MIN_FIT_CLUSTERS else None


def default_k(sweep: pd.DataFrame) -> int:
    """The k of best silhouette, from 4 up where the sweep reaches it (the null's silhouette at
    that k is what to read it against)."""
    pool = sweep[sweep.k >= min(MIN_DEFAULT_K, int(sweep.k.max()))]
    return int(pool.loc[pool.silhouette.idxmax(), "k"])


def analyse_head_loadings(
    sae: SAE,
    density: Tensor | None = None,
    ks: range | list[int] = range(2, 65),
    k: int | None = None,
    seed: int = 0,
    n_init: int = 4,
    loadings: HeadLoadings | None = None,
    progress=None,
) -> HeadLoadingAnalysis:
    """k-means of the live features' normalised head loadings over `ks` (and on the shuffled
    null), with the clustering and power-law fits at `k` (default: default_k of the sweep).

    density: each feature's firing frequency on held-out text [d_sae] (live = >= 1e-5); without
    it every feature is clustered, and the notes say so. loadings: e.g. v loadings expanded to
    query heads (default: head_loadings(sae)). progress(done, total) after each k of both sweeps."""
    loadings = loadings if loadings is not None else head_loadings(sae)
    notes = [f"columns: {loadings.note}; rows normalised to sum to 1"]
    if density is None:
        alive = np.ones(loadings.raw.shape[0], dtype=bool)
        notes.append("no held-out density given: dead features are clustered too")
    else:
        alive = (torch.as_tensor(density).cpu().numpy() >= LIVE_DENSITY) & (
            loadings.raw.sum(-1).numpy() > 0
        )
        notes.append(f"{int(alive.sum())} of {len(alive)} features live (density >= 1e-5)")
    features = np.nonzero(alive)[0]
    if len(features) < 2:
        raise ValueError(
            f"only {len(features)} live features: there is nothing to cluster (is the SAE trained, "
            "and the density from text it was meant for?)"
        )
    x = loadings.normalised.numpy()[features].astype(np.float64)
    null = shuffled_columns(x, seed=seed)
    ks = [kk for kk in ks if 2 <= kk <= len(features)]
    total = 2 * len(ks)
    real, by_k = kmeans_sweep(
        x, ks, seed, n_init, progress=(lambda d, _: progress(d, total)) if progress else None
    )
    nulls, null_by_k = kmeans_sweep(
        null, ks, seed, n_init,
        progress=(lambda d, _: progress(len(ks) + d, total)) if progress else None,
    )  # fmt: skip
    sweep = real.assign(null_inertia=nulls.inertia, null_silhouette=nulls.silhouette)
    if k is None:
        if not len(sweep):
            raise ValueError(f"no k in {list(ks)} fits {len(features)} live features")
        k = default_k(sweep)
        notes.append(f"k = {k}: the best silhouette over k = {max(ks[0], MIN_DEFAULT_K)}..{ks[-1]}")
    chosen = by_k.get(k) or kmeans(x, k, seed, n_init)
    null_chosen = null_by_k.get(k) or kmeans(null, k, seed, n_init)
    map_2d, explained = _pca_2d(x)
    return HeadLoadingAnalysis(
        loadings, features, x, sweep, chosen, _safe_fit(chosen), null_chosen,
        _safe_fit(null_chosen), map_2d, explained, seed, notes,
    )  # fmt: skip


def cluster_tokens(
    examples: SAEFeatureActivations, features: np.ndarray | list[int], per_feature: int = 8,
    top: int = 10,
) -> pd.DataFrame:  # fmt: skip
    """The tokens a cluster's features fire on most: each feature's `per_feature` strongest held-out
    positions, the token there counted (and its activation summed) over the cluster. Columns:
    token, count, features (how many of the cluster's features it tops), activation."""
    count: Counter[str] = Counter()
    weight: dict[str, float] = {}
    seen: dict[str, set[int]] = {}
    for f in features:
        frame = examples.examples(int(f), k=per_feature, window=0)
        for _, row in frame.iterrows():
            token = str(row["token"])
            count[token] += 1
            weight[token] = weight.get(token, 0.0) + float(row["activation"])
            seen.setdefault(token, set()).add(int(f))
    rows = [
        {"token": t, "count": n, "features": len(seen[t]), "activation": weight[t]}
        for t, n in count.most_common(top)
    ]
    return pd.DataFrame(rows, columns=["token", "count", "features", "activation"])


@torch.no_grad()
def cluster_heads(
    adapter, sae: SAE, examples: SAEFeatureActivations, features: np.ndarray | list[int]
) -> pd.DataFrame:
    """Which query heads' attention carries a cluster's features, per feature (rows) and head
    (columns "H0".. of the SAE's first layer; "L17 H0".. for several layers): shares that sum to 1.

    z SAEs: the DFA of the feature at its strongest held-out example, |contribution| per head.
    v SAEs: attention the query heads pay to the positions where the feature fires, over the
    held-out contexts of its strongest examples (query_head_usage)."""
    c = sae.cfg
    rows, index = [], []
    for f in map(int, features):
        frame = examples.examples(f, k=1, window=0)
        if frame.empty:
            continue
        ctx, pos = int(frame.iloc[0]["context"]), int(frame.iloc[0]["position"])
        tokens = examples.tokens[ctx : ctx + 1]
        if c.site == "z":
            acts = adapter.attention(tokens, c.layer, ["pattern", "v"])
            dfa = feature_attribution(sae, acts.pattern[0], acts.v[0], pos, [f])
            share = dfa.cells[0].abs().sum(-1)
        elif c.site == "v":
            share = query_head_usage(adapter, sae, tokens)[f].reshape(-1)
        else:
            raise ValueError(f"cluster_heads reads z or v SAEs, not {c.site}")
        rows.append((share / share.sum().clamp_min(1e-12)).cpu().numpy())
        index.append(f)
    n_heads = adapter.spec.n_heads
    cols = (
        [f"H{h}" for h in range(n_heads)]
        if len(c.layers) == 1 or c.site == "z"
        else [f"L{layer} H{h}" for layer in c.layers for h in range(n_heads)]
    )
    return pd.DataFrame(rows, index=pd.Index(index, name="feature"), columns=cols)


@torch.no_grad()
def dfa_head_shares(adapter, sae: SAE, tokens: Tensor, min_activation: float = 0.0) -> Tensor:
    """For a z SAE: the share of each feature's |DFA| that comes through each head, over every
    (context, position) where the feature is active in `tokens` [contexts, n], weighted by its
    activation there: [d_sae, n_heads] (rows of features that never fire are zero). BOS left out."""
    from attnviz.data.contexts import token_batch

    c = sae.cfg
    if c.site != "z" or len(c.layers) != 1:
        raise ValueError(f"dfa_head_shares reads a one-layer z SAE, not {c.site} of {c.layers}")
    tokens = token_batch(tokens)
    total = torch.zeros(c.d_sae, adapter.spec.n_heads)
    for row in tokens.split(1):
        acts = adapter.attention(row, c.layer, ["pattern", "v", "z"])
        f = sae.encode(acts.z[0].flatten(-2).to(sae.W_enc)).float().cpu()
        for t in range(1, row.shape[1]):
            active = (f[t] > min_activation).nonzero(as_tuple=True)[0]
            if not len(active):
                continue
            dfa = feature_attribution(sae, acts.pattern[0], acts.v[0], t, active)
            per_head = dfa.cells.abs().sum(-1).cpu()  # [F, heads]
            share = per_head / per_head.sum(-1, keepdim=True).clamp_min(1e-12)
            total[active] += share * f[t, active, None]
    return total / total.sum(-1, keepdim=True).clamp_min(1e-12)
