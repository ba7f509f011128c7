"""HeadLoadingExplorer: SAE features clustered by how their decoder spreads over attention heads
(Anthropic's attention update, 2025), beside a shuffled null.

>>> HeadLoadingExplorer("z-sae-L18", model)              # doctest: +SKIP
>>> HeadLoadingExplorer(value_sae, model, k=12)          # doctest: +SKIP
>>> HeadLoadingExplorer(sae, density=density)            # no model: no examples or DFA

On first display the k-means sweep over ``ks`` (loadings and shuffled null) runs as a request with
a progress bar; the k slider re-clusters the same way. A click on a cluster shows its profile,
features, tokens and heads; on a feature, its loadings, examples, density and (z SAEs) the DFA of
its top example. The analysis is :mod:`attnviz.analysis.head_clusters`; this only sends it.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import traitlets
from threadpoolctl import threadpool_limits
from torch import Tensor

from attnviz.analysis import clusters
from attnviz.analysis import head_clusters as hc
from attnviz.analysis.clusters import Clustering, PowerLawFit
from attnviz.analysis.head_loadings import head_loadings
from attnviz.dictionaries.sae import SAE
from attnviz.errors import AttnvizError
from attnviz.widgets.arrays import encode_array
from attnviz.widgets.base import Widget
from attnviz.widgets.charts import chart_figure, chart_spec
from attnviz.widgets.feature_panel import density_payload, examples_payload
from attnviz.widgets.requests import Job, handles

if TYPE_CHECKING:
    from attnviz.analysis.sae_examples import SAEFeatureActivations
    from attnviz.models.adapter import ModelAdapter

__all__ = ["HeadLoadingExplorer"]

# scikit-learn's k-means on one OpenMP thread: on a busy machine its threads wait on each other
# (0.6 s a fit of 500 points on 2 loaded cores, 0.02 s on one; 16,000 points: 2.4 s vs 0.2 s).
ONE_THREAD = functools.partial(threadpool_limits, 1, user_api="openmp")

EXAMPLE_CONTEXTS = 48
"""Held-out pydocs contexts read for densities, examples, cluster tokens and heads."""
TOKEN_FEATURES = 32
"""A cluster's features (nearest the centre first) whose top tokens are counted."""
HEAD_FEATURES = 8
"""A cluster's features whose heads are measured (one forward pass each)."""


def _fit(c: Clustering) -> PowerLawFit | None:
    """The analysis's rule: a power law only over at least MIN_FIT_CLUSTERS clusters."""
    return clusters.fit_power_law(c.sizes) if (c.sizes > 0).sum() >= hc.MIN_FIT_CLUSTERS else None


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)  # JSON has no NaN


def _fit_payload(fit: PowerLawFit | None) -> dict[str, float | None] | None:
    return None if fit is None else {**dataclasses.asdict(fit), "stderr": _num(fit.stderr)}


def _fit_name(what: str, fit: PowerLawFit | None) -> str:
    if fit is None:
        return f"{what}: no fit (fewer than {hc.MIN_FIT_CLUSTERS} clusters)"
    err = "" if np.isnan(fit.stderr) else f" ± {fit.stderr:.2f}"
    return f"{what}: slope {fit.slope:.2f}{err}, R² {fit.r2:.2f}"


def _steps(job: Job | None) -> tuple[Callable[..., None], Callable[[], None]]:
    """job.progress and job.check, or no-ops without a job (called from Python)."""
    return (job.progress, job.check) if job else (lambda *a: None, lambda: None)


