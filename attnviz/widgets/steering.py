"""SteeringLab: a steering vector added to the residual stream, a coefficient slider with the
steered and unsteered continuations side by side (same seed, target words marked), and a sweep
of coefficients drawn as effect against damage with the Pareto frontier per method (GDM progress
update #1, 2024). The analysis is :mod:`attnviz.analysis.steering`; this only sends it.

>>> SteeringLab(model, sae=load_pretrained(model.spec.name, "resid-sae-L16"))      # doctest: +SKIP
>>> SteeringLab(model, plus="Love", minus="Hate", layer=6, words="love, loving")     # doctest: +SKIP

The slider reads ||c v|| / ||resid||: the share of the residual stream's norm at the layer that
the vector adds, so a setting means the same at every layer. A sweep is a request (progress,
cancel): every method's rollouts at every coefficient in batched generations, and its damage on
held-out text; a click on a point lists that coefficient's rollouts.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import torch
import traitlets
from torch import Tensor

from attnviz.analysis.steering import (
    SteeringVector,
    actadd,
    damage,
    feature_direction,
    frontier,
    padding_features,
    project_out,
    residual_norm,
    sweep,
    word_matcher,
)
from attnviz.dictionaries.sae import SAE
from attnviz.errors import AttnvizError
from attnviz.models.adapter import ModelAdapter
from attnviz.models.generation import ACTADD_SAMPLING, generate
from attnviz.models.loading import as_adapter
from attnviz.models.locks import model_lock
from attnviz.widgets.base import Widget
from attnviz.widgets.charts import chart_figure, chart_spec
from attnviz.widgets.requests import Job, handles

__all__ = ["SteeringLab"]

SWEEP_RELATIVE = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""The sweep's coefficients as ||c v|| / ||resid||."""
DAMAGE_CONTEXTS = 8
"""Held-out contexts the damage is measured on."""
ANGER_WORDS = "anger, angry, furious, rage, mad, hate, annoyed, irritated, frustrated"


