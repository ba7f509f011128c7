"""Several layers' activation stores read as one, for dictionaries over concatenated layers (the
two-layer value SAEs of Anthropic's attention update, 2025).

Stores collected from the same corpus with the same n_ctx and chunk size hold the same contexts in
the same chunks (collection is deterministic and chunk i always holds contexts
[i * chunk_contexts, ...)), so chunk i of each can be read side by side. A field comes back with
the layers concatenated along its head axis, layer-major: v of two layers is
[n_tokens, 2 * n_kv_heads, d_head], which flattens to exactly what a two-layer SAE reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from attnviz.data.store import TOKEN_FIELDS, ActivationStore
from attnviz.errors import StoreMismatchError

__all__ = ["StackedStore"]

SAME = ("model", "n_ctx", "chunk_contexts", "dtype")


class StackedStore(ActivationStore):
    """`StackedStore([store_L17, store_L18])`: the fields both hold, layers concatenated."""

    def __init__(self, stores: Sequence[ActivationStore]):
        stores = list(stores)
        if len(stores) < 2:
            raise ValueError("a StackedStore joins at least two stores")
        first = stores[0]
        for other in stores[1:]:
            for key in SAME:
                if other.manifest.get(key) != first.manifest.get(key):
                    raise StoreMismatchError(
                        f"the stores at {first.path} and {other.path} differ in {key} "
                        f"({first.manifest.get(key)!r} vs {other.manifest.get(key)!r}): collect "
                        "both layers from the same corpus with the same settings"
                    )
            if other.corpus.get("fingerprint") != first.corpus.get("fingerprint"):
                raise StoreMismatchError(
                    f"the stores at {first.path} and {other.path} were collected from different "
                    "text: collect both layers from the same corpus"
                )
        layers = [s.layer for s in stores]
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers {layers} repeat: stack stores of different layers")
        n = min(len(s.chunks) for s in stores)
        for i in range(n):  # cheap: token ids only, once
            tokens = first.read_chunk(i, ("tokens",))["tokens"]
            for other in stores[1:]:
                if not torch.equal(other.read_chunk(i, ("tokens",))["tokens"], tokens):
                    raise StoreMismatchError(
                        f"chunk {i} holds different contexts in {first.path} and {other.path}: "
                        "collect both layers from the same corpus with the same settings"
                    )
        fields = [f for f in first.fields if all(f in s.fields for s in stores)]
        manifest = dict(first.manifest) | {"fields": fields}
        super().__init__(first.path, manifest)
        self.chunks = first.chunks[:n]
        self.stores = stores

    @property
    def layers(self) -> list[int]:
        return [s.layer for s in self.stores]

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.stores]

    def field_shape(self, field: str) -> tuple[int, ...]:
        shape = super().field_shape(field)
        if not shape:
            return shape  # tokens, position
        return (shape[0] * len(self.stores), *shape[1:])  # heads, or the feature axis

    def read_chunk(self, index: int, fields: Sequence[str] | None = None) -> dict[str, Tensor]:
        fields = tuple(self.fields if fields is None else fields)
        self._check_fields(fields)
        parts = [s.read_chunk(index, fields) for s in self.stores]
        out = {}
        for f in fields:
            if f in TOKEN_FIELDS:
                out[f] = parts[0][f]
            else:  # [n_tokens, heads, d] -> heads axis; [n_tokens, d] -> feature axis
                out[f] = torch.cat([p[f] for p in parts], dim=1)
        return out

    def __repr__(self) -> str:
        return (
            f"StackedStore(layers {self.layers} of {self.model_name}: {list(self.fields)}, "
            f"{self.n_tokens} tokens in {self.n_contexts} contexts, from {[str(p) for p in self.paths]})"
        )
