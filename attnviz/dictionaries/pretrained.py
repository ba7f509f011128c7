"""Dictionaries shipped inside the package, of every kind (QK ones trained by
scripts/ship_qk_transcoders.py), listed by model, site and layer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from attnviz.dictionaries.base import Dictionary
from attnviz.dictionaries.io import CONFIG, load_dictionary, load_qk
from attnviz.dictionaries.qk import QKDictionary
from attnviz.errors import DictionaryNotFoundError

ROOT = Path(__file__).resolve().parent.parent / "pretrained"
TRAINED_CONTEXTS = 2048
"""scripts/ship_qk_transcoders.py trains on the first 2048 pydocs contexts of TRAINED_N_CTX."""
TRAINED_N_CTX = 128
SAE_TRAINED_CONTEXTS = 1800
"""scripts/ship_attention_saes.py trains on the first 1800 pydocs contexts, which leaves about
107,000 tokens after them for held-out figures (dead features are counted on >= 100,000)."""


def pretrained_dir(model: str) -> Path:
    return ROOT / model


def _features(cfg: dict) -> str:
    """A dictionary's width as shown in listings: "1024" or, for paired coders, "1024/1024"."""
    if "d_hidden_q" in cfg:
        return f"{cfg['d_hidden_q']}/{cfg['d_hidden_k']}"
    return str(cfg.get("d_sae", cfg.get("d_hidden", "?")))


def _layer(cfg: dict) -> int | str:
    """The layer a dictionary reads: an int, or "3+4" for one reading several."""
    if "layer" in cfg:
        return int(cfg["layer"])
    layers = cfg.get("layers") or ["?"]
    return int(layers[0]) if len(layers) == 1 else "+".join(map(str, layers))


def list_pretrained(model: str | None = None) -> list[dict]:
    """One row per shipped dictionary of every kind: model, name, architecture, site, layer,
    features, pairs (whether it carries a QK pair table), dtype, path; sorted by model, layer."""
    rows = []
    for cfg_file in sorted(ROOT.glob(f"*/*/{CONFIG}")):
        cfg = json.loads(cfg_file.read_text())
        rows.append(
            {
                "model": cfg_file.parent.parent.name,
                "name": cfg_file.parent.name,
                "architecture": cfg["architecture"],
                "site": cfg.get("site", cfg.get("hook_in", "?")),
                "layer": _layer(cfg),
                "features": _features(cfg),
                "pairs": "pairs_shape" in cfg,
                "dtype": cfg.get("weights_dtype", "?"),
                "path": str(cfg_file.parent),
            }
        )
    rows = [r for r in rows if model is None or r["model"] == model]
    return sorted(
        rows, key=lambda r: (r["model"], str(r["layer"]).zfill(4), r["architecture"], r["name"])
    )


def load_pretrained(model: str, name: str, device: torch.device | str | None = None) -> Dictionary:
    """The shipped dictionary `name` (a row's "name" in list_pretrained) for `model`."""
    path = pretrained_dir(model) / name
    if not (path / CONFIG).is_file():
        have = [r["name"] for r in list_pretrained(model)] or ["none"]
        raise DictionaryNotFoundError(
            f"no shipped dictionary {name!r} for {model} (shipped: {', '.join(have)}); "
            "see `attnviz dictionaries`"
        )
    return load_dictionary(path, device=device)


def load_pretrained_qk(
    model: str = "smollm2-135m",
    layer: int = 3,
    architecture: str = "qk_transcoder",
    device: torch.device | str | None = None,
) -> QKDictionary:
    """A shipped QK dictionary (fp16 on disk, float32 in memory)."""
    name = f"{architecture.replace('_', '-')}-L{layer}"
    if not (pretrained_dir(model) / name / CONFIG).is_file():
        have = [r["name"] for r in list_pretrained(model)] or ["none"]
        raise DictionaryNotFoundError(
            f"no shipped {architecture} for {model} layer {layer} (shipped: {', '.join(have)}); "
            f"train one with `attnviz train qk --model {model} --layer {layer}`"
        )
    return load_qk(pretrained_dir(model) / name, device=device)


def held_out_contexts(adapter, n_contexts: int, after: int = TRAINED_CONTEXTS) -> torch.Tensor:
    """pydocs contexts [n, TRAINED_N_CTX] after the first `after` (those the shipped QK
    dictionaries were trained on; SAE_TRAINED_CONTEXTS for the shipped SAEs)."""
    import itertools

    from attnviz.data.contexts import contexts
    from attnviz.data.corpora import get_corpus

    rows = contexts(
        get_corpus("pydocs"), adapter.tokenizer, TRAINED_N_CTX, adapter.spec.bos_token_id
    )
    held = list(itertools.islice(rows, after, after + n_contexts))
    if not held:
        raise RuntimeError("pydocs has no contexts left after the ones the dictionaries saw")
    return torch.stack(held)
