"""FeatureAttribution: which heads and source tokens make an attention-output SAE feature fire.

>>> FeatureAttribution(model, "When Mary and John went to the store, John gave", layer=5)  # doctest: +SKIP

The prompt as tokens. Click a destination token: the hook_z SAE features active there, ranked by
activation, each with its decoder's share per head. Click a feature: its direct feature
attribution (Kissane et al. 2024) as a heads x source-positions heatmap whose cells and bias
remainder add up to the feature's pre-activation, the prompt's source tokens shaded by their
total contribution, and the feature's max-activating held-out contexts and firing density.

Clicks are answered at once from activations the kernel keeps. The examples need the held-out
contexts run through the model once per layer (tens of seconds on a CPU), so the browser asks for
them as a request (``examples``: progress bar, cancel); ``select`` does it all synchronously.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import traitlets
from torch import Tensor

from attnviz.analysis.dfa import feature_attribution
from attnviz.analysis.sae_examples import SAEFeatureActivations
from attnviz.analysis.sae_report import head_attribution
from attnviz.dictionaries.sae import SAE
from attnviz.errors import AttnvizError
from attnviz.models.adapter import ModelAdapter
from attnviz.models.loading import as_adapter
from attnviz.models.locks import model_lock
from attnviz.widgets.arrays import encode_array
from attnviz.widgets.base import PromptWidget
from attnviz.widgets.feature_panel import density_payload, examples_payload
from attnviz.widgets.requests import Job, handles
from attnviz.widgets.saes import SAEInput, SAESet, describe_sae

__all__ = ["FeatureAttribution"]

EXAMPLE_CONTEXTS = 32
"""Held-out contexts (documents no shipped dictionary saw) searched for max-activating examples."""
EXAMPLE_BATCH = 4
"""Contexts per forward pass of the example search (one progress step each)."""


class _Reporting:
    """The model as the example search sees it: each forward pass takes the model's lock and is
    one progress step of `job`, which may be cancelled between them."""

    def __init__(self, model: ModelAdapter, job: Job | None, total: int) -> None:
        self._model, self._job, self._total, self._done = model, job, total, 0

    def attention(self, *args: Any, **kwargs: Any) -> Any:
        if self._job is not None:
            self._job.check()
        with model_lock(self._model):
            out = self._model.attention(*args, **kwargs)
        self._done += 1
        if self._job is not None:
            self._job.progress(self._done, self._total, "held-out contexts through the model")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class FeatureAttribution(PromptWidget):
    """Features at a clicked token and the DFA of a clicked feature.

    Traits (synced, besides PromptWidget's): dictionary (one line on the SAE), dest (the
    destination token, -1: none), feature (-1: none), top (features listed), features ({dest,
    token, n_active, layer, rows: [{feature, activation, pre_activation, heads}]}), dfa
    ({feature, dest, layer, cells: float32 wire array [heads, dest + 1], remainder,
    pre_activation, activation, by_head}) and feature_info (its held-out examples and density;
    {} until found). A new layer keeps the token and lists that layer's features there; a new
    prompt clears the selection."""

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
        [contexts, n] for max-activating examples (default: 32 held-out contexts, held_out_contexts)."""
        model = as_adapter(model, "FeatureAttribution")
        self._saes = SAESet(model, sae)
        self._examples_from = examples_from
        self._libraries: dict[int, SAEFeatureActivations] = {}
        self._shares: dict[int, Tensor] = {}
        self._acts: dict[str, Tensor] = {}
        self._ids: Tensor | None = None  # the token ids the activations are of
        self._sae: SAE | None = None
        super().__init__(model, prompt, layer, **kwargs)
        if dest is not None:
            self.select(dest, feature)

    @property
    def saes(self) -> SAESet:
        """The widget's SAEs by layer (a linked PairExplorer reads the same ones)."""
        return self._saes

    # ---- what the base class asks for ---------------------------------------------------------

    def available_layers(self) -> list[int]:
        return self._saes.layers

    def sae_for(self, layer: int) -> SAE:
        """The layer's SAE, checked on the model (errors name the fix)."""
        with model_lock(self._model):
            return self._saes.get(layer)

    def compute(self, tokens: Tensor, layer: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        sae = self.sae_for(layer)
        with model_lock(self._model):
            acts = self._model.attention(tokens, layer, ["pattern", "v", "z"])
        keep = torch.float32 if tokens.shape[1] <= self._max_size else torch.float16
        # Long prompts keep the pattern at half precision (9 x 2048 x 2048 is 150 MB in float32);
        # z stays float32 so the pre-activations shown are the SAE's own.
        assert acts.pattern is not None and acts.v is not None and acts.z is not None
        same_prompt = self._ids is not None and torch.equal(self._ids, tokens.cpu())
        same_sae = same_prompt and self._sae is sae
        self._acts = {
            "pattern": acts.pattern[0].detach().to("cpu", keep),
            "v": acts.v[0].detach().float().cpu(),
            "z": acts.z[0].detach().float().cpu(),
        }
        self._ids, self._sae = tokens.detach().cpu(), sae
        # The same tokens at another layer: the clicked token stays and shows this layer's
        # features; a feature id means another feature in another SAE, so it goes.
        dest = self.dest if same_prompt and 0 <= self.dest < tokens.shape[1] else -1
        feature = self.feature if same_sae and dest >= 0 else -1
        updates: dict[str, Any] = {"dictionary": describe_sae(sae), "dest": dest,
                                   "feature": feature, "features": {}, "dfa": {}}  # fmt: skip
        if dest >= 0:
            updates["features"] = self._features_at(dest)
        if feature >= 0:
            updates["dfa"] = self._dfa_at(dest, feature)
        if self.feature_info.get("layer") != layer:
            updates["feature_info"] = {}
        return {}, updates

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

    @handles("examples")
    def _examples_request(self, job: Job, feature: int, layer: int) -> dict[str, Any]:
        """The browser's ask for a feature's held-out examples and density: shown in
        feature_info if the feature is still the one shown; answers with which it found."""
        info = self.feature_examples(int(feature), int(layer), job=job)
        if self.feature == info["feature"] and self.dfa.get("layer") == info["layer"]:
            self.feature_info = info
        return {"feature": info["feature"], "layer": info["layer"]}

    # ---- the work, callable from Python too ---------------------------------------------------

    def select(self, dest: int, feature: int | None = None) -> dict[str, Any]:
        """Show the features at token `dest` and, given `feature`, its DFA there and its held-out
        examples (found now if need be); returns the DFA, or the features when no feature is
        given."""
        self._show_dest(dest, feature)
        if feature is None:
            return self.features
        layer = self._current().cfg.layer
        if (self.feature_info.get("feature"), self.feature_info.get("layer")) != (feature, layer):
            self.feature_info = self.feature_examples(int(feature), layer)
        return self.dfa

    def feature_examples(
        self, feature: int, layer: int | None = None, job: Job | None = None
    ) -> dict[str, Any]:
        """`feature`'s max-activating held-out contexts and firing density (the feature_info
        payload) for `layer`'s SAE (default: the layer shown). The first call per layer runs the
        held-out contexts through the model (with `job`: its progress, stopped on a cancel)."""
        layer = self.layer if layer is None else int(layer)
        sae = self.sae_for(layer)
        if not 0 <= feature < sae.cfg.d_sae:
            raise ValueError(
                f"feature {feature} is out of range: this SAE has features 0-{sae.cfg.d_sae - 1}"
            )
        library = self._library(sae, job)
        return {
            "feature": int(feature),
            "layer": layer,
            "n_tokens": library.n_tokens,
            "examples": examples_payload(library.examples(feature, k=8, window=10)),
            **density_payload(library.density(), feature),
        }

    def _library(self, sae: SAE, job: Job | None = None) -> SAEFeatureActivations:
        layer = sae.cfg.layer
        library = self._libraries.get(layer)
        if library is not None and library.sae is sae:
            return library
        tokens = self._examples_from
        if tokens is None:
            from attnviz.dictionaries.pretrained import held_out_contexts

            tokens = self._examples_from = held_out_contexts(self._model, EXAMPLE_CONTEXTS)
        passes = math.ceil(tokens.shape[0] / EXAMPLE_BATCH) * len(sae.cfg.layers)
        reader = cast(ModelAdapter, _Reporting(self._model, job, passes))
        library = SAEFeatureActivations(reader, sae, tokens, batch_size=EXAMPLE_BATCH)
        library.adapter = self._model  # later look-ups (token strings) need no reporting
        self._libraries[layer] = library
        return library

    def _current(self) -> SAE:
        if self._sae is None or not self._acts:
            raise AttnvizError("nothing to attribute yet: give the widget a prompt that works")
        return self._sae

    def _check_dest(self, dest: int) -> int:
        n = len(self._acts["z"]) if self._acts else len(self.tokens)
        if not 0 <= dest < n:
            raise ValueError(f"token {dest} is out of range: this prompt has tokens 0-{n - 1}")
        return int(dest)

    def _pre(self, dest: int) -> Tensor:
        sae = self._current()
        z = self._acts["z"][dest].to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
        with torch.no_grad():
            return sae.pre_activation(z).float().cpu()

    def _features_at(self, dest: int) -> dict[str, Any]:
        """The features trait: the SAE features active at token `dest`, by activation."""
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
        assert self._ids is not None
        token = self._model.to_str_tokens(self._ids[0, dest : dest + 1])[0]
        return {"dest": dest, "token": token, "n_active": int(active.numel()), "layer": layer,
                "rows": rows}  # fmt: skip

    def _dfa_at(self, dest: int, feature: int) -> dict[str, Any]:
        """The dfa trait: `feature`'s direct attribution at token `dest`."""
        sae, dest = self._current(), self._check_dest(dest)
        if not 0 <= feature < sae.cfg.d_sae:
            raise ValueError(
                f"feature {feature} is out of range: this SAE has features 0-{sae.cfg.d_sae - 1}"
            )
        # Only the destination's row of the pattern counts (a 2048-token pattern is 150 MB).
        row = self._acts["pattern"][:, dest : dest + 1].float()
        fa = feature_attribution(sae, row, self._acts["v"], 0, [feature])
        pre = self._pre(dest)  # the SAE's own pre-activation, not the cells' sum
        with torch.no_grad():
            act = float(sae.activation(pre.to(sae.W_enc.device)).cpu()[feature])
        cells = fa.cells[0, :, : dest + 1].cpu()
        return {
            "feature": int(feature),
            "dest": dest,
            "layer": sae.cfg.layer,
            "cells": encode_array(cells, "float32"),
            "remainder": float(fa.remainder[0]),
            "pre_activation": float(pre[feature]),
            "activation": act,
            "by_head": [float(x) for x in fa.by_head[0]],
        }

    def _show_dest(self, dest: int, feature: int | None = None) -> None:
        features = self._features_at(dest)
        with self.hold_sync():
            self._quietly("dest", features["dest"])
            self.features = features
            if feature is not None:
                self._quietly("feature", int(feature))
            if self.feature >= 0:
                self._show_feature(self.feature)
            else:
                self.dfa = {}

    def _show_feature(self, feature: int) -> None:
        """The DFA at once; the examples too if this layer's are at hand, else feature_info is
        cleared and the front-end asks for them (the ``examples`` request)."""
        dfa = self._dfa_at(self.dest, feature)
        layer = dfa["layer"]
        info = self.feature_info
        if (info.get("feature"), info.get("layer")) != (feature, layer):
            library = self._libraries.get(layer)
            cached = library is not None and library.sae is self._sae
            info = self.feature_examples(feature, layer) if cached else {}
        with self.hold_sync():  # one message: the front-end asks only when it must
            self.dfa = dfa
            self.feature_info = info

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
