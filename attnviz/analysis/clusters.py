"""k-means over feature vectors (head loadings), the sweep over k, the cluster-size distribution
and its power-law fit, and a shuffled null to read them against.

Anthropic's attention update (2025) clustered value-SAE head-loading vectors and found cluster
sizes with a power-law distribution. A power law on a log-log plot is easy to see in anything, so
every figure here comes with the same computation on shuffled loadings: each column (head)
permuted independently across features, which keeps every head's distribution of loadings and
destroys which heads load together. Structure the real loadings have and the null lacks is
structure in *which heads share features*.

k-means is scikit-learn's (seeded, several initialisations); silhouettes are scored on a fixed
random sample of points when there are many, since the exact score is quadratic in their number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor

__all__ = [
    "Clustering",
    "PowerLawFit",
    "cluster_profiles",
    "cluster_sizes",
    "fit_power_law",
    "kmeans",
    "kmeans_sweep",
    "members",
    "shuffled_columns",
]

SILHOUETTE_SAMPLE = 2000
"""Points the silhouette is scored on (exact below this; a seeded sample above)."""


@dataclass
class Clustering:
    """One k-means solution."""

    k: int
    labels: np.ndarray
    """[n] cluster of each point, renumbered so cluster 0 is the largest."""
    centres: np.ndarray
    """[k, dim] in the renumbered order."""
    inertia: float
    silhouette: float
    """Mean silhouette (NaN when k < 2 or every point is in one cluster)."""

    @property
    def sizes(self) -> np.ndarray:
        """[k] points per cluster, largest first."""
        return np.bincount(self.labels, minlength=self.k)


def _points(vectors: Tensor | np.ndarray) -> np.ndarray:
    x = vectors.detach().cpu().numpy() if isinstance(vectors, Tensor) else np.asarray(vectors)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"cluster a 2-D [points, dim] array of at least one point, not {x.shape}")
    return x


def _silhouette(x: np.ndarray, labels: np.ndarray, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(x):
        return float("nan")
    sample = SILHOUETTE_SAMPLE if len(x) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(x, labels, sample_size=sample, random_state=seed))


def kmeans(
    vectors: Tensor | np.ndarray, k: int, seed: int = 0, n_init: int = 4, **options
) -> Clustering:
    """scikit-learn's KMeans (k-means++ starts, `n_init` of them, the best kept); same seed, same
    clustering. options go to KMeans (e.g. algorithm="elkan")."""
    from sklearn.cluster import KMeans

    x = _points(vectors)
    if not 1 <= k <= len(x):
        raise ValueError(f"k = {k}: choose between 1 and the number of points ({len(x)})")
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed, **options).fit(x)
    # Renumber by size (largest first, ties by old label) so labels read the same across runs.
    order = np.lexsort((np.arange(k), -np.bincount(model.labels_, minlength=k)))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    labels = rank[model.labels_]
    return Clustering(
        k, labels, model.cluster_centers_[order], float(model.inertia_),
        _silhouette(x, labels, seed),
    )  # fmt: skip


def kmeans_sweep(
    vectors: Tensor | np.ndarray,
    ks: range | list[int] = range(2, 65),
    seed: int = 0,
    n_init: int = 4,
    progress=None,
    **options,
) -> tuple[pd.DataFrame, dict[int, Clustering]]:
    """k-means at every k: a frame (k, inertia, silhouette, largest, smallest) and the
    clusterings by k. progress(done, total) is called after each k."""
    x = _points(vectors)
    ks = [k for k in ks if 1 <= k <= len(x)]
    rows, by_k = [], {}
    for i, k in enumerate(ks):
        c = kmeans(x, k, seed, n_init, **options)
        by_k[k] = c
        rows.append(
            {"k": k, "inertia": c.inertia, "silhouette": c.silhouette,
             "largest": int(c.sizes.max()), "smallest": int(c.sizes.min())}
        )  # fmt: skip
        if progress is not None:
            progress(i + 1, len(ks))
    return pd.DataFrame(rows), by_k


def shuffled_columns(vectors: Tensor | np.ndarray, seed: int = 0, renormalise: bool = True):
    """The null: each column permuted independently across rows (seeded); rows renormalised to sum
    to 1 when the input's rows did (`renormalise`)."""
    x = _points(vectors)
    rng = np.random.default_rng(seed)
    out = np.stack([rng.permutation(x[:, j]) for j in range(x.shape[1])], axis=1)
    if renormalise:
        out = out / np.clip(out.sum(1, keepdims=True), 1e-12, None)
    return out


def cluster_sizes(labels: np.ndarray, k: int | None = None) -> np.ndarray:
    """Points per cluster, largest first (empty clusters left out)."""
    sizes = np.bincount(np.asarray(labels), minlength=k or 0)
    return np.sort(sizes[sizes > 0])[::-1]


@dataclass
class PowerLawFit:
    """size ~ C * rank^slope, fitted by least squares on log size against log rank."""

    slope: float
    """The exponent (negative: sizes fall with rank); a Zipf law has -1."""
    intercept: float
    """log C (natural log)."""
    r2: float
    """Fraction of the variance of log size the line explains."""
    stderr: float
    """Standard error of the slope (NaN with fewer than three clusters)."""
    n: int
    """Clusters fitted."""

    def predict(self, rank: np.ndarray) -> np.ndarray:
        return np.exp(self.intercept) * np.asarray(rank, dtype=np.float64) ** self.slope


def fit_power_law(sizes: np.ndarray) -> PowerLawFit:
    """The rank-size power law of cluster sizes (sorted largest first here; zeros dropped)."""
    s = np.sort(np.asarray(sizes, dtype=np.float64))[::-1]
    s = s[s > 0]
    if len(s) < 2:
        raise ValueError(f"a power law needs at least two non-empty clusters, got {len(s)}")
    x, y = np.log(np.arange(1, len(s) + 1)), np.log(s)
    slope, intercept = np.polyfit(x, y, 1)
    fitted = intercept + slope * x
    ss_res, ss_tot = float(((y - fitted) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    stderr = (
        math.sqrt(ss_res / (len(s) - 2) / float(((x - x.mean()) ** 2).sum()))
        if len(s) > 2
        else float("nan")
    )
    return PowerLawFit(float(slope), float(intercept), float(r2), stderr, len(s))


def cluster_profiles(vectors: Tensor | np.ndarray, clustering: Clustering) -> pd.DataFrame:
    """Per cluster: size, mean loading vector (column m0.., as given), the dimension it loads on
    most and that dimension's mean share, and the mean distance of its points to the centre."""
    x = _points(vectors)
    rows = []
    for c in range(clustering.k):
        members = x[clustering.labels == c]
        if len(members) == 0:
            continue
        mean = members.mean(0)
        spread = float(np.linalg.norm(members - clustering.centres[c], axis=1).mean())
        rows.append(
            {"cluster": c, "size": len(members), "top": int(mean.argmax()),
             "top_share": float(mean.max() / max(mean.sum(), 1e-12)), "spread": spread,
             "mean": mean}
        )  # fmt: skip
    return pd.DataFrame(rows)


def members(clustering: Clustering, cluster: int, vectors: Tensor | np.ndarray) -> np.ndarray:
    """Indices of a cluster's points, nearest the centre first."""
    x = _points(vectors)
    idx = np.nonzero(clustering.labels == cluster)[0]
    dist = np.linalg.norm(x[idx] - clustering.centres[cluster], axis=1)
    return idx[np.argsort(dist, kind="stable")]
