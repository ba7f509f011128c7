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
``max_size`` x ``max_size`` bytes on the wire; ``window = [start, end]`` (or a click on a block)
shows a stretch of the prompt at full resolution from the patterns kept in the kernel.
"""

from __future__ import annotations

from typing import Any

import traitlets
from torch import Tensor

from attnviz.models.locks import model_lock
from attnviz.widgets.base import PromptWidget, pool_blocks

__all__ = ["AttentionView", "pool_blocks"]


class AttentionView(PromptWidget):
    """The attention patterns of all heads of one layer: a thumbnail per head and a large,
    labelled heatmap of the selected one, with the prompt and layer editable in the widget.

    ``patterns`` is the wire dict of a [heads, dest, src] array (uint8 by default, future
    cells masked); ``tokens`` holds the token strings, BOS included.
    """

    BUNDLE = "attention_view"

    patterns = traitlets.Dict().tag(sync=True)

    def __init__(self, model: Any, prompt: str, layer: int = 0, **kwargs: Any) -> None:
        super().__init__(model, prompt, layer, **kwargs)

    layer_view_name = "attention"

    def compute(self, tokens: Tensor, layer: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The layer's pattern; where the backend reads every layer in one pass (TransformerLens),
        the layers before it are kept too (keep_layer_view): switching to them runs nothing."""
        model = self._model
        if not getattr(model, "one_pass_patterns", False):
            pattern = model.attention(tokens, layer, ["pattern"]).pattern
            assert pattern is not None
            return {"attention": pattern[0]}, {}
        seen: dict[int, Tensor] = {}

        def take(at: int, pattern: Tensor) -> None:
            if at == layer:
                seen[at] = pattern[0]
            elif at not in self._layer_views:
                self.keep_layer_view(at, pattern[0])

        with model_lock(model):
            model.each_pattern(tokens, take, range(layer + 1))
        return {"attention": seen[layer]}, {}

    def publish(self, encoded: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"patterns": encoded["attention"]}

    def figure(self) -> Any:
        return self._pattern_figure({"attention": self.patterns})
