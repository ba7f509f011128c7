"""Save and load any registered dictionary as a directory: `cfg.json` + a safetensors file
(`weights.safetensors`, or SAELens's `sae_weights.safetensors` for SAEs; no pickles).

`cfg.json["architecture"]` picks the config and module classes from the registry. Tensors that
are not parameters (a QK dictionary's pair table) sit in the same safetensors file. The directory
is written to a staging folder first and swapped in whole, so a crash never leaves a half-written
dictionary.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from attnviz.dictionaries.base import Dictionary
from attnviz.dictionaries.qk import QKDictionary
from attnviz.dictionaries.registry import get_architecture
from attnviz.errors import (
    AttnvizError,
    CorruptFileError,
    DictionaryMismatchError,
    DictionaryNotFoundError,
)

CONFIG = "cfg.json"
WEIGHTS = "weights.safetensors"


def save_dictionary(d: Dictionary, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `d` to the directory `path` (replacing what was there only once all is written).

    dtype=torch.float16 halves the size (the shipped dictionaries use it); integer tensors keep
    their type."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {
        name: (t.detach().to(dtype) if dtype is not None else t.detach()).cpu().contiguous()
        for name, t in d.export_state().items()
    }
    tensors.update({k: v.detach().cpu().contiguous() for k, v in d.extra_tensors().items()})
    weights_dtype = str(dtype or d.dtype).replace("torch.", "")
    cfg: dict[str, Any] = d.saved_config(weights_dtype) | d.extra_config()
    cfg["weights_dtype"] = weights_dtype
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        (staging / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        save_file(tensors, str(staging / d.weights_file), metadata={"format": "pt"})
        if path.exists():
            backup = path.with_name(f".{path.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            path.rename(backup)
            staging.rename(path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """The raw cfg.json of the dictionary directory `path`."""
    path = Path(path)
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise DictionaryNotFoundError(
            f"{path} is not a dictionary directory (no {CONFIG}): give the folder that "
            "`attnviz train ...` or save_dictionary wrote"
        )
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise CorruptFileError(
            f"{cfg_file} is not valid JSON ({err}): re-save or re-train it"
        ) from None
    if not isinstance(raw, dict):
        raise CorruptFileError(f"{cfg_file} holds {type(raw).__name__}, not a config object")
    return raw


def load_dictionary(
    path: str | Path,
    model: Any = None,
    layer: int | str | None = None,
    device: torch.device | str | None = None,
) -> Dictionary:
    """Load the dictionary in `path`, whatever its architecture.

    With `model` (an attnviz model or its ModelSpec), check that it fits that model (and
    `layer`, when given) before returning it. Weights are float32 in memory."""
    path = Path(path)
    raw = read_config(path)
    arch = get_architecture(raw.get("architecture"))
    weights_file = path / arch.module.weights_file
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError) as err:
        raise CorruptFileError(
            f"{weights_file} cannot be read ({err}): the file is missing or truncated; copy it "
            "again or re-train"
        ) from None
    try:
        cfg = arch.config.from_dict(raw)
    except AttnvizError:
        raise  # already names the problem and the fix
    except (TypeError, ValueError) as err:
        raise CorruptFileError(
            f"{path / CONFIG} is not a valid {arch.name} config: {err}"
        ) from None
    d = arch.module(cfg)
    params = d.state_dict()
    renamed = d.import_state(tensors)
    state = {k: v.float() for k, v in renamed.items() if k in params}
    expected = {k: tuple(v.shape) for k, v in params.items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        raise CorruptFileError(
            f"{weights_file} does not match {path / CONFIG}: expected tensors {expected}, found {got}"
        )
    d.load_state_dict(state)
    d.load_extra({k: v for k, v in renamed.items() if k not in params}, raw)
    if device is not None:
        d.to(device)
        d.extra_to(device)
    if model is not None:
        d.check_compatible(getattr(model, "spec", model), layer)
    return d


def save_qk(qk: QKDictionary, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """save_dictionary for a QK dictionary (kept for its callers)."""
    return save_dictionary(qk, path, dtype)


def load_qk(
    path: str | Path,
    device: torch.device | str | None = None,
    spec: Any = None,
    layer: int | None = None,
) -> QKDictionary:
    """Load a QK dictionary; with `spec` (an adapter's ModelSpec) and `layer`, check it fits."""
    d = load_dictionary(path, model=spec, layer=layer, device=device)
    if not isinstance(d, QKDictionary):
        raise DictionaryMismatchError(
            f"{path} holds a {d.cfg.architecture!r} dictionary, not a QK dictionary: "
            "load it with attnviz.dictionaries.io.load_dictionary"
        )
    return d
