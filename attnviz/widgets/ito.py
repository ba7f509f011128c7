"""ITOExplorer: an SAE's encoder against inference-time optimisation (ITO) on its decoder (GDM
progress update #1, 2024). The codes are :mod:`attnviz.analysis.ito.compare`'s; this sends them.

>>> ITOExplorer(model, "z-sae-L18", "When Mary and John went to the store, John gave")  # doctest: +SKIP
>>> ITOExplorer(model, {"mine": sae, "shipped": "z-sae-L18"}, prompt, l0=8)           # doctest: +SKIP

- Pareto curves over held-out contexts: FVU against L0 per dictionary and method with a 95%
  bootstrap band over contexts, the encoder as one point (with its interval) at its own L0, the
  pursuits on a random dictionary of the same shape dashed, and a table against the encoder
  (difference and ratio) at the swept L0 nearest the encoder's (the ``pareto`` request: progress
  per (dictionary, method, L0), cancel, cached per cell); CE recovered and the absolute loss
  increase (nats/token), with their intervals, for the SAEs that can be spliced into the model
  (``ce``, asked for with a button). The swept L0 range and methods are traits the front end sets.
- The prompt's tokens, shaded by the overlap (Jaccard) of the two feature sets: click one and the
  features the encoder chooses there sit beside those ITO chooses at the slider's L0 (method
  selectable), shared ones marked.
- Click a feature: its ITO-vs-encoder activations over the held-out tokens, with ``agreement``.

Slider, method, dictionary, prompt and feature are synced traits that the kernel answers at once
(long prompts are coded in chunks of CHUNK_TOKENS); the sweeps are requests, which a worker runs.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
import traitlets
from torch import Tensor

from attnviz.analysis.ito.compare import ce_pareto, codes
from attnviz.analysis.sae_check import site_activations
from attnviz.dictionaries.sae import SAE
from attnviz.errors import AttnvizError
from attnviz.models.adapter import ModelAdapter
from attnviz.models.loading import as_adapter
from attnviz.models.locks import model_lock
from attnviz.widgets.arrays import encode_array
from attnviz.widgets.base import Widget
from attnviz.widgets.charts import chart_spec
from attnviz.widgets.ito_charts import (
    COLORS,
    ce_chart,
    fvu_chart,
    num,
    panels_figure,
    records,
    versus_encoder,
)
from attnviz.widgets.ito_dictionaries import ITODictionary, SAEsInput, resolve_dictionaries
from attnviz.widgets.ito_held import CHUNK_TOKENS, HeldOut
from attnviz.widgets.requests import Job, handles

__all__ = ["ITOExplorer"]

MAX_TOKENS = 2048
"""Longest prompt the widget codes."""
CE_BATCH = 4
"""Contexts per forward pass of the CE sweep."""
TOKEN_METHODS = ("gp", "omp", "mp", "topk")
"""Methods the per-token lists can use."""
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"


class ITOExplorer(Widget):
    """Encoder vs ITO for one or more SAEs of one model.

    Traits (synced; view state first): prompt, dictionary (the SAE the lists and scatter use),
    method (theirs: gp, omp, mp or topk), l0 (the slider), token (-1: none), feature (-1: none);
    dictionaries ([{name, description, site, layers, d_sae, splicable, note}]), l0s and methods
    (the curves'), token_methods, max_l0, tokens, codes ({dictionary, method, l0, encoder / ito:
    {ptr int32 [n + 1], features int32, acts float32, error float32 [n]}}: per-token lists, CSR,
    by activation), pareto ({rows, charts, n_tokens, complete}), ce ({rows, charts, notes,
    complete}), scatter ({feature, dictionary, method, l0, chart, stats, agreement}), error, busy.
    """

    BUNDLE = "ito"

    prompt = traitlets.Unicode("").tag(sync=True)
    dictionary = traitlets.Unicode("").tag(sync=True)
    method = traitlets.Unicode("gp").tag(sync=True)
    l0 = traitlets.Int(16).tag(sync=True)
    token = traitlets.Int(-1).tag(sync=True)
    feature = traitlets.Int(-1).tag(sync=True)
    dictionaries = traitlets.List(traitlets.Dict()).tag(sync=True)
    l0s = traitlets.List(traitlets.Int()).tag(sync=True)
    methods = traitlets.List(traitlets.Unicode()).tag(sync=True)
    token_methods = traitlets.List(traitlets.Unicode(), list(TOKEN_METHODS)).tag(sync=True)
    max_l0 = traitlets.Int(64).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    codes = traitlets.Dict().tag(sync=True)
    pareto = traitlets.Dict().tag(sync=True)
    ce = traitlets.Dict().tag(sync=True)
    scatter = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self, model: ModelAdapter, saes: SAEsInput = None, prompt: str = DEFAULT_PROMPT, *,
        l0: int = 16, l0s: Iterable[int] = (1, 2, 4, 8, 16, 32, 64),
        methods: Iterable[str] = ("topk", "mp", "gp"), contexts: Tensor | None = None,
        method: str = "gp", random_baseline: bool = True, seed: int = 0, **kwargs: Any,
    ) -> None:  # fmt: skip
        """saes: an SAE or the name of one shipped for the model, several (a list), or {name:
        SAE or shipped name}; default: the model's shipped hook_z SAEs. l0s, methods: the curves'
        target L0s and methods (of "topk", "mp", "omp", "gp"). contexts: token ids [n, ctx] of
        held-out text (default: 8 pydocs contexts after the shipped SAEs' training text).
        method: the per-token lists' method. random_baseline: MP/GP on a random dictionary."""
        model = as_adapter(model, "ITOExplorer")
        l0s, methods = sorted({int(x) for x in l0s}), list(dict.fromkeys(methods))
        if not l0s or l0s[0] < 1:
            raise ValueError(f"l0s must be whole numbers >= 1, got {l0s}")
        bad = [m for m in [*methods, method] if m not in TOKEN_METHODS]
        if bad or not methods:
            raise ValueError(f"methods {bad or methods}: choose from {', '.join(TOKEN_METHODS)}")
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        self._model, self._seed = model, int(seed)
        self._random_baseline = bool(random_baseline)
        # The kernel's thread (clicks) and the request worker (sweeps) share the caches.
        self._lock = threading.RLock()
        self._held = HeldOut(model, contexts, self._seed)
        self._ce: dict[str, pd.DataFrame] = {}
        self._prompt_x: dict[str, Tensor] = {}
        self._ids: Tensor | None = None
        self._ready = False
        super().__init__(l0s=l0s, methods=methods, **kwargs)
        self._entries, problems = resolve_dictionaries(model, saes)
        self.dictionaries = [e.info() for e in self._entries.values()]
        self.max_l0 = max(l0s[-1], int(l0))
        self.error = "\n".join(problems)
        if not self._entries:
            self._ready = True
            return
        first = next(iter(self._entries.values()))
        try:
            l0 = self._check_l0(l0, first)
        except AttnvizError as err:
            fallback = min(16, first.sae.cfg.d_sae)
            problems.append(f"{err}; showing L0 {fallback}")
            l0 = fallback
        self.dictionary, self.method, self.l0, self.prompt = first.name, method, l0, prompt
        self._ready = True
        self._attempt(self._show_prompt, keep=problems)

    # ---- the SAEs ------------------------------------------------------------------------------

    def _entry(self, name: str | None = None) -> ITODictionary:
        name = self.dictionary if name is None else name
        if name not in self._entries:
            have = ", ".join(self._entries) or "none"
            raise AttnvizError(f"no dictionary {name!r} in this widget (it has: {have})")
        return self._entries[name]

    # ---- the prompt: per-token lists -----------------------------------------------------------

    def _check_l0(self, l0: Any, e: ITODictionary) -> int:
        d = e.sae.cfg.d_sae
        if isinstance(l0, bool) or not isinstance(l0, (int, np.integer)) or not 1 <= l0 <= d:
            raise AttnvizError(f"L0 {l0!r} is out of range: choose a whole number of features "
                               f"from 1 to {d} ({e.name} has {d:,} features)")  # fmt: skip
        return int(l0)

    def _show_prompt(self) -> None:
        """Tokenise the prompt, read the site and publish the lists (token: the last one)."""
        ids = self._model.to_tokens(self.prompt)
        n = ids.shape[1]
        if n > MAX_TOKENS:
            raise AttnvizError(f"the prompt has {n:,} tokens; ITOExplorer codes at most "
                               f"{MAX_TOKENS:,}: shorten it")  # fmt: skip
        with self._lock:
            self._ids, self._prompt_x = ids.cpu(), {}
        payload = self._token_codes()
        with self.hold_sync():
            self.tokens = self._model.to_str_tokens(ids[0])
            self.codes = payload
            self._quietly("token", n - 1)

    def _prompt_inputs(self, e: ITODictionary) -> Tensor:
        with self._lock:
            ids, x = self._ids, self._prompt_x.get(e.name)
        if ids is None:
            raise AttnvizError("no prompt yet: give the widget a prompt that works")
        if x is None:
            with model_lock(self._model):
                x = site_activations(self._model, e.sae, ids)[0].detach()
            with self._lock:
                self._prompt_x[e.name] = x
        return x

    def _token_codes(self) -> dict[str, Any]:
        """The codes trait for the prompt at the current dictionary, method and L0."""
        e = self._entry()
        l0 = self._check_l0(self.l0, e)
        x, method, sae = self._prompt_inputs(e), self.method, e.sae
        G = e.gram_of(e.sae) if method != "topk" else None
        parts: dict[str, list[tuple[Tensor, Tensor, Tensor, Tensor]]] = {"encoder": [], "ito": []}
        for start in range(0, x.shape[0], CHUNK_TOKENS):  # bounded memory for long prompts
            xc = x[start : start + CHUNK_TOKENS].to(sae.W_dec)
            f_enc = codes(sae, xc, "encoder")
            f_ito = codes(sae, xc, method, l0, G=G)
            for part, f in (("encoder", f_enc), ("ito", f_ito)):
                with torch.no_grad():
                    err = (xc - sae.decode(f.to(sae.W_dec))).pow(2).sum(-1)
                    err = err / xc.pow(2).sum(-1).clamp_min(1e-12)
                parts[part].append((*_sparse_rows(f), err.float().cpu()))
        out: dict[str, Any] = {"dictionary": e.name, "method": method, "l0": l0,
                               "n_tokens": int(x.shape[0])}  # fmt: skip
        for part, chunks in parts.items():
            counts = torch.cat([c[0] for c in chunks])
            ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
            out[part] = {
                "ptr": encode_array(ptr, "int32"),
                "features": encode_array(torch.cat([c[1] for c in chunks]), "int32"),
                "acts": encode_array(torch.cat([c[2] for c in chunks]), "float32"),
                "error": encode_array(torch.cat([c[3] for c in chunks]), "float32"),
                "l0": float(counts.float().mean()),
            }
        return out

    def token_features(self, token: int | None = None) -> dict[str, list[tuple[int, float]]]:
        """The lists shown for `token` (default: the selected one): {"encoder": [(feature,
        activation)], "ito": [...]}, each by activation (from the codes trait)."""
        from attnviz.widgets.arrays import decode_array

        token = self.token if token is None else int(token)
        out: dict[str, list[tuple[int, float]]] = {}
        for part in ("encoder", "ito"):
            p = self.codes[part]
            ptr = decode_array(p["ptr"])
            lo, hi = int(ptr[token]), int(ptr[token + 1])
            ids, acts = decode_array(p["features"])[lo:hi], decode_array(p["acts"])[lo:hi]
            out[part] = [(int(i), float(a)) for i, a in zip(ids, acts, strict=True)]
        return out

    # ---- held-out tokens: a feature's scatter --------------------------------------------------

    def held_out(self) -> Tensor:
        """The held-out contexts [n, ctx] the curves and scatters read."""
        return self._held.contexts()

    def agreement_at(self, name: str | None = None, method: str | None = None,
                     l0: int | None = None) -> dict[str, Any]:  # fmt: skip
        """compare.agreement of a dictionary (default: the shown one) over the held-out tokens at
        `method` and `l0` (default: the slider's); cached."""
        e = self._entry(name)
        method = self.method if method is None else method
        l0 = self._check_l0(self.l0 if l0 is None else l0, e)
        return self._held.agreement(e.name, e.sae, method, l0)

    def _scatter(self, feature: int) -> dict[str, Any]:
        e = self._entry()
        d = e.sae.cfg.d_sae
        if not 0 <= feature < d:
            raise AttnvizError(f"feature {feature} is out of range: {e.name} has features "
                               f"0-{d - 1}")  # fmt: skip
        method, l0 = self.method, self._check_l0(self.l0, e)
        enc = self._held.inputs(e.name, e.sae).encoder
        G = e.gram_of(e.sae) if method != "topk" else None
        ito = self._held.codes(e.name, e.sae, method, l0, G)
        a, b = enc[:, feature].float(), ito[:, feature].float()
        union = (a != 0) | (b != 0)
        labels = self._held.token_labels()
        where = union.nonzero().flatten().tolist()
        u, v = a[union], b[union]
        top = float(max(u.max(), v.max())) if where else 1.0
        what = "top-k of the encoder" if method == "topk" else method
        chart = chart_spec("line", [
            {"name": "held-out tokens", "x": u, "y": v, "mode": "markers",
             "color": COLORS.get(method, "#0072B2"), "labels": [labels[i] for i in where]},
            {"name": "ITO = encoder", "x": [0.0, top], "y": [0.0, top], "mode": "lines",
             "color": "#999999", "dash": True},
        ], title=f"feature {feature}: {what} at L0 {l0} against the encoder",
           x_title="encoder activation", y_title=f"{what} activation")  # fmt: skip
        corr = float(torch.corrcoef(torch.stack([u, v]))[0, 1]) if len(where) >= 3 else math.nan
        stats = {"n_tokens": int(a.numel()), "encoder": int((a != 0).sum()),
                 "ito": int((b != 0).sum()), "both": int(((a != 0) & (b != 0)).sum()),
                 "corr": num(corr)}  # fmt: skip
        agree = {k: num(v) if isinstance(v, float) else v
                 for k, v in self.agreement_at(e.name, method, l0).items()}  # fmt: skip
        return {"feature": int(feature), "dictionary": e.name, "method": method, "l0": l0,
                "chart": chart, "stats": stats, "agreement": agree}  # fmt: skip

    def show_feature(self, feature: int) -> dict[str, Any]:
        """Select `feature` and show its scatter; returns the scatter payload."""
        scatter = self._scatter(int(feature))
        with self.hold_sync():
            self._quietly("feature", int(feature))
            self.scatter = scatter
            self.error = ""
        return scatter

    # ---- the curves: FVU (a request on first display) and CE recovered (a button) --------------

    def _fvu_cells(self) -> list[tuple[ITODictionary, str, SAE, str, int | None]]:
        """(entry, dictionary name, SAE, method, target L0) of every point of the FVU curves."""
        cells: list[tuple[ITODictionary, str, SAE, str, int | None]] = []
        for e in self._entries.values():
            cells.append((e, e.name, e.sae, "encoder", None))
            cells += [(e, e.name, e.sae, m, k) for m in self.methods for k in self.l0s]
            if self._random_baseline:
                rnd = e.random(self._seed)
                cells += [(e, f"{e.name}:random", rnd, m, k)
                          for m in self.methods if m != "topk" for k in self.l0s]  # fmt: skip
        return cells

    def run_pareto(self, job: Job | None = None) -> dict[str, Any]:
        """Compute (what is not cached of) the FVU curves and show them; returns the payload.
        Progress: one step per (dictionary, method, L0)."""
        step, check = _steps(job)
        cells = self._fvu_cells()
        done_names: set[str] = set()
        for i, (e, name, sae, method, l0) in enumerate(cells):
            shown = name.replace(":random", " (random)")
            step(i, len(cells), f"{shown}: {method}" + ("" if l0 is None else f" at L0 {l0}"))
            check()
            G = None if method in ("encoder", "topk") else e.gram_of(sae)
            self._held.fvu_point(name, sae, method, l0, G)
            if i + 1 == len(cells) or cells[i + 1][0] is not e:  # a dictionary's curves are done
                done_names.add(e.name)
                self.pareto = self._pareto_payload(cells, done_names, complete=False)
        step(len(cells), len(cells), "FVU curves done")
        self.pareto = self._pareto_payload(cells, done_names, complete=True)
        return self.pareto

    def _pareto_payload(self, cells: list[Any], names: set[str], complete: bool) -> dict[str, Any]:
        rows = [self._held.fvu_point(name, sae, m, k) for e, name, sae, m, k in cells
                if e.name in names and self._held.has_fvu(name, m, k)]  # fmt: skip
        rows = records(rows)
        order = [n for n in self._entries if n in names]
        e = next(iter(self._entries.values()))  # all read the same held-out tokens
        return {
            "rows": rows, "complete": complete,
            "charts": [{"dictionary": n, "spec": fvu_chart(n, rows)} for n in order],
            "versus": [v for n in order for v in versus_encoder(n, rows)],
            "n_tokens": int(self._held.inputs(e.name, e.sae).x.shape[0]) if order else 0,
        }  # fmt: skip

    @handles("pareto")
    def _pareto_request(self, job: Job) -> dict[str, Any]:
        self.run_pareto(job)
        return {"complete": True}

    def run_ce(self, job: Job | None = None) -> dict[str, Any]:
        """Splice each method's reconstruction into the model on the held-out contexts (batches
        of CE_BATCH) and show CE recovered against L0 per dictionary that can be spliced
        (compare.ce_pareto); returns the payload. Progress: one step per forward pass."""
        step, check = _steps(job)
        contexts = self.held_out()
        batches = list(contexts.split(CE_BATCH))
        todo = [e for e in self._entries.values() if e.splicable and e.name not in self._ce]
        labels = ["clean", "zero ablation", "encoder"]
        labels += [f"{m} at L0 {k}" for m in self.methods for k in self.l0s]
        per_batch = len(labels)
        total = len(todo) * len(batches) * per_batch
        for j, e in enumerate(todo):

            def one(i: int, e: ITODictionary = e, j: int = j) -> None:
                check()
                step(j * len(batches) * per_batch + i, total,
                     f"{e.name}: {labels[i % per_batch]}")  # fmt: skip

            df = ce_pareto(_Counting(self._model, one), e.sae, batches, self.l0s, self.methods,
                           seed=self._seed)  # fmt: skip
            self._ce[e.name] = df.assign(dictionary=e.name)
        step(total, total, "CE curves done")
        rows = {n: records(df) for n, df in self._ce.items()}
        self.ce = {
            "rows": [r for n in self._entries if n in rows for r in rows[n]],
            "charts": [{"dictionary": n, "spec": ce_chart(n, rows[n]),
                        "warnings": sorted({r["warning"] for r in rows[n] if r["warning"]})}
                       for n in self._entries if n in rows],
            "notes": [f"{e.name}: {e.info()['note']}" for e in self._entries.values()
                      if not e.splicable],
            "complete": True, "n_contexts": int(contexts.shape[0]),
        }  # fmt: skip
        return self.ce

    @handles("ce")
    def _ce_request(self, job: Job) -> dict[str, Any]:
        self.run_ce(job)
        return {"complete": True}

    # ---- reacting to the front-end --------------------------------------------------------------

    @traitlets.observe("prompt")
    def _prompt_changed(self, change: dict[str, Any]) -> None:
        if self._ready and not self._attempt(self._show_prompt):
            self._quietly("prompt", change["old"])

    @traitlets.observe("dictionary", "method", "l0")
    def _view_changed(self, change: dict[str, Any]) -> None:
        if not self._ready:
            return
        name = change["name"]

        def work() -> None:
            if name == "method" and change["new"] not in TOKEN_METHODS:
                raise AttnvizError(f"method {change['new']!r}: choose one of "
                                   f"{', '.join(TOKEN_METHODS)}")  # fmt: skip
            self._entry()
            self.codes = self._token_codes()
            if name == "dictionary":  # a feature id means another feature in another SAE
                self._quietly("feature", -1)
                self.scatter = {}
            elif self.feature >= 0:
                self.scatter = self._scatter(self.feature)

        if not self._attempt(work):
            self._quietly(name, change["old"])

    @traitlets.observe("token")
    def _token_changed(self, change: dict[str, Any]) -> None:
        n = len(self.tokens)
        if self._ready and not -1 <= self.token < n:
            self.error = f"token {self.token} is out of range: this prompt has tokens 0-{n - 1}"
            self._quietly("token", change["old"])

    @traitlets.observe("feature")
    def _feature_changed(self, change: dict[str, Any]) -> None:
        if not self._ready:
            return
        if self.feature < 0:
            self.scatter = {}
        elif not self._attempt(lambda: setattr(self, "scatter", self._scatter(self.feature))):
            self._quietly("feature", change["old"])

    # ---- the rest -------------------------------------------------------------------------------

    def figure(self) -> Any:
        """The FVU curves (one panel per dictionary), the CE curves and the scatter shown, as one
        plotly figure (for to_png)."""
        panels = [c["spec"] for c in [*self.pareto.get("charts", []), *self.ce.get("charts", [])]]
        return panels_figure([*panels, *([self.scatter["chart"]] if self.scatter else [])],
                             empty="ITOExplorer: nothing computed yet")  # fmt: skip

    def __repr__(self) -> str:
        names = ", ".join(self._entries) or "no usable SAE"
        return f"ITOExplorer({self._model.spec.name}: {names}; {self.method} at L0 {self.l0})"


def _steps(job: Job | None) -> tuple[Callable[..., None], Callable[[], None]]:
    """job.progress and job.check, or no-ops without a job (called from Python)."""
    return (job.progress, job.check) if job else (lambda *a: None, lambda: None)


class _Counting:
    """The model as ce_pareto sees it: each loss() takes the model's lock and is one step."""

    def __init__(self, model: ModelAdapter, step: Callable[[int], None]) -> None:
        self._model, self._step, self._calls = model, step, 0

    def loss(self, *args: Any, **kwargs: Any) -> Tensor:
        self._step(self._calls)
        with model_lock(self._model):
            out = self._model.loss(*args, **kwargs)
        self._calls += 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _sparse_rows(f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Non-zero counts [tokens], feature ids and values of a dense code, row by row, each row
    largest first."""
    f = f.detach().float().cpu()
    counts = (f != 0).sum(-1)
    k = int(counts.max()) if f.numel() else 0
    idx = f.abs().topk(k, dim=-1).indices  # sorted: a row's zeros come after its non-zeros
    got = f.gather(-1, idx)
    keep = got != 0
    return counts, idx[keep], got[keep]
