"""Which hook_z SAEs a widget uses, one per layer: given, or shipped for the model
(``attnviz/pretrained/<model>/z-sae-L<layer>/``), each checked on the model once before its first
use (:func:`attnviz.analysis.sae_check.verify_on_model`). FeatureAttribution and PairExplorer's
"what moves along this edge" share it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from attnviz.dictionaries.sae import SAE
from attnviz.errors import MissingDictionaryError
from attnviz.models.adapter import ModelAdapter

__all__ = ["SAEInput", "SAESet", "describe_sae"]

SAEInput = SAE | Iterable[SAE] | Mapping[int, SAE] | None


def _shipped(model: ModelAdapter) -> dict[int, str]:
    """{layer: name} of the z SAEs shipped for the model (named z-sae-L<layer>)."""
    from attnviz.dictionaries.pretrained import list_pretrained

    return {
        int(r["layer"]): r["name"]
        for r in list_pretrained(model.spec.name)
        if r["site"] == "z" and r["name"] == f"z-sae-L{r['layer']}"
    }


class SAESet:
    """The SAEs of one widget by layer; shipped ones load at their first use."""

    def __init__(self, model: ModelAdapter, sae: SAEInput) -> None:
        self._model = model
        self.given = sae is not None
        self._verified: set[int] = set()
        self._saes: dict[int, SAE | str]
        if sae is None:
            self._saes = dict(sorted(_shipped(model).items()))
            return
        items = (
            [(None, sae)] if isinstance(sae, SAE)
            else list(sae.items()) if isinstance(sae, Mapping) else [(None, s) for s in sae]
        )  # fmt: skip
        out: dict[int, SAE | str] = {}
        for layer, s in items:
            if not isinstance(s, SAE):
                raise TypeError(f"sae must hold attnviz SAE objects, got {type(s).__name__}")
            # Filed under another layer than its own: said when that layer is shown (the check).
            layer = s.cfg.layer if layer is None else int(layer)
            if layer in out:
                raise ValueError(f"two SAEs for layer {layer}: give one per layer")
            out[layer] = s
        self._saes = dict(sorted(out.items()))

    @property
    def layers(self) -> list[int]:
        return list(self._saes)

    def __contains__(self, layer: int) -> bool:
        return layer in self._saes

    def get(self, layer: int) -> SAE:
        """The layer's SAE, loaded and checked on the model (MissingDictionaryError when there is
        none, DictionaryMismatchError when it does not rebuild the model's hook_z there)."""
        name = self._model.spec.name
        if layer not in self._saes:
            have = ", ".join(map(str, self._saes)) or "none"
            raise MissingDictionaryError(
                f"no hook_z SAE for {name} layer {layer} (this widget has layers: {have}). Pass "
                f"sae=... with one trained on layer {layer}'s z, or train one: "
                f"attnviz train sae --site z --layer {layer}"
            )
        sae = self._saes[layer]
        if isinstance(sae, str):
            from attnviz.dictionaries.pretrained import load_pretrained

            loaded = load_pretrained(name, sae)
            if not isinstance(loaded, SAE):
                raise MissingDictionaryError(f"shipped {sae} for {name} is not an SAE")
            sae = self._saes[layer] = loaded
        if layer not in self._verified:
            self._check(sae, layer)
            self._verified.add(layer)
        return sae

    def _check(self, sae: SAE, layer: int) -> None:
        from attnviz.analysis.sae_check import verify_on_model
        from attnviz.errors import DictionaryMismatchError

        if sae.cfg.site != "z" or sae.cfg.layers != [layer]:
            raise DictionaryMismatchError(
                f"this SAE reads {sae.cfg.site} of layer(s) {sae.cfg.layers}, not hook_z of layer "
                f"{layer}: attribution to heads and sources needs a one-layer z SAE of that layer"
            )
        verify_on_model(sae, self._model)


def describe_sae(sae: SAE) -> str:
    c = sae.cfg
    k = f", k={c.k}" if c.k else ""
    return f"{c.architecture} SAE, {c.d_sae:,} features{k}, hook_z of layer {c.layer} of {c.model}"
