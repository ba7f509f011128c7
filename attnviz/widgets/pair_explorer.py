"""PairExplorer: why a head attends where it does, in query-feature x key-feature pairs.

>>> PairExplorer(model, "The cat sat on the mat because it was tired", layer=3)  # doctest: +SKIP

Click a (destination, source) cell of a head's pattern: its reconstructed score splits into the
top query-feature x key-feature pair contributions, the other pairs and the bias terms, which add
up to the score shown. Click a feature in that table: its max-activating contexts (held-out
text by default), tokens shaded by activation, and its firing density.

With a hook_z SAE of the layer (given as ``sae=``, taken from a linked FeatureAttribution, or
shipped), a clicked cell (head h, destination t, source s) also shows what moves along that
edge: the SAE features at t whose direct attribution through (h, s) is largest, with their share
of each feature's pre-activation; a click on one shows it in the linked FeatureAttribution.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import traitlets
from torch import Tensor

from attnviz.analysis.dfa import edge_features
from attnviz.analysis.feature_examples import FeatureActivations
from attnviz.analysis.reconstruction import Reconstruction, ReconstructionKind
from attnviz.errors import AttnvizError
from attnviz.models.adapter import ModelAdapter
from attnviz.widgets.feature_panel import density_payload, examples_payload
from attnviz.widgets.qk_widget import QKInput, QKWidget
from attnviz.widgets.saes import SAEInput, SAESet

if TYPE_CHECKING:
    from attnviz.widgets.feature_attribution import FeatureAttribution

__all__ = ["PairExplorer"]

EXAMPLE_CONTEXTS = 32
"""Held-out contexts (documents no shipped dictionary saw) searched for max-activating examples."""
_INTS = ("q_feature", "k_feature", "n_pairs")
_FLOATS = ("contribution", "f_q", "f_k", "mask", "map_weight")


def _number(x: Any) -> float | None:
    """A JSON-safe float (None for missing values)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class PairExplorer(QKWidget):
    """Score decomposition of a clicked cell and the examples of a clicked feature.

    Traits (synced, besides QKWidget's): view (the pattern drawn: "true", "transcoder" or
    "masked"), map (the reconstruction decomposed: "masked" when there is a pair table, else
    "transcoder"), top (pairs listed), clicked ([row, col] of the shown heatmap; pooled cells
    resolve to the cell of the block with the largest shown weight; a window shifts them by its
    start), decomposition, feature
    ({"side": "q" | "k", "index": i}) and feature_info (its examples and density); edge
    ({head, dest, src, layer, linked, rows: [{feature, contribution, pre_activation, share}]}, or
    {message} without an SAE) and follow ({feature}: show it in the linked FeatureAttribution)."""

    BUNDLE = "pair_explorer"

    view = traitlets.Unicode("transcoder").tag(sync=True)
    map = traitlets.Unicode("masked").tag(sync=True)
    top = traitlets.Int(10).tag(sync=True)
    clicked = traitlets.List(traitlets.Int()).tag(sync=True)
    decomposition = traitlets.Dict().tag(sync=True)
    feature = traitlets.Dict().tag(sync=True)
    feature_info = traitlets.Dict().tag(sync=True)
    edge = traitlets.Dict().tag(sync=True)
    follow = traitlets.Dict().tag(sync=True)

    def __init__(
        self, model: ModelAdapter, prompt: str, layer: int | None = None, *, qk: QKInput = None,
        cell: tuple[int, int] | None = None, examples_from: Tensor | None = None,
        sae: SAEInput = None, attribution: FeatureAttribution | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        """cell: a (destination, source) token cell to decompose at once. examples_from: token
        ids [contexts, n] to find features' max-activating examples in (default: 32 held-out
        contexts, computed at the first feature click). sae: hook_z SAEs for the edge's
        features (default: the linked `attribution`'s, else the shipped ones). attribution: a
        FeatureAttribution that a click on an edge feature shows it in."""
        self._examples_from = examples_from
        self._features: dict[int, FeatureActivations] = {}
        self._attribution = attribution
        self._saes = SAESet(model, sae) if sae is not None or attribution is None else None
        self._edge_cache: tuple[tuple[str, int], Tensor, Tensor] | None = None
        super().__init__(model, prompt, layer, qk=qk, **kwargs)
        if cell is not None:
            self.select_cell(*cell)

    # ---- reacting to the front-end -------------------------------------------------------------

    @traitlets.validate("view")
    def _check_view(self, proposal: Any) -> str:
        if proposal["value"] not in ("true", "transcoder", "masked"):
            raise traitlets.TraitError("view must be 'true', 'transcoder' or 'masked'")
        return str(proposal["value"])

    @traitlets.validate("map")
    def _check_map(self, proposal: Any) -> str:
        if proposal["value"] not in ("transcoder", "masked"):
            raise traitlets.TraitError("map must be 'transcoder' or 'masked'")
        return str(proposal["value"])

    @traitlets.observe("clicked")
    def _clicked(self, change: dict[str, Any]) -> None:
        if self._ready and len(self.clicked) == 2:
            self._guard(lambda: self._decompose(*self._resolve(*self.clicked)))

    @traitlets.observe("head", "map", "top")
    def _redo(self, change: dict[str, Any]) -> None:
        dest, src = self.decomposition.get("dest"), self.decomposition.get("src")
        if self._ready and dest is not None and src is not None:
            self._guard(lambda: self._decompose(int(dest), int(src)))

    @traitlets.observe("feature")
    def _feature_clicked(self, change: dict[str, Any]) -> None:
        if self._ready and self.feature:
            self._guard(lambda: self._show_feature(self.feature["side"], self.feature["index"]))

    @traitlets.observe("follow")
    def _follow(self, change: dict[str, Any]) -> None:
        if self._ready and self.follow:
            self._guard(lambda: self.show_in_attribution(int(self.follow["feature"])))

    def _guard(self, work: Any) -> None:
        """Run a click's work with the widget busy; bad input shows in `error`."""
        self.busy = True
        try:
            work()
            self.error = ""
        except (AttnvizError, ValueError, KeyError) as err:
            self.error = str(err) if isinstance(err, AttnvizError) else f"attnviz: {err}"
        finally:
            self.busy = False

    # ---- the work, callable from Python too ----------------------------------------------------

    def select_cell(self, dest: int, src: int) -> dict[str, Any]:
        """Decompose token cell (dest, src) of the selected head; returns the decomposition."""
        self._decompose(dest, src)
        return self.decomposition

    def show_feature(self, side: str, index: int) -> dict[str, Any]:
        """Find a query ("q") or key ("k") feature's max-activating examples; returns them."""
        self._show_feature(side, index)
        return self.feature_info

    def _current(self) -> Reconstruction:
        if self._rec is None:
            raise AttnvizError("nothing to explain yet: give the widget a prompt that works")
        return self._rec

    def _resolve(self, row: int, col: int) -> tuple[int, int]:
        """Token cell of a clicked cell of the shown heatmap."""
        rec, f, at = self._current(), self.downsampled, self.offset  # at: the window's start
        end = self.window[1] if self.window else rec.n_tokens
        r0, c0 = at + row * f, at + col * f
        if f <= 1:
            return r0, c0
        block = rec.pattern(self.view)[self.head, r0 : min(end, r0 + f), c0 : min(end, c0 + f)]
        dest = torch.arange(r0, r0 + block.shape[0])[:, None]
        src = torch.arange(c0, c0 + block.shape[1])[None, :]
        block = block.float().masked_fill(src > dest, -1.0)  # future cells never win
        if block.numel() == 0 or float(block.max()) < 0:
            raise ValueError(f"block ({row}, {col}) holds only future cells")
        i = int(block.argmax())
        return r0 + i // block.shape[1], c0 + i % block.shape[1]

    def _decompose(self, dest: int, src: int) -> None:
        rec = self._current()
        kind: ReconstructionKind = (
            "masked" if self.map == "masked" and rec.masked is not None else "transcoder"
        )
        frame = rec.decompose(self.head, dest, src, kind, top=self.top)
        score = rec.score(self.head, dest, src, kind)
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        rows = [
            {
                "kind": r["kind"],
                "label": r["label"],
                **{k: None if r[k] is None else int(r[k]) for k in _INTS},
                **{k: _number(r[k]) for k in _FLOATS},
            }
            for r in records
        ]
        self.decomposition = {
            "head": self.head,
            "dest": dest,
            "src": src,
            "dest_token": self.tokens[dest],
            "src_token": self.tokens[src],
            "kind": kind,
            "score": score,
            "total": float(frame["contribution"].sum()),
            "weight": float(rec.pattern(kind)[self.head, dest, src]),
            "true_weight": float(rec.true[self.head, dest, src]),
            "rows": rows,
        }
        try:
            self.edge = self._edge(rec.layer, self.head, dest, src)
        except AttnvizError as err:  # no SAE for the layer: the decomposition still stands
            self.edge = {"message": str(err)}

    def _sae_set(self) -> SAESet:
        if self._attribution is not None and self._saes is None:
            return self._attribution.saes
        assert self._saes is not None
        return self._saes

    def _edge(self, layer: int, head: int, dest: int, src: int, top: int = 8) -> dict[str, Any]:
        """What moves along (head, dest <- src): the z-SAE features with the largest DFA there."""
        sae = self._sae_set().get(layer)
        key = (self.prompt, layer)
        if self._edge_cache is None or self._edge_cache[0] != key:
            acts = self._model.attention(
                self._model.to_tokens(self.prompt), layer, ["pattern", "v"]
            )
            assert acts.pattern is not None and acts.v is not None
            self._edge_cache = (key, acts.pattern[0].float().cpu(), acts.v[0].float().cpu())
        _, pattern, v = self._edge_cache
        ids, contribution, pre = edge_features(sae, pattern, v, dest, head, src, top=top)
        rows = [
            {
                "feature": int(i),
                "contribution": float(c),
                "pre_activation": float(p),
                "share": float(c / p) if abs(float(p)) > 1e-9 else None,
            }
            for i, c, p in zip(ids, contribution, pre, strict=True)
        ]
        return {"head": head, "dest": dest, "src": src, "layer": layer, "rows": rows,
                "linked": self._attribution is not None}  # fmt: skip

    def show_in_attribution(self, feature: int) -> FeatureAttribution:
        """Show `feature` at the explained cell's destination in the linked FeatureAttribution
        (its prompt and layer follow this widget's)."""
        fa, d = self._attribution, self.decomposition
        if fa is None:
            raise AttnvizError(
                "no FeatureAttribution is linked: make one and pass it, "
                "PairExplorer(model, prompt, layer=L, attribution=FeatureAttribution(model, "
                "prompt, layer=L)), then display both"
            )
        if d.get("dest") is None:
            raise AttnvizError("click a cell first: the feature is shown at its destination")
        layer = self._current().layer
        if fa.prompt != self.prompt or fa.layer != layer:
            fa._quietly("prompt", self.prompt)
            fa._quietly("layer", layer)
            fa.refresh()
        fa.select(int(d["dest"]), int(feature))
        if fa.error:
            raise AttnvizError(f"FeatureAttribution: {fa.error}")
        return fa

    def _library(self) -> FeatureActivations:
        layer = self._current().layer
        if layer not in self._features:
            from attnviz.dictionaries.pretrained import held_out_contexts

            tokens = self._examples_from
            if tokens is None:
                tokens = held_out_contexts(self._model, EXAMPLE_CONTEXTS)
            self._features[layer] = FeatureActivations(
                self._model, self.dictionary_for(layer), tokens
            )
        return self._features[layer]

    def _show_feature(self, side: str, index: int) -> None:
        library = self._library()
        examples = library.examples(side, int(index), k=8, window=10)
        self.feature_info = {
            "side": side,
            "index": int(index),
            "layer": library.layer,
            # where its density sits among the live features of this side
            **density_payload(library.density(side), int(index)),
            "n_tokens": int(library.tokens.numel()),
            "examples": examples_payload(examples),
        }

    # ---- the rest ------------------------------------------------------------------------------

    def extra_traits(self, rec: Reconstruction) -> dict[str, Any]:
        # A new prompt or layer: earlier selections point at tokens that may not exist.
        out: dict[str, Any] = {"decomposition": {}, "clicked": [], "edge": {}, "follow": {}}
        if rec.qk.pairs is None:  # no masked map to show or explain
            out["map"] = "transcoder"
            if self.view == "masked":
                out["view"] = "transcoder"
        if self.feature_info.get("layer") != rec.layer:
            out["feature_info"] = {}
            out["feature"] = {}
        return out

    def figure(self) -> Any:
        names = {"true": "model", "transcoder": "transcoder", "masked": "masked map"}
        panels = {names[k]: self.panels[k] for k in ("true", self.view) if k in self.panels}
        return self._pattern_figure(panels, marked=self.clicked)
