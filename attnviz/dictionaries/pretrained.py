"""Dictionaries shipped inside the package (trained by scripts/ship_qk_transcoders.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from attnviz.dictionaries.io import CONFIG, load_qk
from attnviz.dictionaries.qk import QKDictionary

ROOT = Path(__file__).resolve().parent.parent / "pretrained"
TRAINED_CONTEXTS = 2048
"""scripts/ship_qk_transcoders.py trains on the first 2048 pydocs contexts of TRAINED_N_CTX."""
TRAINED_N_CTX = 128


def pretrained_dir(model: str) -> Path:
    return ROOT / model


def list_pretrained() -> list[dict]:
    """One row per shipped dictionary: model, name, architecture, layer, widths, path."""
    rows = []
    for cfg_file in sorted(ROOT.glob(f"*/*/{CONFIG}")):
        cfg = json.loads(cfg_file.read_text())
        rows.append(
            {
                "model": cfg_file.parent.parent.name,
                "name": cfg_file.parent.name,
                "architecture": cfg["architecture"],
                "layer": cfg["layer"],
                "d_hidden_q": cfg["d_hidden_q"],
                "d_hidden_k": cfg["d_hidden_k"],
                "pairs": "pairs_shape" in cfg,
                "path": str(cfg_file.parent),
            }
        )
    return sorted(rows, key=lambda r: (r["model"], r["layer"], r["architecture"]))


def load_pretrained_qk(
    model: str = "smollm2-135m",
    layer: int = 3,
    architecture: str = "qk_transcoder",
    device: torch.device | str | None = None,
) -> QKDictionary:
    """A shipped QK dictionary (fp16 on disk, float32 in memory)."""
    path = pretrained_dir(model) / f"{architecture.replace('_', '-')}-L{layer}"
    if not (path / CONFIG).is_file():
        have = [f"{r['name']}" for r in list_pretrained() if r["model"] == model] or ["none"]
        raise FileNotFoundError(
            f"no shipped {architecture} for {model} layer {layer} (shipped: {', '.join(have)}); "
            f"train one with `attnviz train qk --model {model} --layer {layer}`"
        )
    return load_qk(path, device=device)


def held_out_contexts(adapter, n_contexts: int) -> torch.Tensor:
    """pydocs contexts [n, TRAINED_N_CTX] after the ones the shipped dictionaries were trained on."""
    import itertools

    from attnviz.data.contexts import contexts
    from attnviz.data.corpora import get_corpus

    rows = contexts(
        get_corpus("pydocs"), adapter.tokenizer, TRAINED_N_CTX, adapter.spec.bos_token_id
    )
    held = list(itertools.islice(rows, TRAINED_CONTEXTS, TRAINED_CONTEXTS + n_contexts))
    if not held:
        raise RuntimeError("pydocs has no contexts left after the ones the dictionaries saw")
    return torch.stack(held)