def ranked(vectors: np.ndarray, c: Clustering, cluster: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a cluster's points, nearest its centre first, and their distances (the
    order of hc.HeadLoadingAnalysis.cluster_features)."""
    idx = np.nonzero(c.labels == cluster)[0]
    dist = np.linalg.norm(vectors[idx] - c.centres[cluster], axis=1)
    order = np.argsort(dist, kind="stable")
    return idx[order], dist[order]


class HeadLoadingExplorer(Widget):
    """Head-loading clusters of an SAE at a site that splits into heads (z, v, several layers).

    Traits (synced; view state first): k, cluster (-1: none), feature (-1: none); dictionary,
    notes, heads (column labels), head_kind ("query" / "kv"), ks (the sweep's k), has_model,
    analysed, data ({features int32 [n], loadings float16 [n, heads] (rows sum to 1), norms,
    map float32 [n, 2], projection, explained}), clustering ({k, labels, order, sizes, centres,
    profiles, fit, null_sizes, null_fit, ...}), charts ({inertia, silhouette, sizes}: chart
    specs), cluster_info, feature_info, error, busy."""

    BUNDLE = "head_loadings"

    k = traitlets.Int(0).tag(sync=True)
    cluster = traitlets.Int(-1).tag(sync=True)
    feature = traitlets.Int(-1).tag(sync=True)
    ks = traitlets.List(traitlets.Int()).tag(sync=True)
    dictionary, head_kind, error = (traitlets.Unicode("").tag(sync=True) for _ in range(3))
    notes, heads = (traitlets.List(traitlets.Unicode()).tag(sync=True) for _ in range(2))
    has_model, analysed, busy = (traitlets.Bool(False).tag(sync=True) for _ in range(3))
    data, clustering, charts, cluster_info, feature_info = (
        traitlets.Dict().tag(sync=True) for _ in range(5)
    )

    def __init__(
        self, sae: SAE | str, model: ModelAdapter | None = None, *, k: int | None = None,
        ks: range | list[int] = range(2, 65), examples_from: Tensor | SAEFeatureActivations | None = None,
        density: Tensor | None = None, seed: int = 0, n_init: int = 4,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        """sae: an SAE, or the name of one shipped for `model`. model: gives held-out examples,
        densities (dead features are left out), cluster tokens and heads, and DFA; without it
        pass `density` ([d_sae] firing frequencies) to leave dead features out. k: the clustering
        shown first (default: best silhouette over ks). examples_from: token ids [contexts, n]
        (default: 48 held-out pydocs contexts), or SAEFeatureActivations of this SAE."""
        self._model, self._seed, self._n_init, self._k_wanted = model, int(seed), n_init, k
        self._density_given, self._examples_from = density, examples_from
        self._analysis: hc.HeadLoadingAnalysis | None = None
        self._null: np.ndarray | None = None
        self._library: SAEFeatureActivations | None = None
        self._density: Tensor | None = None
        self._ready, self._lock = False, threading.Lock()
        self._sae: SAE | None = None
        super().__init__(ks=sorted({int(x) for x in ks}), has_model=model is not None, **kwargs)
        try:
            self._sae = self._resolve(sae)
            self._loadings = head_loadings(self._sae)
        except AttnvizError as err:
            self._sae, self.error = None, str(err)
        else:
            c = self._sae.cfg
            layers = "+".join(map(str, c.layers))
            self.dictionary = (f"{c.architecture} SAE, {c.d_sae:,} features, {c.site} of layer "
                               f"{layers} of {c.model}")  # fmt: skip
            self.heads, self.head_kind = self._loadings.labels, self._loadings.kind
            self.notes = [f"columns: {self._loadings.note}"]
            if model is None:
                self.notes = [*self.notes, "no model given: no held-out examples, cluster tokens, "
                              "heads or DFA here; pass model= for them" + (
                                  "" if density is not None else
                                  ", or density= to leave dead features out (all are clustered)")]  # fmt: skip
        self._ready = True

    def _resolve(self, sae: SAE | str) -> SAE:
        if isinstance(sae, str):
            if self._model is None:
                raise AttnvizError(f"sae={sae!r} names a shipped SAE, which needs the model it "
                                   f"is for: HeadLoadingExplorer({sae!r}, attnviz.load_model())")  # fmt: skip
            from attnviz.dictionaries.pretrained import load_pretrained

            name, sae = sae, load_pretrained(self._model.spec.name, sae)  # type: ignore[assignment]
            if not isinstance(sae, SAE):
                raise AttnvizError(f"shipped {name} is a {type(sae).__name__}, not an SAE: head "
                                   "loadings need a z or v SAE (see `attnviz dictionaries`)")  # fmt: skip
        if not isinstance(sae, SAE):
            raise TypeError(f"sae must be an attnviz SAE or a shipped name, not {type(sae)}")
        if sae.cfg.site not in ("z", "v") or not sae.cfg.n_heads:
            raise AttnvizError(
                f"this SAE reads {sae.cfg.site} of layer(s) {sae.cfg.layers}, which does not split "
                "into heads, so its features have no head loadings: use an SAE trained on hook_z "
                "(attnviz train sae --site z --layer L) or on the values (--site v)"
            )
        return sae

    # ---- the analysis (a request on first display; callable from Python) ----------------------

    @handles("analyse")
    def _analyse_request(self, job: Job) -> dict[str, Any]:
        return {"k": self.analyse(job).k}

    def analyse(self, job: Job | None = None) -> hc.HeadLoadingAnalysis:
        """Run the sweep (once) and show its clustering; returns the analysis."""
        with self._lock:  # two views ask at once: one sweep
            return self._analysis or self._analyse(job)

    def _analyse(self, job: Job | None) -> hc.HeadLoadingAnalysis:
        if self._sae is None:
            raise AttnvizError(self.error or "no SAE to analyse")
        step, check = _steps(job)
        sae, density, notes = self._sae, self._density_given, []
        if self._model is not None:
            from attnviz.analysis.sae_check import verify_on_model
            from attnviz.analysis.sae_examples import SAEFeatureActivations

            step(0, None, "checking the SAE on the model")
            verify_on_model(sae, self._model)
            step(0, None, "reading held-out text")
            lib = self._examples_from  # token ids, or activations already read for this SAE
            if not (isinstance(lib, SAEFeatureActivations) and lib.sae is sae):
                tokens = lib.tokens if isinstance(lib, SAEFeatureActivations) else lib
                if tokens is None:
                    from attnviz.dictionaries.pretrained import SAE_TRAINED_CONTEXTS as AFTER
                    from attnviz.dictionaries.pretrained import held_out_contexts

                    tokens = held_out_contexts(self._model, EXAMPLE_CONTEXTS, AFTER)
                lib = SAEFeatureActivations(self._model, sae, tokens)
            self._library = lib
            density = self._library.density() if density is None else density
        self._density = None if density is None else torch.as_tensor(density).double().cpu()
        n = self._n_live()
        usable = [kk for kk in self.ks if 2 <= kk <= n]
        if n < 2 or not usable:
            ks = f"{self.ks[0]}..{self.ks[-1]}" if self.ks else "[]"
            raise AttnvizError(f"{n} features are live (density >= {hc.LIVE_DENSITY:g}), so ks = {ks} "
                               f"has no k between 2 and {n}: give ks in that range, or density from "
                               "text the SAE was meant for")  # fmt: skip
        k = self._k_wanted
        if k is not None and not 2 <= k <= n:
            notes.append(f"k = {k} is out of range: choose k between 2 and {n} (the live "
                         "features); showing the best silhouette instead")  # fmt: skip
            k = None

        def progress(done: int, total: int) -> None:
            check()
            what = "loadings" if done <= total // 2 else "shuffled null"
            step(done, total, f"k-means sweep over k, {what}")

        try:
            with ONE_THREAD():
                a = hc.analyse_head_loadings(sae, self._density, usable, k, self._seed, self._n_init,
                                          loadings=self._loadings, progress=progress)  # fmt: skip
        except ValueError as err:
            raise AttnvizError(f"head-loading analysis: {err}") from err
        self._null = clusters.shuffled_columns(a.vectors, seed=self._seed)
        self._analysis = a
        self._publish(a, notes)
        return a

    def _n_live(self) -> int:
        if self._density is None:
            return int(self._loadings.raw.shape[0])
        alive = (self._density.numpy() >= hc.LIVE_DENSITY) & (
            self._loadings.raw.sum(-1).numpy() > 0
        )
        return int(alive.sum())

    def _publish(self, a: hc.HeadLoadingAnalysis, notes: list[str]) -> None:
        norms = self._loadings.raw[torch.as_tensor(a.features)].sum(-1)
        with self.hold_sync():
            self.data = {
                "features": encode_array(a.features, "int32"), "norms": encode_array(norms, "float32"),
                "loadings": encode_array(a.vectors, "float16"), "map": encode_array(a.map_2d, "float32"),
                "projection": "PCA", "d_sae": int(self._loadings.raw.shape[0]),
                "explained": [float(x) for x in a.explained],
            }  # fmt: skip
            self.notes = [*self.notes, *a.notes[1:], *notes]
            self._show_k(a)
            self.error = "\n".join(n for n in notes if "out of range" in n)
            self.analysed = True

    def _show_k(self, a: hc.HeadLoadingAnalysis) -> None:
        """Publish the clustering at a.k; a feature shown stays, with its new cluster selected."""
        self._quietly("k", a.k)
        self.clustering = self._clustering_payload(a)
        self.charts = self._charts(a)
        cluster, f = -1, self.feature
        if 0 <= f < self._loadings.raw.shape[0]:  # a feature shown (or given) keeps showing
            cluster, info = self._cluster_of(f), self.feature_info
            info = info if info.get("feature") == f else self._feature_info(f)
            self.feature_info = {**info, "cluster": cluster}
        self._quietly("cluster", cluster)
        self.cluster_info = self._cluster_info(cluster) if cluster >= 0 else {}

    def _clustering_payload(self, a: hc.HeadLoadingAnalysis) -> dict[str, Any]:
        c, x = a.clustering, a.vectors
        order = np.concatenate([ranked(x, c, i)[0] for i in range(c.k)])
        profiles = np.stack([x[c.labels == i].mean(0) if (c.labels == i).any()
                             else np.zeros(x.shape[1]) for i in range(c.k)])  # fmt: skip
        return {
            "k": c.k, "labels": encode_array(c.labels, "int32"), "order": encode_array(order, "int32"),
            "sizes": c.sizes.tolist(), "centres": encode_array(c.centres, "float32"),
            "profiles": encode_array(profiles, "float32"), "inertia": c.inertia,
            "silhouette": _num(c.silhouette), "null_silhouette": _num(a.null_clustering.silhouette),
            "fit": _fit_payload(a.fit), "null_sizes": a.null_clustering.sizes.tolist(),
            "null_fit": _fit_payload(a.null_fit),
        }  # fmt: skip

    def _charts(self, a: hc.HeadLoadingAnalysis) -> dict[str, Any]:
        s, k, c, nc = a.sweep, a.k, a.clustering, a.null_clustering
        # The shuffled null is a reference drawn under the loadings (its points must not cover
        # the clusters' points, which a click selects).
        out = {col: chart_spec("line", [
            {"name": "loadings", "x": s.k, "y": s[col]},
            {"name": "shuffled null", "x": s.k, "y": s[f"null_{col}"], "behind": True},
            {"name": f"k = {k}", "x": [k, k], "y": [getattr(c, col), getattr(nc, col)],
             "mode": "markers"},
        ], title=f"{col} over k", x_title="k", y_title=col) for col in ("inertia", "silhouette")}  # fmt: skip
        ranks, null_ranks = np.arange(1, k + 1), np.arange(1, len(nc.sizes) + 1)
        series: list[dict[str, Any]] = [{"name": f"clusters (k = {k})", "x": ranks, "y": c.sizes, "mode": "markers",
                   "labels": [f"cluster {i}: {n} features" for i, n in enumerate(c.sizes)]}]  # fmt: skip
        if a.fit:
            series.append({"name": _fit_name("fit", a.fit), "x": ranks,
                           "y": a.fit.predict(ranks), "mode": "lines"})  # fmt: skip
        series.append({"name": "shuffled null", "x": null_ranks, "y": nc.sizes, "mode": "markers",
                       "behind": True})  # fmt: skip
        if a.null_fit:
            series.append({"name": _fit_name("null fit", a.null_fit), "x": null_ranks,
                           "y": a.null_fit.predict(null_ranks), "mode": "lines", "behind": True})  # fmt: skip
        out["sizes"] = chart_spec("line", series, title=f"cluster sizes at k = {k}",
                                  x_title="rank", y_title="features", log_x=True, log_y=True)  # fmt: skip
        return out

    # ---- re-clustering at another k ------------------------------------------------------------

    def at_k(self, k: int, job: Job | None = None) -> hc.HeadLoadingAnalysis:
        """The analysis re-clustered at `k` (k-means on the loadings and on the same null)."""
        a = self._current()
        assert self._null is not None
        n = len(a.features)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= n:
            raise AttnvizError(f"k = {k!r} is out of range: {n} features are clustered, so "
                               f"choose a whole number k between 2 and {n}")  # fmt: skip
        k, (step, check), found = int(k), _steps(job), []
        for i, (what, x) in enumerate((("loadings", a.vectors), ("shuffled null", self._null))):
            step(i, 2, f"k-means at k = {k}, {what}")
            with ONE_THREAD():
                found.append(clusters.kmeans(x, k, self._seed, self._n_init))
            check()
        step(2, 2, "")
        c, nc = found
        return dataclasses.replace(a, clustering=c, fit=_fit(c), null_clustering=nc,
                                   null_fit=_fit(nc))  # fmt: skip

    def _recluster(self, k: Any, job: Job | None = None) -> None:
        self._analysis = self.at_k(k, job)
        self._show_k(self._analysis)

    @handles("cluster")
    def _cluster_request(self, job: Job, k: Any) -> dict[str, Any]:
        with self.hold_sync():
            self._recluster(k, job)
            self.error = ""
        return {"k": self.k}

    @traitlets.observe("k")
    def _k_changed(self, change: dict[str, Any]) -> None:
        if self._ready and self._analysis is None:
            self._k_wanted = self.k  # used by the analysis when it runs
        elif self._ready and not self._attempt(lambda: self._recluster(self.k)):
            self._quietly("k", change["old"])

    # ---- clicks: a cluster, a feature ----------------------------------------------------------

    def _current(self) -> hc.HeadLoadingAnalysis:
        if self._analysis is None:
            raise AttnvizError("the clustering is not ready yet: wait for the sweep to finish "
                               "(or call .analyse())")  # fmt: skip
        return self._analysis

    @traitlets.observe("cluster", "feature")
    def _clicked(self, change: dict[str, Any]) -> None:
        name = change["name"]
        show = self._cluster_info if name == "cluster" else self._feature_info
        shown = lambda: setattr(self, f"{name}_info", show(change["new"]))  # noqa: E731
        if self._ready and not self._attempt(shown):
            self._quietly(name, change["old"])

    def _cluster_of(self, feature: int) -> int:
        hit = np.nonzero(self._current().features == feature)[0]
        return int(self._current().clustering.labels[hit[0]]) if len(hit) else -1

    def _cluster_info(self, cluster: int) -> dict[str, Any]:
        if cluster < 0:
            return {}
        a = self._current()
        if not 0 <= cluster < a.k:
            raise AttnvizError(f"cluster {cluster} is out of range: at k = {a.k} the clusters "
                               f"are 0-{a.k - 1}")  # fmt: skip
        idx, dist = ranked(a.vectors, a.clustering, cluster)
        ids = a.features[idx]
        info: dict[str, Any] = {"cluster": cluster, "k": a.k, "size": len(ids),
                                "features": encode_array(ids, "int32"),
                                "distances": encode_array(dist, "float32")}  # fmt: skip
        if self._library is None:
            return info
        words = hc.cluster_tokens(self._library, ids[:TOKEN_FEATURES])
        info["tokens"] = [{"token": str(r.token), "count": int(r.count), "features": int(r.features),
                           "activation": float(r.activation)} for r in words.itertuples()]  # fmt: skip
        info["tokens_from"] = int(min(len(ids), TOKEN_FEATURES))
        assert self._sae is not None
        if self._sae.cfg.site == "v" or len(self._sae.cfg.layers) == 1:
            heads = hc.cluster_heads(self._model, self._sae, self._library, ids[:HEAD_FEATURES])
            if len(heads):
                info["heads"] = {"labels": list(heads.columns), "features": len(heads),
                                 "share": [float(v) for v in heads.mean(0)]}  # fmt: skip
        return info

    def _feature_info(self, feature: int) -> dict[str, Any]:
        if feature < 0:
            return {}
        assert self._sae is not None
        d_sae = self._sae.cfg.d_sae
        if not 0 <= feature < d_sae:
            raise AttnvizError(f"feature {feature} is out of range: this SAE has features "
                               f"0-{d_sae - 1}")  # fmt: skip
        raw = self._loadings.raw[feature]
        info: dict[str, Any] = {
            "feature": int(feature), "cluster": self._cluster_of(feature), "norm": float(raw.sum()),
            "raw": [float(v) for v in raw], "share": [float(v) for v in self._loadings.normalised[feature]],
        }  # fmt: skip
        if self._density is not None:
            info.update(density_payload(self._density, feature))
        if self._library is not None:
            info["n_tokens"] = self._library.n_tokens
            info["examples"] = examples_payload(self._library.examples(feature, k=8, window=10))
            c = self._sae.cfg
            if c.site == "z" and len(c.layers) == 1 and info["examples"]:
                info["dfa"] = self._dfa(feature)
        return info

    def _dfa(self, feature: int) -> dict[str, Any]:
        """The DFA (heads x sources) of a feature at its strongest held-out example."""
        from attnviz.analysis.dfa import feature_attribution

        assert self._library is not None and self._model is not None and self._sae is not None
        top = self._library.examples(feature, k=1, window=0).iloc[0]
        ctx, pos = int(top["context"]), int(top["position"])
        tokens = self._library.tokens[ctx : ctx + 1]
        acts = self._model.attention(tokens, self._sae.cfg.layer, ["pattern", "v"])
        assert acts.pattern is not None and acts.v is not None
        dev, dtype = self._sae.W_enc.device, self._sae.W_enc.dtype
        fa = feature_attribution(self._sae, acts.pattern[0].to(dev, dtype), acts.v[0].to(dev, dtype),
                                 pos, [feature])  # fmt: skip
        return {
            "context": ctx, "dest": pos, "activation": float(top["activation"]),
            "tokens": self._model.to_str_tokens(tokens[0])[: pos + 1],
            "cells": encode_array(fa.cells[0, :, : pos + 1].float().cpu(), "float32"),
            "remainder": float(fa.remainder[0]), "pre_activation": float(fa.pre_activation[0]),
        }  # fmt: skip

    # ---- the rest -------------------------------------------------------------------------------

    def figure(self) -> Any:
        """The sorted loadings heatmap over the cluster sizes (log-log) and the silhouette over
        k, as one plotly figure (for to_png)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        a = self._current()
        titles = [
            "loadings, features sorted by cluster",
            f"cluster sizes at k = {a.k}",
            "silhouette",
        ]
        fig = make_subplots(2, 2, specs=[[{"colspan": 2}, None], [{}, {}]], subplot_titles=titles)
        order = np.concatenate([ranked(a.vectors, a.clustering, i)[0] for i in range(a.k)])
        fig.add_trace(go.Heatmap(z=a.vectors[order].T, y=self.heads, colorscale="Magma_r"), 1, 1)
        for col, name in ((1, "sizes"), (2, "silhouette")):
            spec = self.charts[name]
            for trace in chart_figure(spec).data:
                fig.add_trace(trace, row=2, col=col)
        fig.update_xaxes(type="log", row=2, col=1).update_yaxes(type="log", row=2, col=1)
        return fig.update_layout(title=self.dictionary, width=1000, height=800)

    def __repr__(self) -> str:
        return f"HeadLoadingExplorer({self.dictionary or 'no SAE'}, k={self.k})"
