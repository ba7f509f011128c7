"""Save and load dictionaries as a directory: `cfg.json` + `weights.safetensors` (no pickles).

A QK dictionary's pair table (step 2) is stored in the same safetensors file as four flat
tensors; the directory is written to a staging folder first and swapped in whole, so a crash
never leaves a half-written dictionary.
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

from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import ARCHITECTURES, QKConfig, QKDictionary
from attnviz.errors import CorruptStoreError, DictionaryMismatchError

CONFIG = "cfg.json"
WEIGHTS = "weights.safetensors"


def save_qk(qk: QKDictionary, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `qk` (and its pair table, if it has one) to the directory `path`.

    dtype=torch.float16 halves the size (the shipped dictionaries use it); indices stay int32."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {
        name: (t.detach().to(dtype) if dtype is not None else t.detach()).cpu().contiguous()
        for name, t in qk.state_dict().items()
    }
    cfg: dict[str, Any] = qk.cfg.to_dict()
    pairs: PairTable | None = getattr(qk, "pairs", None)
    if pairs is not None:
        tensors.update({k: v.cpu().contiguous() for k, v in pairs.tensors().items()})
        cfg["pairs_shape"] = list(pairs.shape)
    cfg["weights_dtype"] = str(dtype or qk.query.W_dec.dtype).replace("torch.", "")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        (staging / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        save_file(tensors, str(staging / WEIGHTS), metadata={"format": "pt"})
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


def load_qk(
    path: str | Path,
    device: torch.device | str | None = None,
    spec: Any = None,
    layer: int | None = None,
) -> QKDictionary:
    """Load a QK dictionary; with `spec` (an adapter's ModelSpec) and `layer`, check it fits."""
    path = Path(path)
    cfg_file, weights_file = path / CONFIG, path / WEIGHTS
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"{path} is not a dictionary directory (no {CONFIG}): give the folder that "
            "`attnviz train qk` or save_qk wrote"
        )
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise CorruptStoreError(
            f"{cfg_file} is not valid JSON ({err}): re-save or re-train it"
        ) from None
    if raw.get("architecture") not in ARCHITECTURES:
        raise DictionaryMismatchError(
            f"{path} holds a {raw.get('architecture')!r} dictionary, not a QK dictionary "
            f"({', '.join(ARCHITECTURES)})"
        )
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError, FileNotFoundError) as err:
        raise CorruptStoreError(
            f"{weights_file} cannot be read ({err}): the file is missing or truncated; copy it "
            "again or re-train"
        ) from None
    cfg = QKConfig.from_dict(raw)
    qk = QKDictionary(cfg)
    state = {k: v.float() for k, v in tensors.items() if not k.startswith("pairs.")}
    expected = {k: tuple(v.shape) for k, v in qk.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        raise CorruptStoreError(
            f"{weights_file} does not match {cfg_file}: expected tensors {expected}, found {got}"
        )
    qk.load_state_dict(state)
    if "pairs_shape" in raw:
        qk.pairs = PairTable.from_tensors(tensors, tuple(raw["pairs_shape"]))  # type: ignore[arg-type]
    if device is not None:
        qk.to(device)
        if qk.pairs is not None:
            qk.pairs = qk.pairs.to(device)
    if spec is not None:
        qk.check_compatible(spec, layer)
    return qk
