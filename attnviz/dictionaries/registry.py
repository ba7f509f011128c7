"""Architecture name -> (config dataclass, module class).

Each architecture module registers itself (`register("qk_transcoder", QKConfig, QKDictionary)`),
so loading dispatches on `cfg.json["architecture"]` and nothing else branches on the name. The
built-in modules are imported on the first look-up, which keeps this module free of imports.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from attnviz.errors import UnknownArchitectureError

BUILTIN_MODULES = ("attnviz.dictionaries.qk", "attnviz.dictionaries.sae")
"""Modules that register the architectures attnviz ships."""


@dataclass(frozen=True)
class Architecture:
    name: str
    config: Any
    """The config dataclass (has to_dict / from_dict)."""
    module: Any
    """The Dictionary subclass built from a config: module(cfg)."""
    summary: str
    """One line for listings."""


_REGISTRY: dict[str, Architecture] = {}
_loaded = False


def register(name: str, config: type, module: type, summary: str = "") -> None:
    """Make `name` loadable; a second registration under the same name must be the same class."""
    known = _REGISTRY.get(name)
    if known is not None and (known.config, known.module) != (config, module):
        raise ValueError(f"architecture {name!r} is already registered by {known.module}")
    _REGISTRY[name] = Architecture(name, config, module, summary)


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _loaded = True


def architectures() -> dict[str, Architecture]:
    """Every registered architecture, by name."""
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


def get_architecture(name: Any) -> Architecture:
    """The registered architecture called `name`, or an error listing the known ones."""
    known = architectures()
    if name not in known:
        raise UnknownArchitectureError(
            f"unknown dictionary architecture {name!r}: attnviz knows {', '.join(known)}. "
            "Check the 'architecture' key of cfg.json, or import the module that registers it."
        )
    return known[name]
