"""What attnviz widgets share. ``Widget``: the front-end bundle, requests from the browser
(:mod:`attnviz.widgets.requests`) and export to a self-contained HTML file or a PNG.
``PromptWidget``: the prompt/layer/head traits, recomputation in the kernel with errors shown in
the widget, long prompts pooled before they leave the kernel.

A prompt widget subclass names its front-end bundle (``BUNDLE``), lists the layers it can show
(``available_layers``) and computes its data traits for a prompt (``compute``); the base class
does the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import anywidget
import torch
import traitlets
from torch import Tensor

from attnviz.device import release_memory
from attnviz.errors import AttnvizError, ContextTooLongError
from attnviz.models.adapter import ModelAdapter
from attnviz.models.loading import as_adapter
from attnviz.widgets.arrays import WireDtype, encode_array
from attnviz.widgets.pattern_scales import SCALES, rescale, sink_share
from attnviz.widgets.pooling import pool_blocks, pool_signed
from attnviz.widgets.requests import Requests
from attnviz.widgets.static import static_path

__all__ = ["MAX_SIZE", "PromptWidget", "Widget", "pool_blocks", "pool_signed"]

MAX_SIZE = 512
"""Longest side, in cells, of a pattern sent to the browser; longer prompts are max-pooled."""


class Widget(anywidget.AnyWidget):
    """Base of every attnviz widget: its bundle (``BUNDLE``, read when the widget is made, so a
    missing build fails with a message that says how to make it), its request handlers (methods
    marked with :func:`attnviz.widgets.requests.handles`) and export."""

    BUNDLE: ClassVar[str] = ""

    def __init__(self, **kwargs: Any) -> None:
        # anywidget wants `_esm` before its __init__ (a Path works only on the class).
        self._esm = static_path(self.BUNDLE).read_text(encoding="utf-8")
        super().__init__(**kwargs)
        self.requests = Requests(self)

    def close(self) -> None:
        """Cancel running requests, then close the widget's comm."""
        requests = getattr(self, "requests", None)
        if requests is not None:
            requests.close()
        super().close()

    _ready: bool = True
    """False while the kernel sets a trait itself: observers that would recompute skip it."""

    def _quietly(self, name: str, value: Any) -> None:
        """Set a trait without the observers that would recompute (window, layer, clicks)."""
        ready, self._ready = self._ready, False
        try:
            setattr(self, name, value)
        finally:
            self._ready = ready

    def _attempt(self, work: Callable[[], None], keep: Iterable[str] = (),
               catch: tuple[type[Exception], ...] = (AttnvizError,)) -> bool:  # fmt: skip
        """Run `work` with the widget busy and its trait changes sent together. An error of
        `catch` shows in the `error` trait after the lines of `keep` (the last good picture
        stays) and gives False."""
        self.busy = True
        try:
            with self.hold_sync():
                work()
                self.error = "\n".join(keep)
            return True
        except catch as err:
            self.error = "\n".join([*keep, str(err)])
            return False
        finally:
            self.busy = False

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The live widget, plus an HTML copy of it as it is now for where widgets cannot run
        (`jupyter nbconvert --to html`); JupyterLab shows the live one. A copy that cannot be
        made is left out: the live widget always shows."""
        data: Any = super()._repr_mimebundle_(**kwargs)
        from attnviz.widgets.export import output_view

        try:
            view = output_view(self) if data else None
        except Exception:  # e.g. a state that is not JSON: the copy is an extra, not the widget
            view = None
        if view is None:
            return data
        shown, metadata = data if isinstance(data, tuple) else (data, {})
        return {**shown, "text/html": view}, metadata

    def to_html(self, path: str | Path, title: str | None = None) -> Path:
        """Write the widget as it is now to one self-contained HTML file (script, styles and data
        inlined; opens offline). What the browser does alone keeps working in the file; what
        needs the kernel is disabled with a note. Returns the path."""
        from attnviz.widgets.export import write_html

        return write_html(self, path, title=title)

    def figure(self) -> Any:
        """A plotly figure of what the widget shows (for reports)."""
        raise NotImplementedError

    def save_figure(self, path: str | Path, width: int | None = None, height: int | None = None,
                    scale: float = 2.0, palette: str = "default") -> Path:  # fmt: skip
        """Save `figure()` (what the widget shows now) as PNG, SVG or PDF, from the file name's
        suffix, through plotly and kaleido (a headless chromium); `width` x `height` in CSS
        pixels (default: the figure's own), PNG pixels = size x `scale`; palette "colorblind"
        for a colour-blind-safe picture. Returns the path."""
        from attnviz.widgets.figure_files import write_figure

        return write_figure(self.figure(), path, width=width, height=height, scale=scale,
                            palette=palette)  # fmt: skip

    def to_png(self, path: str | Path, scale: float = 2.0) -> Path:
        """Save `figure()` as a PNG (see save_figure). Returns the path."""
        from attnviz.widgets.figure_files import write_png

        return write_png(self.figure(), path, scale=scale)


class PromptWidget(Widget):
    """Base of the widgets that show one layer of one prompt.

    Traits (synced): prompt, layer, head, layers (those the widget can show), n_heads, tokens
    (token strings, BOS included), downsampled (block size of pooled patterns; 1 = none),
    scale (how weights become colours: "weights", "off_first" or "log"; see pattern_scales),
    sink (per head, the mean weight on the first token), truncate (cut a prompt longer than the
    model's context to its first n_ctx tokens instead of refusing it), cut_from (the tokens the
    prompt had before it was cut; 0: not cut), error (the message of the last failed
    recomputation; the previous picture stays), busy.
    """

    prompt = traitlets.Unicode("").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)
    layers = traitlets.List(traitlets.Int()).tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    downsampled = traitlets.Int(1).tag(sync=True)
    window = traitlets.List(traitlets.Int()).tag(sync=True)
    offset = traitlets.Int(0).tag(sync=True)
    window_size = traitlets.Int(MAX_SIZE).tag(sync=True)
    scale = traitlets.Unicode("weights").tag(sync=True)
    truncate = traitlets.Bool(False).tag(sync=True)
    cut_from = traitlets.Int(0).tag(sync=True)
    sink = traitlets.List(traitlets.Float()).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        model: ModelAdapter,
        prompt: str,
        layer: int | None = None,
        *,
        head: int = 0,
        dtype: WireDtype = "uint8",
        max_size: int = MAX_SIZE,
        **kwargs: Any,
    ) -> None:
        if dtype not in ("uint8", "float16", "float32"):
            raise ValueError(f"dtype must be 'uint8', 'float16' or 'float32', got {dtype!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        model = as_adapter(model, type(self).__name__)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        self._model = model
        self._dtype: WireDtype = dtype
        self._max_size = max_size
        self._ready = False
        self._full: dict[str, Tensor] = {}  # the prompt's patterns at full resolution
        super().__init__(n_heads=model.spec.n_heads, window_size=max_size, **kwargs)
        self.layers = self.available_layers()
        self.prompt = prompt
        self.layer = self.layers[0] if layer is None and self.layers else (layer or 0)
        bad_head = self._head_problem(head)
        self.head = 0 if bad_head else head
        self._ready = True
        self.refresh()
        if bad_head and not self.error:
            self.error = bad_head

    def _pattern_figure(self, panels: dict[str, Any], signed: Iterable[str] = (),
                        marked: Iterable[int] = (), note: str = "") -> Any:  # fmt: skip
        """pattern_figure of the head, window and scale shown, titled with them; `marked`: a
        (row, column) cell of the shown heatmap to outline."""
        from attnviz.widgets.figures import pattern_figure

        if not panels:
            raise AttnvizError(f"{type(self).__name__} has no picture to draw: "
                               f"{self.error or 'nothing computed yet'}")  # fmt: skip
        window = f" · tokens {self.window[0]}-{self.window[1] - 1}" if self.window else ""
        title = f"{self._model.spec.name} layer {self.layer} head {self.head}{window}{note}"
        return pattern_figure(self.tokens, panels, self.head, self.downsampled, title=title,
                              signed=list(signed), scale=self.scale, offset=self.offset,
                              marked=list(marked))  # fmt: skip

    # ---- what subclasses provide -------------------------------------------------------------

    def available_layers(self) -> list[int]:
        """The layers this widget can show (the layer selector's choices)."""
        return list(range(self._model.spec.n_layers))

    def compute(self, tokens: Tensor, layer: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """For a prompt's token ids [1, n] at `layer`: its patterns at full resolution
        ({name: [heads, n, n]}, kept in the kernel for windows) and any other trait values.
        Raise AttnvizError for input the widget should report. Runs with the widget busy."""
        raise NotImplementedError

    def shown_panels(self, full: dict[str, Tensor]) -> dict[str, tuple[Tensor, bool]]:
        """What the front-end draws, from the (windowed) full patterns: {name: (pattern,
        signed)}; signed patterns are pooled by largest magnitude. Default: each as it is."""
        return {name: (pattern, False) for name, pattern in full.items()}

    def publish(self, encoded: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The trait values that carry the encoded panels (default: all in ``panels``)."""
        return {"panels": encoded}

    # ---- shared behaviour --------------------------------------------------------------------

    @property
    def model(self) -> ModelAdapter:
        return self._model

    def _head_problem(self, head: Any) -> str:
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < self.n_heads:
            return (
                f"head {head!r} is out of range: this layer has heads 0-{self.n_heads - 1}; "
                f"still showing head {self.head}"
            )
        return ""

    @traitlets.validate("head")
    def _check_head(self, proposal: Any) -> int:
        """A head out of range is shown in the widget (error) and the shown head stays."""
        problem = self._head_problem(proposal["value"])
        if problem:
            self.error = problem
            return int(self.head)
        if self.error.startswith("head "):
            self.error = ""
        return int(proposal["value"])

    @traitlets.observe("prompt", "layer", "truncate")
    def _input_changed(self, change: dict[str, Any]) -> None:
        if self._ready:
            self.refresh()

    def refresh(self) -> None:
        """Recompute for the current ``prompt`` and ``layer``.

        An AttnvizError (empty or too long prompt, a layer out of range or without a dictionary,
        a dictionary for another model) is shown in the widget through ``error`` and the previous
        picture stays; any other error is shown and raised.
        """
        started = time.perf_counter()
        if self._from_layer_cache():
            return
        self.busy = True
        try:
            try:
                layer = self._model.check_layer(self.layer)
                ids, cut_from = self._prompt_tokens()
                if self._layer_views_key != (self.prompt, self.truncate):
                    self._layer_views, self._layer_views_key = {}, (self.prompt, self.truncate)
                full, updates = self.compute(ids, layer)
                updates = {**updates, "cut_from": cut_from}
                tokens = self._model.to_str_tokens(ids[0])
            except AttnvizError as err:
                with self.hold_sync():
                    self.error = str(err)
                    self._back_to_shown_layer()
                    self.busy = False
                return
            except Exception as err:
                self.error = f"attnviz: unexpected {type(err).__name__}: {err}"
                raise
            self._store_full(full, len(tokens))
            first = next(iter(self._full.values()), None)  # the model's own pattern
            updates = {**updates, "sink": [] if first is None else sink_share(first)}
            # One message: tokens and data never disagree in the browser, and "not busy" never
            # arrives before the data it announces.
            with self.hold_sync():
                self.tokens = tokens
                for name, value in {**updates, **self._view(None)}.items():
                    self._quietly(name, value)
                self.error = ""
                self.busy = False
        finally:
            self.busy = False
        self._shown_layer: int | None = layer
        painted = time.perf_counter() - started
        self.after_refresh()
        self.timings = {"painted_s": painted, "complete_s": time.perf_counter() - started}
        if len(tokens) > self._max_size:
            release_memory()  # a long prompt's forward pass leaves ~300 MB of freed heap behind

    timings: dict[str, float] = {}  # noqa: RUF012 (replaced per widget, never mutated)
    """Seconds of the last recomputation (set per widget): until its first picture was sent
    (painted_s) and until all of it was (complete_s, after_refresh's part included)."""

    def after_refresh(self) -> None:
        """More of the picture, computed after the first part is on screen (default: none)."""

    # ---- layers kept from one forward pass ---------------------------------------------------

    _layer_views: dict[int, dict[str, Any]] = {}  # noqa: RUF012 (replaced per instance)
    """Trait values of the whole prompt at other layers (weights scale), from the same forward
    pass that computed the shown layer: switching to one of them runs nothing."""
    _layer_views_key: tuple[str, bool] | None = None

    def keep_layer_view(self, layer: int, pattern: Tensor) -> None:
        """Keep the whole-prompt picture of `layer` (pattern [heads, n, n]) seen on the way to
        the shown layer, pooled but not yet encoded (that waits for a switch to it: the new
        prompt stays close to the forward pass's own time)."""
        n = pattern.shape[-1]
        factor = self.pool_factor(n)
        pooled, masked = pool_blocks(pattern.detach().cpu(), factor, nonnegative=True)
        self._layer_views[layer] = {"pooled": pooled, "masked": masked, "factor": factor,
                                    "sink": sink_share(pattern)}  # fmt: skip

    layer_view_name: ClassVar[str] = ""
    """The `compute` key of the model's pattern, for widgets that keep other layers' views."""

    def _from_layer_cache(self) -> bool:
        """Show a kept layer's whole-prompt picture at once (weights scale); False if none."""
        hit = self._layer_views.get(self.layer)
        if (
            hit is None or self.scale != "weights" or not self._ready
            or self._layer_views_key != (self.prompt, self.truncate)
        ):  # fmt: skip
            return False
        encoded = encode_array(hit["pooled"], self._dtype, masked=hit["masked"])
        traits = {**self.publish({self.layer_view_name: encoded}), "downsampled": hit["factor"],
                  "offset": 0, "window": [], "sink": hit["sink"]}  # fmt: skip
        with self.hold_sync():
            for name, value in traits.items():
                self._quietly(name, value)
            self.error = ""
        self._full = {}  # computed again only if a window or another scale asks for it
        self._shown_layer = self.layer
        return True

    def _ensure_full(self) -> bool:
        """The shown layer's full-resolution patterns (after an instant layer switch they are
        computed on demand); False, with the error shown, if that fails."""
        if self._full or not self.tokens:
            return bool(self._full)
        try:
            ids, _ = self._prompt_tokens()
            full, _ = self.compute(ids, self._model.check_layer(self.layer))
        except AttnvizError as err:
            self.error = str(err)
            return False
        self._store_full(full, len(self.tokens))
        return True

    def _store_full(self, full: dict[str, Tensor], n_tokens: int) -> None:
        """Keep the full-resolution patterns; long prompts at half the memory (2048 tokens x 9
        heads is 72 MiB a pattern) in bfloat16: float16 would flush the tiny weights of a sink
        head to zero, and the "without first token" scale rescales exactly those."""
        keep = torch.float32 if n_tokens <= self._max_size else torch.bfloat16
        self._full = {k: v.detach().to("cpu", keep) for k, v in full.items()}

    def _prompt_tokens(self) -> tuple[Tensor, int]:
        """The prompt's token ids, and the number of tokens it had when `truncate` cut it to the
        model's context (0 when it was not cut)."""
        try:
            return self._model.to_tokens(self.prompt), 0
        except ContextTooLongError as err:
            if not self.truncate:
                n = self._model.spec.n_ctx
                raise ContextTooLongError(
                    f"{str(err).split(':')[0]}: shorten it, or tick 'cut to context' to show its "
                    f"first {n} tokens"
                ) from None
        ids = self._model.to_tokens(self.prompt, truncate=True)
        bos = int(self._model.spec.bos_token_id is not None)
        full = len(self._model.tokenizer(self.prompt, add_special_tokens=False)["input_ids"])
        return ids, full + bos

    def _view(self, window: list[int] | None) -> dict[str, Any]:
        """Trait values for the stored patterns seen through `window` ([start, end) tokens;
        None or []: the whole prompt): the encoded panels, the block size and the offset."""
        return self._view_of(self._full, window, self.scale)

    def _view_of(self, patterns: dict[str, Tensor], window: list[int] | None,
                 scale: str) -> dict[str, Any]:  # fmt: skip
        n = next(iter(patterns.values())).shape[-1] if patterns else len(self.tokens)
        start, end = window if window else (0, n)
        rows = {k: v[..., start:end, :] for k, v in patterns.items()}
        crop = {k: v[..., start:end] for k, v in rows.items()}
        factor = self.pool_factor(end - start)
        encoded = {}
        for name, (pattern, signed) in self.shown_panels(crop).items():
            if not signed and name in rows:  # weights on the chosen scale; differences as they are
                pattern = rescale(rows[name], start, end, scale)
            nonnegative = not signed and name in rows and scale != "log"
            encoded[name] = self.encode_pattern(pattern, factor, signed, nonnegative)
        return {
            **self.publish(encoded),
            "downsampled": factor,
            "offset": start,
            "window": [start, end] if window else [],
        }

    @traitlets.validate("scale")
    def _check_scale(self, proposal: Any) -> str:
        if proposal["value"] not in SCALES:
            raise traitlets.TraitError(
                f"unknown scale {proposal['value']!r}: choose one of {', '.join(SCALES)}"
            )
        return str(proposal["value"])

    @traitlets.observe("scale")
    def _scale_changed(self, change: dict[str, Any]) -> None:
        if self._ready and self._ensure_full():
            with self.hold_sync():
                for name, value in self._view(list(self.window) or None).items():
                    self._quietly(name, value)

    @traitlets.observe("window")
    def _window_changed(self, change: dict[str, Any]) -> None:
        if not self._ready or not self._ensure_full():
            return
        window = list(self.window)
        n = len(self.tokens)
        if window and not (len(window) == 2 and 0 <= window[0] < window[1] <= n):
            self.error = (
                f"window {window} is not a token range of this {n}-token prompt: give "
                f"[start, end] with 0 <= start < end <= {n}, or [] for the whole prompt"
            )
            self._quietly("window", change["old"])
            return
        with self.hold_sync():
            for name, value in self._view(window).items():
                self._quietly(name, value)
            self.error = ""

    def _back_to_shown_layer(self) -> None:
        """After a failed recomputation, `layer` names the layer still on screen again (the
        message stays), so a later prompt is not refused for a layer that was never shown."""
        shown = getattr(self, "_shown_layer", None)
        if shown is None or shown == self.layer:
            return
        self._quietly("layer", shown)  # no recomputation: the picture already is of that layer

    def pool_factor(self, n: int) -> int:
        """Block size that brings an n-token pattern within ``max_size`` cells a side."""
        return math.ceil(n / self._max_size)

    def encode_pattern(self, pattern: Tensor, factor: int, signed: bool = False,
                       nonnegative: bool = False) -> dict[str, Any]:  # fmt: skip
        """A [heads, n, n] pattern pooled by ``factor`` and encoded for the wire (future cells
        masked); ``signed`` pools by largest magnitude (for differences); ``nonnegative``
        (weights with future cells 0) pools without a masked copy."""
        if signed:  # a difference of two causal patterns: future cells are 0
            pooled, masked = pool_signed(pattern.detach().cpu(), factor, zero_future=True)
        else:
            x = pattern.detach().cpu()
            pooled, masked = pool_blocks(x if nonnegative else x.float(), factor, nonnegative)
        return encode_array(pooled, self._dtype, masked=masked)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._model.spec.name}, layer {self.layer}, "
            f"{len(self.tokens)} tokens, {self.n_heads} heads)"
        )
