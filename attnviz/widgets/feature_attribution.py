"""FeatureAttribution: which heads and source tokens make an attention-output SAE feature fire.

>>> FeatureAttribution(model, "When Mary and John went to the store, John gave", layer=5)  # doctest: +SKIP

The prompt as tokens. Click a destination token: the hook_z SAE features active there, ranked by
activation, each with its decoder's share per head. Click a feature: its direct feature
attribution (Kissane et al. 2024) as a heads x source-positions heatmap whose cells and bias
remainder add up to the feature's pre-activation, the prompt's source tokens shaded by their
total contribution, and the feature's max-activating held-out contexts and firing density.
"""

from __future__ import annotations

from typing import Any

import torch
import traitlets
from torch import Tensor

from attnviz.analysis.dfa import feature_attribution
from attnviz.analysis.sae_examples import SAEFeatureActivations
from attnviz.analysis.sae_report import head_attribution
from attnviz.dictionaries.sae import SAE
from attnviz.errors import AttnvizError
from attnviz.models.adapter import ModelAdapter
from attnviz.widgets.arrays import encode_array
from attnviz.widgets.base import PromptWidget
from attnviz.widgets.feature_panel import density_payload, examples_payload
from attnviz.widgets.saes import SAEInput, SAESet, describe_sae

__all__ = ["FeatureAttribution"]

EXAMPLE_CONTEXTS = 32
"""Held-out pydocs contexts searched for a feature's max-activating examples."""


