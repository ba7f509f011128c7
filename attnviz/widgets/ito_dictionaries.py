"""Which SAEs an ITOExplorer compares, by name: given (an SAE, a list, {name: SAE}) or shipped
for the model, each checked on the model before use; an SAE that cannot be used is left out
with a message that names the fix. Each keeps what ITO computes once for it (the decoder's Gram
matrix, the random dictionary of the same shape)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from attnviz.analysis.ito.compare import random_like
from attnviz.analysis.ito.pursuit import gram
from attnviz.analysis.sae_check import READABLE_SITES, verify_on_model
from attnviz.dictionaries.sae import SAE
from attnviz.errors import AttnvizError, DictionaryMismatchError
from attnviz.models.adapter import SPLICE_SITES, ModelAdapter
from attnviz.models.locks import model_lock

__all__ = ["ITODictionary", "SAEsInput", "resolve_dictionaries"]

SAESpec = SAE | str
SAEsInput = SAESpec | Iterable[SAESpec] | Mapping[str, SAESpec] | None


@dataclass
class ITODictionary:
    """One SAE of the widget and what is computed once for it."""

    name: str
    sae: SAE
    _grams: dict[int, Tensor] = field(default_factory=dict, repr=False)
    _random: SAE | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def splicable(self) -> bool:
        c = self.sae.cfg
        return len(c.layers) == 1 and c.site in SPLICE_SITES

    def gram_of(self, sae: SAE) -> Tensor:
        """The Gram matrix of `sae`'s decoder (this SAE's or its random twin's), kept."""
        with self._lock:
            if id(sae) not in self._grams:
                self._grams[id(sae)] = gram(sae.W_dec.detach())
            return self._grams[id(sae)]

    def random(self, seed: int) -> SAE:
        """compare.random_like of the SAE (made once)."""
        with self._lock:
            if self._random is None:
                self._random = random_like(self.sae, seed)
            return self._random

    def info(self) -> dict[str, Any]:
        c = self.sae.cfg
        layers = "+".join(map(str, c.layers))
        k = f", k={c.k}" if c.k else ""
        note = "" if self.splicable else (
            f"{c.site} cannot be spliced into the model (only {', '.join(SPLICE_SITES)} can, one "
            "layer at a time), so it has no CE curve" if c.site not in SPLICE_SITES else
            "reads several layers at once, which cannot be spliced back, so it has no CE curve"
        )  # fmt: skip
        return {"name": self.name, "site": c.site, "layers": list(c.layers), "d_sae": c.d_sae,
                "splicable": self.splicable, "note": note,
                "description": f"{c.architecture} SAE, {c.d_sae:,} features{k}, {c.site} of "
                               f"layer {layers} of {c.model}"}  # fmt: skip


def resolve_dictionaries(
    model: ModelAdapter, saes: SAEsInput
) -> tuple[dict[str, ITODictionary], list[str]]:
    """The usable SAEs by name (default: the model's shipped hook_z SAEs), and one message per
    SAE left out (naming the fix)."""
    name = model.spec.name
    if saes is None:
        from attnviz.dictionaries.pretrained import list_pretrained

        saes = [r["name"] for r in list_pretrained(name)
                if r["site"] == "z" and r["name"] == f"z-sae-L{r['layer']}"]  # fmt: skip
        if not saes:
            return {}, [f"no hook_z SAE is shipped for {name}: pass saes=[...] (SAEs trained "
                        "on this model), or train one: attnviz train sae --site z --layer L"]  # fmt: skip
    items: list[tuple[str | None, SAESpec]]
    if isinstance(saes, (SAE, str)):
        items = [(None, saes)]
    elif isinstance(saes, Mapping):
        items = [(str(k), v) for k, v in saes.items()]
    else:
        items = [(None, s) for s in saes]
    out: dict[str, ITODictionary] = {}
    problems = []
    for given, s in items:
        try:
            label, sae = _load(model, given, s)
            while label in out:
                label = f"{label}'"
            _check(model, label, sae)
        except AttnvizError as err:
            problems.append(str(err))
            continue
        out[label] = ITODictionary(label, sae)
    return out, problems


def _load(model: ModelAdapter, given: str | None, s: SAESpec) -> tuple[str, SAE]:
    if isinstance(s, str):
        from attnviz.dictionaries.pretrained import load_pretrained

        loaded = load_pretrained(model.spec.name, s)
        if not isinstance(loaded, SAE):
            raise AttnvizError(f"shipped {s} is a {type(loaded).__name__}, not an SAE: ITO "
                               "needs an SAE's decoder (see `attnviz dictionaries`)")  # fmt: skip
        return given or s, loaded
    if not isinstance(s, SAE):
        raise TypeError(f"saes must hold attnviz SAEs or shipped names, got {type(s).__name__}")
    c = s.cfg
    return given or f"{c.site}-sae-L{'+'.join(map(str, c.layers))}", s


def _check(model: ModelAdapter, label: str, sae: SAE) -> None:
    c, spec = sae.cfg, model.spec
    if c.model != spec.name:
        raise DictionaryMismatchError(
            f"{label} is an SAE for {c.model}, not {spec.name}: pass SAEs trained on "
            f"{spec.name} (`attnviz dictionaries` lists the shipped ones; `attnviz train sae "
            f"--site {c.site} --layer {c.layer}` trains one)"
        )
    if c.site not in READABLE_SITES:
        raise DictionaryMismatchError(
            f"{label} reads {c.site}, which ITOExplorer cannot read from the model yet: use "
            f"an SAE on {', '.join(READABLE_SITES)}"
        )
    try:
        with model_lock(model):
            verify_on_model(sae, model)
    except DictionaryMismatchError as err:
        raise DictionaryMismatchError(f"{label}: {err}") from None
