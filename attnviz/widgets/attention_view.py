"""AttentionView: every head's attention pattern for one layer of a prompt, live in a notebook.

>>> AttentionView(model, "When Mary and John went to the store, John gave a drink to", layer=3)
... # doctest: +SKIP

The kernel computes the layer's patterns (``model.attention(tokens, layer, ["pattern"])``)
whenever ``prompt`` or ``layer`` changes, from Python or from the widget's own controls, and
sends all heads at once as compact bytes (:mod:`attnviz.widgets.arrays`); choosing a head is
then purely a front-end matter. Bad input (an empty or too long prompt, a layer that does not
exist) sets ``error`` to the message and keeps the previous picture.

Prompts of more than ``max_size`` tokens are max-pooled into blocks of ``downsampled`` x
``downsampled`` tokens per head before sending, so a head is never more than
``max_size`` x ``max_size`` bytes on the wire.
"""

from __future__ import annotations

import math
from typing import Any

import anywidget
import torch
import torch.nn.functional as F
import traitlets
from torch import Tensor

from attnviz.errors import AttnvizError
from attnviz.models.adapter import ModelAdapter
from attnviz.widgets.arrays import WireDtype, encode_array
from attnviz.widgets.static import static_path

__all__ = ["AttentionView", "pool_blocks"]

MAX_SIZE = 512


def pool_blocks(pattern: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Max-pool a causal pattern [heads, n, n] over ``factor`` x ``factor`` blocks.

    Returns the pooled pattern [heads, ceil(n / factor), ceil(n / factor)] and its mask (True
    where a block holds only future cells). factor 1 returns the pattern and its causal mask.
    """
    n = pattern.shape[-1]
    future = torch.ones(n, n, dtype=torch.bool, device=pattern.device).triu(1)
    if factor <= 1:
        return pattern, future
    x = pattern.float().masked_fill(future, -math.inf)
    pad = -n % factor  # pad the end with masked cells up to a whole number of blocks
    x = F.pad(x, (0, pad, 0, pad), value=-math.inf)
    pooled = F.max_pool2d(x[None], kernel_size=factor, stride=factor)[0]
    return pooled, torch.isinf(pooled)


class AttentionView(anywidget.AnyWidget):
    """The attention patterns of all heads of one layer: a thumbnail per head and a large,
    labelled heatmap of the selected one, with the prompt and layer editable in the widget.

    ``patterns`` is the wire dict of a [heads, dest, src] array (uint8 by default, future
    cells masked); ``tokens`` holds the token strings, BOS included.
    """

    prompt = traitlets.Unicode("").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    patterns = traitlets.Dict().tag(sync=True)
    n_layers = traitlets.Int(0).tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    downsampled = traitlets.Int(1).tag(sync=True)  # block size of the pooled pattern; 1 = none
    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        model: ModelAdapter,
        prompt: str,
        layer: int = 0,
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
        # Read the bundle first (anywidget wants `_esm` before its __init__): a missing build
        # fails here with a message that says how to make it.
        self._esm = static_path("attention_view").read_text(encoding="utf-8")
        self._model = model
        self._dtype: WireDtype = dtype
        self._max_size = max_size
        self._ready = False
        spec = model.spec
        super().__init__(n_layers=spec.n_layers, n_heads=spec.n_heads, **kwargs)
        self.prompt = prompt
        self.layer = layer
        self.head = head
        self._ready = True
        self.refresh()

    @property
    def model(self) -> ModelAdapter:
        return self._model

    @traitlets.validate("head")
    def _check_head(self, proposal: Any) -> int:
        head = int(proposal["value"])
        if not 0 <= head < self.n_heads:
            raise traitlets.TraitError(
                f"head {head} is out of range: this layer has heads 0-{self.n_heads - 1}"
            )
        return head

    @traitlets.observe("prompt", "layer")
    def _input_changed(self, change: dict[str, Any]) -> None:
        if self._ready:
            self.refresh()

    def refresh(self) -> None:
        """Recompute the patterns for the current ``prompt`` and ``layer``.

        An AttnvizError (empty or too long prompt, layer out of range) is shown in the widget
        through ``error`` and the previous picture stays; any other error is shown and raised.
        """
        self.busy = True
        try:
            tokens, patterns, factor = self._compute(self.prompt, self.layer)
        except AttnvizError as err:
            self.error = str(err)
            return
        except Exception as err:
            self.error = f"attnviz: unexpected {type(err).__name__}: {err}"
            raise
        finally:
            self.busy = False
        with self.hold_sync():  # one message: tokens and patterns never disagree in the browser
            self.tokens = tokens
            self.patterns = patterns
            self.downsampled = factor
            self.error = ""

    def _compute(self, prompt: str, layer: int) -> tuple[list[str], dict[str, Any], int]:
        model = self._model
        layer = model.check_layer(layer)
        ids = model.to_tokens(prompt)
        pattern = model.attention(ids, layer, ["pattern"]).pattern
        assert pattern is not None
        n = pattern.shape[-1]
        factor = math.ceil(n / self._max_size)
        pooled, masked = pool_blocks(pattern[0].detach().float().cpu(), factor)
        encoded = encode_array(pooled, self._dtype, masked=masked)
        return model.to_str_tokens(ids[0]), encoded, factor

    def __repr__(self) -> str:
        return (
            f"AttentionView({self._model.spec.name}, layer {self.layer}, "
            f"{len(self.tokens)} tokens, {self.n_heads} heads)"
        )