class FeatureAttribution(PromptWidget):
    """Features at a clicked token and the DFA of a clicked feature.

    Traits (synced, besides PromptWidget's): dictionary (one line on the SAE), dest (the
    destination token, -1: none), feature (-1: none), top (features listed), features ({dest,
    token, n_active, rows: [{feature, activation, pre_activation, heads}]}), dfa ({feature,
    dest, cells: float32 wire array [heads, dest + 1], remainder, pre_activation, activation,
    by_head}) and feature_info (its held-out examples and density)."""

    BUNDLE = "feature_attribution"

    dictionary = traitlets.Unicode("").tag(sync=True)
    dest = traitlets.Int(-1).tag(sync=True)
    feature = traitlets.Int(-1).tag(sync=True)
    top = traitlets.Int(20).tag(sync=True)
    features = traitlets.Dict().tag(sync=True)
    dfa = traitlets.Dict().tag(sync=True)
    feature_info = traitlets.Dict().tag(sync=True)

    def __init__(
        self, model: ModelAdapter, prompt: str, layer: int | None = None, *, sae: SAEInput = None,
        dest: int | None = None, feature: int | None = None, examples_from: Tensor | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        """sae: one z SAE, several, or {layer: SAE} (default: the ones shipped for the model).
        dest, feature: a token and a feature to show at once. examples_from: token ids
        [contexts, n] for max-activating examples (default: 32 held-out pydocs contexts)."""
        self._saes = SAESet(model, sae)
        self._examples_from = examples_from
        self._libraries: dict[int, SAEFeatureActivations] = {}
        self._shares: dict[int, Tensor] = {}
        self._acts: dict[str, Tensor] = {}
        self._sae: SAE | None = None
        super().__init__(model, prompt, layer, **kwargs)
        if dest is not None:
            self.select(dest, feature)

    # ---- what the base class asks for ---------------------------------------------------------

    def available_layers(self) -> list[int]:
        return self._saes.layers

    def sae_for(self, layer: int) -> SAE:
        """The layer's SAE, checked on the model (errors name the fix)."""
        return self._saes.get(layer)

    def compute(self, tokens: Tensor, layer: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        sae = self.sae_for(layer)
        acts = self._model.attention(tokens, layer, ["pattern", "v", "z"])
        keep = torch.float32 if tokens.shape[1] <= self._max_size else torch.float16
        # Long prompts keep the pattern at half precision (9 x 2048 x 2048 is 150 MB in float32);
        # z stays float32 so the pre-activations shown are the SAE's own.
        assert acts.pattern is not None and acts.v is not None and acts.z is not None
        self._acts = {
            "pattern": acts.pattern[0].detach().to("cpu", keep),
            "v": acts.v[0].detach().float().cpu(),
            "z": acts.z[0].detach().float().cpu(),
        }
        self._sae = sae
        clear = {"dest": -1, "feature": -1, "features": {}, "dfa": {}}
        if self.feature_info.get("layer") != layer:
            clear["feature_info"] = {}
        return {}, {"dictionary": describe_sae(sae), **clear}

    def publish(self, encoded: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {}  # no pattern panels: the front-end draws tokens and the DFA

    # ---- reacting to the front-end ------------------------------------------------------------

    @traitlets.observe("dest", "top")
    def _dest_changed(self, change: dict[str, Any]) -> None:
        if self._ready and self.dest >= 0:
            self._guard(lambda: self._show_dest(self.dest))

    @traitlets.observe("feature")
    def _feature_changed(self, change: dict[str, Any]) -> None:
        if self._ready and self.feature >= 0 and self.dest >= 0:
            self._guard(lambda: self._show_feature(self.feature))

    def _guard(self, work: Any) -> None:
        """Run a click's work with the widget busy; bad input shows in `error`."""
        self.busy = True
        try:
            work()
            self.error = ""
        except (AttnvizError, ValueError) as err:
            self.error = str(err) if isinstance(err, AttnvizError) else f"attnviz: {err}"
        finally:
            self.busy = False

    # ---- the work, callable from Python too ---------------------------------------------------

    def select(self, dest: int, feature: int | None = None) -> dict[str, Any]:
        """Show the features at token `dest` (and `feature`'s DFA there); returns the DFA, or
        the features when no feature is given."""
        self._show_dest(dest, feature)
        return self.dfa if feature is not None else self.features

    def _current(self) -> SAE:
        if self._sae is None or not self._acts:
            raise AttnvizError("nothing to attribute yet: give the widget a prompt that works")
        return self._sae

    def _check_dest(self, dest: int) -> int:
        n = len(self.tokens)
        if not 0 <= dest < n:
            raise ValueError(f"token {dest} is out of range: this prompt has tokens 0-{n - 1}")
        return int(dest)

    def _pre(self, dest: int) -> Tensor:
        sae = self._current()
        z = self._acts["z"][dest].to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
        with torch.no_grad():
            return sae.pre_activation(z).float().cpu()

    def _show_dest(self, dest: int, feature: int | None = None) -> None:
        sae, dest = self._current(), self._check_dest(dest)
        layer = sae.cfg.layer
        if layer not in self._shares:
            self._shares[layer] = head_attribution(sae).cpu()
        pre = self._pre(dest)
        with torch.no_grad():
            f = sae.activation(pre.to(sae.W_enc.device)).float().cpu()
        active = f.nonzero().flatten()
        ranked = active[f[active].argsort(descending=True, stable=True)][: max(1, self.top)]
        rows = [
            {
                "feature": int(i),
                "activation": float(f[i]),
                "pre_activation": float(pre[i]),
                "heads": [round(float(s), 4) for s in self._shares[layer][i]],
            }
            for i in ranked
        ]
        features = {"dest": dest, "token": self.tokens[dest], "n_active": int(active.numel()),
                    "layer": layer, "rows": rows}  # fmt: skip
        with self.hold_sync():
            self._quietly("dest", dest)
            self.features = features
            if feature is not None:
                self._quietly("feature", int(feature))
            if self.feature >= 0:
                self._show_feature(self.feature)
            else:
                self.dfa = {}

    def _show_feature(self, feature: int) -> None:
        sae, dest = self._current(), self._check_dest(self.dest)
        if not 0 <= feature < sae.cfg.d_sae:
            raise ValueError(
                f"feature {feature} is out of range: this SAE has features 0-{sae.cfg.d_sae - 1}"
            )
        pattern, v = self._acts["pattern"].float(), self._acts["v"]
        fa = feature_attribution(sae, pattern, v, dest, [feature])
        pre = self._pre(dest)  # the SAE's own pre-activation, not the cells' sum
        with torch.no_grad():
            act = float(sae.activation(pre.to(sae.W_enc.device)).cpu()[feature])
        cells = fa.cells[0, :, : dest + 1].cpu()
        self.dfa = {
            "feature": int(feature),
            "dest": dest,
            "layer": sae.cfg.layer,
            "cells": encode_array(cells, "float32"),
            "remainder": float(fa.remainder[0]),
            "pre_activation": float(pre[feature]),
            "activation": act,
            "by_head": [float(x) for x in fa.by_head[0]],
        }
        if self.feature_info.get("feature") != feature or self.feature_info.get("layer") != (
            sae.cfg.layer
        ):
            self.feature_info = self._feature_info(sae, feature)

    def _feature_info(self, sae: SAE, feature: int) -> dict[str, Any]:
        layer = sae.cfg.layer
        if layer not in self._libraries:
            tokens = self._examples_from
            if tokens is None:
                from attnviz.dictionaries.pretrained import held_out_contexts

                tokens = held_out_contexts(self._model, EXAMPLE_CONTEXTS)
            self._libraries[layer] = SAEFeatureActivations(self._model, sae, tokens)
        library = self._libraries[layer]
        return {
            "feature": int(feature),
            "layer": layer,
            "n_tokens": library.n_tokens,
            "examples": examples_payload(library.examples(feature, k=8, window=10)),
            **density_payload(library.density(), feature),
        }

    # ---- the rest -----------------------------------------------------------------------------

    def figure(self) -> Any:
        """The DFA heatmap (heads x sources) of the feature shown, or the features at the token."""
        import plotly.graph_objects as go

        from attnviz.widgets.arrays import decode_array
        from attnviz.widgets.figures import DIVERGING, tick_labels

        name = f"{self._model.spec.name} layer {self.layer}"
        if not self.dfa:
            rows = self.features.get("rows", [])
            fig = go.Figure(go.Bar(x=[f"F{r['feature']}" for r in rows],
                                   y=[r["activation"] for r in rows]))  # fmt: skip
            return fig.update_layout(title=f"{name}: features at token {self.dest}")
        cells = decode_array(self.dfa["cells"])
        bound = float(abs(cells).max()) or 1.0
        x, text = tick_labels(self.tokens, cells.shape[1])
        heatmap = go.Heatmap(
            z=cells,
            colorscale=DIVERGING,
            zmin=-bound,
            zmax=bound,
            colorbar={"title": "contribution"},
        )
        fig = go.Figure(heatmap)
        d = self.dfa
        return fig.update_layout(
            title=f"{name}: DFA of feature {d['feature']} at token {d['dest']} "
            f"(pre-activation {d['pre_activation']:.3f}, remainder {d['remainder']:.3f})",
            xaxis={"tickvals": x, "ticktext": text, "title": "source"},
            yaxis={"title": "head", "autorange": "reversed", "dtick": 1},
        )
