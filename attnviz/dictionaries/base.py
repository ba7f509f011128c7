"""What every dictionary architecture shares: a config that names its model, layer and sites,
and a module that can be checked against a model, saved and loaded.

An architecture is a config dataclass (with `to_dict` / `from_dict`) plus an nn.Module subclass
of `Dictionary`, registered in `attnviz.dictionaries.registry`. Extra tensors that are not
parameters (a QK dictionary's pair table) travel through `extra_tensors` / `load_extra`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnviz.errors import DictionaryMismatchError
from attnviz.models.sites import site_width


class Dictionary(nn.Module):
    """Base class of registered dictionaries; subclasses set `self.cfg` in __init__."""

    cfg: Any
    weights_file = "weights.safetensors"
    """The safetensors file beside cfg.json (SAEs use SAELens's name)."""

    # ---- what it reads and writes ----------------------------------------------------------

    def site_widths(self) -> dict[str, int]:
        """{site: width this dictionary expects there}, e.g. {"resid_normed": 576, "q": 576}."""
        raise NotImplementedError

    def spec_requirements(self) -> dict[str, Any]:
        """ModelSpec fields that must equal these values besides the site widths."""
        return {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ---- how it is written (defaults: the state dict and the config as they are) -----------

    def saved_config(self, weights_dtype: str) -> dict[str, Any]:
        """What cfg.json holds (extra_config is added to it)."""
        return dict(self.cfg.to_dict())

    def export_state(self) -> dict[str, Tensor]:
        """The tensors written, by their names on disk."""
        return dict(self.state_dict())

    def import_state(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Tensors read from disk, renamed to this module's state-dict names (the inverse of
        export_state); names it does not know are left for load_extra."""
        return tensors

    # ---- extra state beyond parameters (saved beside them) ---------------------------------

    def extra_tensors(self) -> dict[str, Tensor]:
        return {}

    def extra_config(self) -> dict[str, Any]:
        return {}

    def load_extra(self, tensors: dict[str, Tensor], raw_cfg: dict[str, Any]) -> None:
        """Restore what extra_tensors / extra_config wrote (default: nothing)."""

    def extra_to(self, device: torch.device | str) -> None:
        """Move extra state to `device` (called by load_dictionary after .to)."""

    # ---- the model check -------------------------------------------------------------------

    def check_compatible(self, spec: Any, layer: int | None = None) -> None:
        """Raise DictionaryMismatchError naming every dimension that differs from the model
        (`spec`, an adapter's ModelSpec) and, when given, the layer."""
        c = self.cfg
        what = f"this {c.architecture} (trained on {c.model} layer {c.layer})"
        problems = [
            f"{name} {mine} vs {getattr(spec, name)}"
            for name, mine in self.spec_requirements().items()
            if mine != getattr(spec, name)
        ]
        problems += [
            f"width at {site} {mine} vs {site_width(spec, site)}"
            for site, mine in self.site_widths().items()
            if mine != site_width(spec, site)
        ]
        if problems:
            raise DictionaryMismatchError(
                f"{what} does not fit {spec.name}: {', '.join(problems)}. Load the model it was "
                f"trained on (attnviz.load_model({c.model!r})) or train one for {spec.name}."
            )
        if layer is not None and layer != c.layer:
            raise DictionaryMismatchError(
                f"this {c.architecture} was trained on layer {c.layer} of {c.model}, not layer "
                f"{layer}: use it with layer={c.layer}, or train one for layer {layer}."
            )
