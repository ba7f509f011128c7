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
SAE_TRAINED_CONTEXTS = 2000
"""The shipped SAEs train on the first 2000 contexts of debian-docs's train split; their held-out
text is its held-out documents (held_out_contexts)."""


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


HELD_OUT_CORPUS = "debian-docs:heldout"
"""Documents no shipped dictionary was trained on (the SAEs train on debian-docs's train split,
the QK dictionaries on pydocs): the held-out text of every figure and widget by default."""


def held_out_contexts(
    adapter, n_contexts: int, after: int = TRAINED_CONTEXTS, corpus: str | None = None
) -> torch.Tensor:
    """Held-out contexts [n, TRAINED_N_CTX]: by default the first n of debian-docs's held-out
    documents (held out by document); where that corpus cannot be read (its Debian packages are
    not installed: `make corpus`), pydocs contexts after the first `after`, with a warning.
    corpus="pydocs" asks for the latter."""
    import itertools
    import warnings

    from attnviz.data.contexts import contexts
    from attnviz.data.corpora import get_corpus
    from attnviz.errors import AttnvizError

    source, skip = corpus or HELD_OUT_CORPUS, 0
    if source == "pydocs":
        skip = after
    try:
        text = get_corpus(source)
    except AttnvizError as e:
        if corpus is not None:
            raise
        warnings.warn(
            f"held-out text falls back to pydocs contexts after the first {after} ({e})",
            stacklevel=2,
        )
        text, skip = get_corpus("pydocs"), after
    rows = contexts(text, adapter.tokenizer, TRAINED_N_CTX, adapter.spec.bos_token_id)
    held = list(itertools.islice(rows, skip, skip + n_contexts))
    if not held:
        raise RuntimeError(f"{text.name} has no contexts left after the ones the dictionaries saw")
    return torch.stack(held)
