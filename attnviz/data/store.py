"""The activation store: one layer's attention activations over many contexts, on disk.

Layout of a store directory:

    manifest.json             what was collected, how, and the list of finished chunks
    chunk-00000.safetensors   a whole number of contexts, the [pos] axis flattened into tokens:
    chunk-00001.safetensors   resid_normed [n_tokens d_model], q [n_tokens n_heads d_head],
    ...                       k [n_tokens n_kv_heads d_head], ..., tokens int32 [n_tokens],
                              position int16/int32 [n_tokens] (position within its context)

q and k are before rotation (rotate them with the adapter to recompute patterns).

Crash safety: a chunk is written under a temporary name and renamed into place, then the manifest is
rewritten (temporary name + rename) to list it. The manifest is the truth: a chunk file it does not
list is the trace of a crash between the two renames and is removed and redone; a chunk it lists
whose size is wrong is redone too. Chunk i always holds contexts [i*chunk_contexts, ...), so a
resumed collection writes exactly the bytes an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from attnviz._version import __version__
from attnviz.errors import CorruptStoreError, StoreMismatchError
from attnviz.models.adapter import ACTIVATION_FIELDS

FORMAT = "attnviz-activation-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
TOKEN_FIELDS = ("tokens", "position")  # stored with every chunk, whatever the fields
# A pattern is [heads dest src] per context, not per token; recompute it from q and k instead.
STORABLE_FIELDS = tuple(f for f in ACTIVATION_FIELDS if f != "pattern")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Keys of the manifest that must match for a collection to resume into an existing store,
# with the words used to name them in errors.
IDENTITY = {
    "model": "model",
    "layer": "layer",
    "fields": "fields",
    "corpus": "corpus",
    "n_ctx": "n_ctx",
    "dtype": "dtype",
    "spec": "model spec",
}


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.safetensors"


def field_shapes(spec: dict[str, Any], fields: Sequence[str]) -> dict[str, list[int]]:
    """The per-token shape of each field: resid_pre, resid_normed [d_model]; q, q_rot, z
    [n_heads d_head]; k, k_rot, v [n_kv_heads d_head]."""
    heads = {
        "q": spec["n_heads"],
        "q_rot": spec["n_heads"],
        "z": spec["n_heads"],
        "k": spec["n_kv_heads"],
        "k_rot": spec["n_kv_heads"],
        "v": spec["n_kv_heads"],
    }
    shapes: dict[str, list[int]] = {}
    for f in fields:
        if f in ("resid_pre", "resid_normed"):
            shapes[f] = [spec["d_model"]]
        elif f in heads:
            shapes[f] = [heads[f], spec["d_head"]]
        else:
            raise ValueError(f"unknown store field {f!r}: choose from {STORABLE_FIELDS}")
    return shapes


def n_contexts_for(n_tokens: int, n_ctx: int) -> int:
    """Contexts needed to hold at least n_tokens tokens."""
    return math.ceil(n_tokens / n_ctx)


def position_dtype(n_ctx: int) -> torch.dtype:
    return torch.int16 if n_ctx <= torch.iinfo(torch.int16).max else torch.int32


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk file as the manifest lists it: contexts [first_context, +n_contexts)."""

    index: int
    file: str
    first_context: int
    n_contexts: int
    n_tokens: int
    bytes: int
    sha256: str


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise CorruptStoreError(
            f"{root} is not an activation store (it has no {MANIFEST}): make one with "
            "collect_activations(adapter, corpus, layer, n_tokens, out_dir)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptStoreError(
            f"{path} is not valid JSON ({e}): the store cannot be read; collect it again into a "
            "new directory, or with overwrite=True"
        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptStoreError(f"{path} is not the manifest of an attnviz activation store")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise StoreMismatchError(
            f"the store at {root} was written by a newer attnviz "
            f"({manifest.get('attnviz_version')}, format {manifest['format_version']}): "
            f"upgrade attnviz (this is {__version__}) to read it"
        )
    return manifest


def _read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, read without loading any tensor."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(f.read(n))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if 8 + n + max(ends, default=0) > size:
        raise ValueError("tensor data runs past the end of the file")
    return header


def chunk_problem(root: Path, chunk: ChunkInfo, fields: Sequence[str]) -> str | None:
    """Why a chunk cannot be read, checked cheaply (size and header), or None if it looks fine."""
    path = root / chunk.file
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != chunk.bytes:
        return f"is {size} bytes but the manifest says {chunk.bytes} (truncated or replaced?)"
    try:
        header = _read_header(path)
    except (ValueError, OSError, KeyError, TypeError, IndexError) as e:
        return f"has an unreadable safetensors header ({e})"
    for f in (*fields, *TOKEN_FIELDS):
        if f not in header:
            return f"has no tensor {f!r}"
        if header[f]["shape"][:1] != [chunk.n_tokens]:
            return f"holds {header[f]['shape'][:1]} tokens of {f!r}, not {chunk.n_tokens}"
    return None


def _corrupt(root: Path, chunk: ChunkInfo, problem: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"chunk {chunk.file} of the store at {root} {problem}: delete {root / chunk.file} and "
        "re-run collect_activations with the same arguments; it redoes just that chunk"
    )


def chunks_of(manifest: dict[str, Any]) -> list[ChunkInfo]:
    return [ChunkInfo(**c) for c in manifest.get("chunks", [])]


class ActivationStore:
    """Read access to a finished (or, with require_complete=False, partial) store."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self.chunks = chunks_of(manifest)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        expect_model: str | None = None,
        expect_layer: int | None = None,
        expect_fields: Sequence[str] | None = None,
        require_complete: bool = True,
    ) -> ActivationStore:
        """Open and check a store: the expected model / layer / fields, and each chunk's size
        and header (cheap; `verify()` also checks the bytes)."""
        root = Path(path)
        manifest = read_manifest(root)
        store = cls(root, manifest)
        wanted = (
            ("model", expect_model, store.model_name, f"model={store.model_name!r}"),
            ("layer", expect_layer, store.layer, f"layer={store.layer}"),
        )
        for what, want, have, fix in wanted:
            if want is not None and want != have:
                raise StoreMismatchError(
                    f"the store at {root} holds {what} {have!r}, but {what} {want!r} was "
                    f"expected: open a store collected for {want!r}, or use this one with {fix}"
                )
        if expect_fields is not None:
            missing = [f for f in expect_fields if f not in (*store.fields, *TOKEN_FIELDS)]
            if missing:
                raise StoreMismatchError(
                    f"the store at {root} has no {missing} (it holds {list(store.fields)}): "
                    f"collect one with fields={tuple(expect_fields)!r}"
                )
        if require_complete and not store.complete:
            raise CorruptStoreError(
                f"the store at {root} is incomplete ({store.n_tokens} of "
                f"{manifest['target']['n_tokens']} tokens; its collection was interrupted): "
                "re-run collect_activations with the same arguments to finish it, or open it "
                "with require_complete=False to read what is there"
            )
        for chunk in store.chunks:
            problem = chunk_problem(root, chunk, store.fields)
            if problem:
                raise _corrupt(root, chunk, problem)
        return store

    # ---- what it holds -----------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.manifest["model"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest["spec"]

    @property
    def layer(self) -> int:
        return self.manifest["layer"]

    @property
    def layers(self) -> list[int]:
        """The layers its fields come from (one; a StackedStore has several)."""
        return [self.layer]

    @property
    def paths(self) -> list[Path]:
        """Where it lies (one directory; a StackedStore reads several)."""
        return [self.path]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.manifest["fields"])

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.manifest["dtype"]]

    @property
    def n_ctx(self) -> int:
        return self.manifest["n_ctx"]

    @property
    def corpus(self) -> dict[str, str]:
        return self.manifest["corpus"]

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def n_contexts(self) -> int:
        return sum(c.n_contexts for c in self.chunks)

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks)

    def __len__(self) -> int:
        return self.n_tokens

    def field_shape(self, field: str) -> tuple[int, ...]:
        """Per-token shape, e.g. (n_heads, d_head) for q."""
        if field in TOKEN_FIELDS:
            return ()
        return tuple(self.manifest["field_shapes"][field])

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return (
            f"ActivationStore({str(self.path)!r}: {self.model_name} layer {self.layer}, "
            f"{list(self.fields)}, {self.n_tokens} tokens in {self.n_contexts} contexts of "
            f"{self.n_ctx}, {len(self.chunks)} chunks, {state})"
        )

    # ---- checking ----------------------------------------------------------------------

    def verify(self) -> None:
        """Check every chunk's size and sha256 against the manifest (reads every byte)."""
        for chunk in self.chunks:
            problem = chunk_problem(self.path, chunk, self.fields)
            if problem is None and file_sha256(self.path / chunk.file) != chunk.sha256:
                problem = "does not match its sha256 in the manifest (changed on disk)"
            if problem:
                raise _corrupt(self.path, chunk, problem)

    # ---- reading -----------------------------------------------------------------------

    def read_chunk(self, index: int, fields: Sequence[str] | None = None) -> dict[str, Tensor]:
        """The chosen fields of one chunk, each [n_tokens ...] (only those tensors are read)."""
        chunk = self.chunks[index]
        fields = tuple(self.fields if fields is None else fields)
        self._check_fields(fields)
        try:
            with safe_open(str(self.path / chunk.file), framework="pt", device="cpu") as f:
                return {name: f.get_tensor(name) for name in fields}
        except Exception as e:  # safetensors raises its own error type on bad files
            raise _corrupt(self.path, chunk, f"cannot be read ({type(e).__name__}: {e})") from e

    def _check_fields(self, fields: Sequence[str]) -> None:
        unknown = [f for f in fields if f not in (*self.fields, *TOKEN_FIELDS)]
        if unknown or not fields:
            raise ValueError(
                f"the store at {self.path} has no fields {unknown}: it holds "
                f"{[*self.fields, *TOKEN_FIELDS]}"
            )

    def batches(
        self,
        batch_size: int,
        fields: Sequence[str] = ("resid_normed", "q", "k"),
        shuffle: bool = True,
        seed: int = 0,
        by: str = "token",
        device: torch.device | str | None = None,
        buffer_chunks: int = 4,
        drop_last: bool = False,
        dtype: torch.dtype | None = None,
        chunks: Sequence[int] | None = None,
    ) -> Generator[dict[str, Tensor], None, None]:
        """One epoch of batches, each a dict field -> tensor.

        by="token": [batch ...] rows are single tokens (e.g. resid_normed [batch d_model]).
        by="context": [batch n_ctx ...] rows are whole contexts, for recomputing patterns.
        Shuffling reads `buffer_chunks` chunks (in a random order) at a time and shuffles within
        them, so memory stays bounded; every token appears exactly once per epoch. Float fields
        are cast to `dtype` when given. Pass a different seed for each epoch. `chunks` limits the
        epoch to those chunk indices (e.g. to hold the last chunk out for evaluation)."""
        fields = tuple(fields)
        self._check_fields(fields)
        if by not in ("token", "context"):
            raise ValueError(f"by must be 'token' or 'context', got {by!r}")
        if batch_size < 1 or buffer_chunks < 1:
            raise ValueError("batch_size and buffer_chunks must be >= 1")
        selected = list(range(len(self.chunks))) if chunks is None else list(chunks)
        if any(not 0 <= i < len(self.chunks) for i in selected):
            raise ValueError(f"chunk indices must lie in 0-{len(self.chunks) - 1}")
        return self._batches(
            batch_size, fields, shuffle, seed, by, device, buffer_chunks, drop_last, dtype, selected
        )

    def _units(self, index: int, fields: tuple[str, ...], by: str) -> dict[str, Tensor]:
        data = self.read_chunk(index, fields)
        if by == "context":
            data = {f: t.reshape(-1, self.n_ctx, *t.shape[1:]) for f, t in data.items()}
        return data

    def _batches(
        self,
        batch_size: int,
        fields: tuple[str, ...],
        shuffle: bool,
        seed: int,
        by: str,
        device: torch.device | str | None,
        buffer_chunks: int,
        drop_last: bool,
        dtype: torch.dtype | None,
        selected: list[int],
    ) -> Generator[dict[str, Tensor], None, None]:
        gen = torch.Generator().manual_seed(seed)
        n_chunks = len(selected)
        chunk_order = (
            torch.randperm(n_chunks, generator=gen).tolist() if shuffle else range(n_chunks)
        )
        order = [selected[i] for i in chunk_order]

        def out(data: dict[str, Tensor]) -> dict[str, Tensor]:
            if dtype is not None:
                data = {f: t.to(dtype) if t.is_floating_point() else t for f, t in data.items()}
            if device is not None:
                data = {f: t.to(device) for f, t in data.items()}
            return data

        carry: dict[str, Tensor] | None = None  # the remainder of a buffer, for the next one
        for start in range(0, n_chunks, buffer_chunks):
            parts = [self._units(i, fields, by) for i in order[start : start + buffer_chunks]]
            if carry is not None:
                parts.insert(0, carry)
            data = {f: torch.cat([p[f] for p in parts]) for f in fields}
            n = data[fields[0]].shape[0]
            perm = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
            full = n - n % batch_size
            for s in range(0, full, batch_size):
                idx = perm[s : s + batch_size]
                yield out({f: t[idx] for f, t in data.items()})
            carry = {f: t[perm[full:]] for f, t in data.items()} if full < n else None
        if carry is not None and not drop_last:
            yield out(carry)