def _plain(x: Any) -> Any:
    """A table cell as JSON has it (NaN as None, numpy scalars as Python ones)."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else float(x)
    return x


def _hits(text: str, pattern: re.Pattern[str]) -> list[list[int]]:
    return [[m.start(), m.end()] for m in pattern.finditer(text)]


def _words_pattern(words: str) -> re.Pattern[str]:
    items = [w.strip() for w in words.split(",") if w.strip()]
    if not items:
        raise AttnvizError("the word list is empty: give the target words, separated by commas")
    word_matcher(items)  # the same rule the sweep counts with
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, items)) + r")(?!\w)", re.IGNORECASE)


class SteeringLab(Widget):
    """Steering with a slider and a sweep.

    Traits (synced; view state first): source ("pair" or "feature"), plus, minus, feature,
    heads (a z SAE's feature: 0 = every head, through W_O; k = its k top-loading heads), layer, positions ("front": the pair's positions, or a feature's at the prompt's; "all": every
    position, the generated ones too), prompt, words (comma separated),
    relative (the slider), seed, n_new, rollouts (per coefficient in a sweep), point ([series,
    index] of the clicked sweep point, or []); layers, has_sae, sae_site, n_heads, vector ({name, norm,
    resid_norm, coef}), generation ({prompt, relative, coef, seed, steered / unsteered: {text,
    hits}}), sweep ({chart, points: [[{method, relative, coef, p_success, p_lo, p_hi,
    loss_increase, ..., rollouts: [{text, hits}]}]], complete}), error, busy."""

    BUNDLE = "steering"

    source = traitlets.Unicode("pair").tag(sync=True)
    plus = traitlets.Unicode("Anger").tag(sync=True)
    minus = traitlets.Unicode("Calm").tag(sync=True)
    feature = traitlets.Int(0).tag(sync=True)
    heads = traitlets.Int(0).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    positions = traitlets.Unicode("front").tag(sync=True)
    prompt = traitlets.Unicode("I think you're").tag(sync=True)
    words = traitlets.Unicode(ANGER_WORDS).tag(sync=True)
    relative = traitlets.Float(1.0).tag(sync=True)
    seed = traitlets.Int(0).tag(sync=True)
    n_new = traitlets.Int(32).tag(sync=True)
    rollouts = traitlets.Int(8).tag(sync=True)
    point = traitlets.List(traitlets.Int()).tag(sync=True)
    layers = traitlets.List(traitlets.Int()).tag(sync=True)
    has_sae = traitlets.Bool(False).tag(sync=True)
    sae_site = traitlets.Unicode("").tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    vector = traitlets.Dict().tag(sync=True)
    generation = traitlets.Dict().tag(sync=True)
    sweep = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(self, model: ModelAdapter, sae: SAE | None = None, *, layer: int | None = None,
                 contexts: Tensor | None = None, **kwargs: Any) -> None:  # fmt: skip
        """sae: a resid_pre SAE (feature vectors, the SAE-reconstruction and padding-projection
        methods of a sweep) or a z SAE (features added at hook_z of every head or of their
        top-loading heads); its layer is the default. contexts: held-out token ids [n, ctx] for
        the residual norm and the damage (default: DAMAGE_CONTEXTS of debian-docs's held-out
        documents). Other keywords set the traits (plus, minus, prompt, words, relative, ...)."""
        model = as_adapter(model, "SteeringLab")
        if sae is not None and (sae.cfg.site not in ("resid_pre", "z") or len(sae.cfg.layers) != 1):
            raise TypeError(f"sae must be a one-layer resid_pre or z SAE; this one reads "
                            f"{sae.cfg.site} of layers {sae.cfg.layers}")  # fmt: skip
        self._model, self._sae, self._contexts = model, sae, contexts
        self._norms: dict[int, float] = {}
        self._steer: SteeringVector | None = None
        self._ready = False
        n = model.spec.n_layers
        default = sae.cfg.layer if sae is not None else n // 2
        super().__init__(layers=list(range(n)), has_sae=sae is not None,
                         sae_site="" if sae is None else sae.cfg.site,
                         n_heads=model.spec.n_heads,
                         layer=default if layer is None else layer, **kwargs)  # fmt: skip
        self._ready = True
        self._attempt(self._refresh, catch=(AttnvizError, ValueError))

    # ---- the vector and the live generation -----------------------------------------------

    def held_out(self) -> Tensor:
        if self._contexts is None:
            from attnviz.dictionaries.pretrained import held_out_contexts

            self._contexts = held_out_contexts(self._model, DAMAGE_CONTEXTS)
        return self._contexts

    def _resid_norm(self, layer: int) -> float:
        if layer not in self._norms:
            with model_lock(self._model):
                self._norms[layer] = residual_norm(self._model, layer, self.held_out()[:4])
        return self._norms[layer]

    def steering_vector(self) -> SteeringVector:
        """The vector the controls describe (checked: layer, feature, prompts)."""
        layer = self._model.check_layer(self.layer)
        where = None if self.positions == "all" else "front"
        if self.source == "feature":
            if self._sae is None:
                raise AttnvizError("no SAE in this widget: pass sae= (a resid_pre or z SAE) to "
                                   "steer with a feature, or use a prompt pair")  # fmt: skip
            c = self._sae.cfg
            if c.layer != layer:
                raise AttnvizError(f"the SAE reads layer {c.layer}, not {layer}: steer with its "
                                   f"features at layer {c.layer}, or pass an SAE of layer {layer} "
                                   f"(attnviz train sae --site {c.site} --layer {layer})")  # fmt: skip
            heads = (self.heads or None) if c.site == "z" else None
            try:
                v = feature_direction(self._sae, self.feature, model=self._model, heads=heads)
            except ValueError as err:
                raise AttnvizError(str(err)) from None
            return v if where is None else v.at(slice(0, self._prompt_ids().shape[1]))
        if not self.plus.strip() or not self.minus.strip():
            raise AttnvizError("a prompt pair needs text on both sides (e.g. 'Anger' and 'Calm')")
        with model_lock(self._model):
            v = actadd(self._model, self.plus, self.minus, layer)
        return v if where == "front" else v.at(None)

    def _prompt_ids(self) -> Tensor:
        return self._model.to_tokens(self.prompt)

    def _refresh(self) -> None:
        v = self.steering_vector()
        norm = self._resid_norm(v.layer)
        self._steer = v
        coef = self.relative * norm / v.norm if v.norm > 0 else 0.0
        self.vector = {"name": v.name, "norm": v.norm, "resid_norm": norm, "coef": coef,
                       "layer": v.layer}  # fmt: skip
        self.generation = self._generate(v, coef)

    def _generate(self, v: SteeringVector, coef: float) -> dict[str, Any]:
        pattern = _words_pattern(self.words)
        ids = self._prompt_ids()
        coefs = torch.tensor([coef, 0.0])
        with model_lock(self._model):
            out = generate(self._model, ids.expand(2, -1), self.n_new, v.interventions(coefs),
                           ACTADD_SAMPLING, seeds=[self.seed, self.seed])  # fmt: skip
        n = ids.shape[1]
        texts = [self._model.tokenizer.decode(row[n:].tolist()) for row in out]
        return {"prompt": self.prompt, "relative": self.relative, "coef": coef, "seed": self.seed,
                **{k: {"text": t, "hits": _hits(t, pattern)}
                   for k, t in zip(("steered", "unsteered"), texts, strict=True)}}  # fmt: skip

    # ---- the sweep --------------------------------------------------------------------------

    def methods(self) -> dict[str, SteeringVector]:
        """The sweep's methods: the vector; for a pair with an SAE of its layer also the SAE's
        reconstruction of the pair and the vector with the padding features projected out."""
        v = self.steering_vector()
        out = {"ActAdd" if self.source == "pair" else f"feature {self.feature}": v}
        sae = self._sae
        if (self.source == "pair" and sae is not None and sae.cfg.site == "resid_pre"
                and sae.cfg.layer == v.layer):  # fmt: skip
            with model_lock(self._model):
                recon = actadd(self._model, self.plus, self.minus, v.layer, sae=sae)
                pad = padding_features(self._model, sae)
            out["SAE reconstruction"] = recon if self.positions == "front" else recon.at(None)
            out["padding features out"] = project_out(
                v, sae.W_dec[pad], f"{len(pad)} padding features"
            )
        return out

    def run_sweep(
        self, job: Job | None = None, relative: tuple[float, ...] | None = None
    ) -> dict[str, Any]:
        """Sweep every method over `relative` (||c v|| / ||resid||; default SWEEP_RELATIVE);
        returns the payload."""
        relative = SWEEP_RELATIVE if relative is None else tuple(relative)
        step, check = (job.progress, job.check) if job else (lambda *a: None, lambda: None)
        pattern = _words_pattern(self.words)
        methods = self.methods()
        norm = self._resid_norm(self.layer)
        held = self.held_out()
        frames, points = [], []
        total, done = 2 * len(methods), 0
        for name, v in methods.items():
            cs = [r * norm / v.norm if v.norm > 0 else 0.0 for r in relative]
            check()
            step(done, total, f"{name}: {self.rollouts} rollouts at {len(cs)} coefficients")
            with model_lock(self._model):
                s = sweep(self._model, v, cs, self.prompt, lambda t: bool(pattern.search(t)),
                          n_rollouts=self.rollouts, n_new=self.n_new, seed=self.seed,
                          resid_norm=norm)  # fmt: skip
            done += 1
            check()
            step(done, total, f"{name}: damage on {held.shape[0]} held-out contexts")
            with model_lock(self._model):
                d = damage(self._model, v, cs, held, batch=4)
            done += 1
            table = s.table.merge(d, on="coef").assign(method=name, relative=list(relative))
            table["on_frontier"] = table.index.isin(frontier(table).index)
            frames.append(table)
            points.append([{**{k: _plain(x) for k, x in row.items()},
                            "rollouts": [{"text": t, "hits": _hits(t, pattern)} for t in texts]}
                           for row, texts in zip(table.to_dict(orient="records"), s.texts, strict=True)])  # fmt: skip
        step(total, total, "sweep done")
        self._quietly("point", [])
        self.sweep = {"chart": self._chart(frames), "points": points, "complete": True,
                      "prompt": self.prompt, "words": self.words, "rollouts": self.rollouts}  # fmt: skip
        return self.sweep

    @staticmethod
    def _chart(frames: list[pd.DataFrame]) -> dict[str, Any]:
        series = [{"name": t.method.iloc[0], "x": t.loss_increase, "y": t.p_success,
                   "labels": [f"{t.method.iloc[0]}: relative {r.relative:.2f} (coef {r.coef:.3g}): "
                              f"P(success) {r.p_success:.2f} [{r.p_lo:.2f}, {r.p_hi:.2f}], loss "
                              f"{r.loss_increase:+.3f} [{r.loss_increase_lo:+.3f}, "
                              f"{r.loss_increase_hi:+.3f}] nats/token, KL {r.kl:.3f}"
                              for r in t.itertuples()]} for t in frames]  # fmt: skip
        return chart_spec("pareto", series, title="effect against damage",
                          x_title="loss increase on held-out text (nats/token)",
                          y_title="P(rollout uses a target word)", frontier=("min", "max"))  # fmt: skip

    @handles("sweep")
    def _sweep_request(self, job: Job) -> dict[str, Any]:
        self.run_sweep(job)
        return {"complete": True}

    # ---- reacting to the front end ------------------------------------------------------------

    @traitlets.observe("source", "plus", "minus", "feature", "heads", "layer", "positions",
                       "prompt", "words", "relative", "seed", "n_new")  # fmt: skip
    def _changed(self, change: dict[str, Any]) -> None:
        if self._ready and not self._attempt(self._refresh, catch=(AttnvizError, ValueError)):
            self._quietly(change["name"], change["old"])

    def figure(self) -> Any:
        """The sweep's effect-against-damage chart (plotly), or the generation as a table."""
        if self.sweep.get("chart"):
            return chart_figure(self.sweep["chart"])
        import plotly.graph_objects as go

        g = self.generation
        return go.Figure(go.Table(header={"values": ["unsteered", f"steered (relative {self.relative})"]},
                                  cells={"values": [[g.get("unsteered", {}).get("text", "")],
                                                    [g.get("steered", {}).get("text", "")]]}))  # fmt: skip

    def __repr__(self) -> str:
        return f"SteeringLab({self.vector.get('name', 'no vector')}, relative {self.relative})"
