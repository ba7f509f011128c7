"""The part PatternExplorer and PairExplorer share: which QK dictionaries they use (given, or
shipped for the model) and the reconstruction of the current prompt, sent as pooled patterns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import traitlets
from torch import Tensor

from attnviz.analysis.reconstruction import Reconstruction, complete, reconstruct
from attnviz.dictionaries.qk import QKDictionary
from attnviz.errors import MissingDictionaryError
from attnviz.models.adapter import ModelAdapter
from attnviz.models.loading import as_adapter
from attnviz.widgets.base import PromptWidget

__all__ = ["QKInput", "QKWidget", "dictionaries_by_layer"]

QKInput = QKDictionary | Iterable[QKDictionary] | Mapping[int, QKDictionary] | None


HALF = torch.bfloat16
"""How long prompts' patterns are kept: half the memory, tiny weights kept (float16 flushes them)."""


def dictionaries_by_layer(model: ModelAdapter, qk: QKInput) -> dict[int, QKDictionary]:
    """{layer: dictionary} from one dictionary, several, a {layer: dictionary} mapping, or None
    (the QK transcoders shipped for the model; none for most models)."""
    if qk is None:
        from attnviz.dictionaries.pretrained import list_pretrained, load_pretrained_qk

        name = model.spec.name
        rows = [
            r for r in list_pretrained()
            if r["model"] == name and r["architecture"] == "qk_transcoder"
        ]  # fmt: skip
        return {r["layer"]: load_pretrained_qk(name, r["layer"]) for r in rows}
    if isinstance(qk, QKDictionary):
        return {qk.cfg.layer: qk}
    items = list(qk.items()) if isinstance(qk, Mapping) else [(None, d) for d in qk]
    out: dict[int, QKDictionary] = {}
    for layer, d in items:
        if not isinstance(d, QKDictionary):
            raise TypeError(f"qk must hold QKDictionary objects, got {type(d).__name__}")
        # A mapping may pair a layer with a dictionary trained on another one: the widget says
        # so when that layer is shown (check_compatible), rather than refusing to start.
        layer = d.cfg.layer if layer is None else int(layer)
        if layer in out:
            raise ValueError(f"two dictionaries for layer {layer}: give one per layer")
        out[layer] = d
    return dict(sorted(out.items()))


class QKWidget(PromptWidget):
    """A prompt widget over QK dictionaries, one per layer it can show.

    Traits (synced, besides PromptWidget's): panels ({"true", "transcoder", "masked"} -> wire
    arrays [heads, n, n], pooled and windowed like the rest), kl ({"transcoder": [...],
    "masked": [...], "bias": [...]}: mean KL(true || reconstruction) per head over the whole
    prompt, nats; "bias" is the masked map's bias terms alone, what its pairs improve on),
    has_masked (the dictionary has a pair table), masked_pending (the masked map is being
    computed: a new prompt's other panels are shown first), dictionary (one line describing it)."""

    panels = traitlets.Dict().tag(sync=True)
    kl = traitlets.Dict().tag(sync=True)
    has_masked = traitlets.Bool(False).tag(sync=True)
    masked_pending = traitlets.Bool(False).tag(sync=True)
    dictionary = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self, model: ModelAdapter, prompt: str, layer: int | None = None, *, qk: QKInput = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        model = as_adapter(model, type(self).__name__)
        self._dictionaries = dictionaries_by_layer(model, qk)
        self._rec: Reconstruction | None = None
        super().__init__(model, prompt, layer, **kwargs)

    @property
    def dictionaries(self) -> dict[int, QKDictionary]:
        return dict(self._dictionaries)

    @property
    def reconstruction(self) -> Reconstruction | None:
        """The current prompt's reconstruction (patterns stored as bfloat16 past max_size)."""
        return self._rec

    def available_layers(self) -> list[int]:
        return list(self._dictionaries)

    def dictionary_for(self, layer: int) -> QKDictionary:
        if layer not in self._dictionaries:
            name = self._model.spec.name
            have = ", ".join(map(str, self._dictionaries)) or "none"
            raise MissingDictionaryError(
                f"no QK dictionary for {name} layer {layer} (this widget has layers: {have}). "
                f"Pass qk=... with one trained for this layer, or train one: "
                f"attnviz train qk --model {name} --layer {layer}"
            )
        return self._dictionaries[layer]

    def compute(self, tokens: Tensor, layer: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The model's and the transcoders' patterns; the KLs and the masked pair map (most of
        the time on long prompts) follow in after_refresh, once these are on screen."""
        qk = self.dictionary_for(layer)
        qk.check_compatible(self._model.spec, layer)  # another model's, or another layer's
        rec = reconstruct(self._model, qk, tokens, masked=False)
        if rec.n_tokens > self._max_size:  # kept for clicks and windows at half the memory
            rec.true, rec.transcoder = rec.true.to(HALF), rec.transcoder.to(HALF)
        self._rec = rec
        traits = {
            "kl": {},
            "has_masked": qk.pairs is not None,
            "masked_pending": qk.pairs is not None,
            "dictionary": describe(qk),
            **self.extra_traits(rec),
        }
        return {"true": rec.true, "transcoder": rec.transcoder}, traits

    def after_refresh(self) -> None:
        """Add the KLs and the masked pair map's pattern to what is shown (in the same kernel
        call, so Python sees the whole reconstruction when the prompt's assignment returns)."""
        rec = self._rec
        if rec is None or (rec.kl_transcoder is not None and not self.masked_pending):
            return
        complete(rec)
        assert rec.kl_transcoder is not None
        kl = {"transcoder": [round(float(v), 5) for v in rec.kl_transcoder]}
        traits: dict[str, Any] = {}
        if rec.masked is not None and rec.kl_masked is not None:
            if rec.n_tokens > self._max_size:
                rec.masked = rec.masked.to(HALF)
            self._full["masked"] = rec.masked
            kl["masked"] = [round(float(v), 5) for v in rec.kl_masked]
            if rec.kl_bias is not None:
                kl["bias"] = [round(float(v), 5) for v in rec.kl_bias]
            traits = self._view(list(self.window) or None)
        with self.hold_sync():
            for name, value in {**traits, "kl": kl}.items():
                self._quietly(name, value)
            self.masked_pending = False

    def extra_traits(self, rec: Reconstruction) -> dict[str, Any]:
        """More trait values to set with the new data (PairExplorer clears its selection)."""
        return {}


def describe(qk: QKDictionary) -> str:
    c = qk.cfg
    kind = "QK transcoder" if qk.is_transcoder else "q/k SAE"
    pairs = f", {qk.pairs.nnz:,} kept pairs" if qk.pairs is not None else ", no pair table"
    return f"{kind} {c.d_hidden_q}+{c.d_hidden_k} features, layer {c.layer} of {c.model}{pairs}"
