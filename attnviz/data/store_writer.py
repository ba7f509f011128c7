"""Writing an activation store: chunks appended crash-safely, the manifest as the truth, an
exclusive lock per directory (see attnviz.data.store for the layout and the reader)."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from attnviz._version import __version__
from attnviz.data.store import (
    FORMAT,
    FORMAT_VERSION,
    IDENTITY,
    LOCK,
    MANIFEST,
    ChunkInfo,
    chunk_name,
    chunk_problem,
    chunks_of,
    field_shapes,
    file_sha256,
    read_manifest,
)
from attnviz.errors import StoreMismatchError


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StoreWriter:
    """Appends chunks to a store directory, crash-safely; used by `collect_activations`."""

    def __init__(self, root: Path, manifest: dict[str, Any], lock: Any = None):
        self.root = root
        self.manifest = manifest
        self._lock = lock

    def close(self) -> None:
        """Let another collection write here (closing the lock file releases its lock)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], header: dict[str, Any], overwrite: bool = False
    ) -> StoreWriter:
        """Start a store, or resume the one at `path` if it was made with the same identity
        (the IDENTITY keys of `header`); otherwise StoreMismatchError."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"{root} is a file: give a directory for the store")
        root.mkdir(parents=True, exist_ok=True)
        lock = _lock_store(root)
        try:
            if overwrite:
                _remove_store_files(root)
            header = json.loads(json.dumps(header))  # tuples -> lists, as they are read back
            if (root / MANIFEST).exists():
                manifest = read_manifest(root)
                _check_identity(root, manifest, header)
                if manifest.get("chunk_contexts") != header.get("chunk_contexts"):
                    warnings.warn(
                        f"resuming the store at {root} with its own chunk_contexts="
                        f"{manifest.get('chunk_contexts')} (not {header.get('chunk_contexts')}), "
                        "so that its chunks stay aligned",
                        stacklevel=3,
                    )
            else:
                manifest = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "attnviz_version": __version__,
                    **header,
                    "field_shapes": field_shapes(header["spec"], header["fields"]),
                    "target": {"n_tokens": 0, "n_contexts": 0},
                    "n_contexts": 0,
                    "n_tokens": 0,
                    "chunks": [],
                    "created": _now(),
                    "complete": False,
                    "corpus_exhausted": False,
                }
            writer = cls(root, manifest, lock)
            writer._clean()
            writer._save()
            return writer
        except BaseException:
            lock.close()  # a refused or failed open must not keep the store locked
            raise

    # ---- state -------------------------------------------------------------------------

    @property
    def chunk_contexts(self) -> int:
        return int(self.manifest["chunk_contexts"])

    @property
    def chunks(self) -> dict[int, ChunkInfo]:
        return {c.index: c for c in chunks_of(self.manifest)}

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def corpus_exhausted(self) -> bool:
        return bool(self.manifest.get("corpus_exhausted", False))

    @property
    def n_contexts(self) -> int:
        return sum(c.n_contexts for c in self.chunks.values())

    def _save(self) -> None:
        chunks = sorted(self.chunks.values(), key=lambda c: c.index)
        self.manifest["chunks"] = [asdict(c) for c in chunks]
        self.manifest["n_contexts"] = sum(c.n_contexts for c in chunks)
        self.manifest["n_tokens"] = sum(c.n_tokens for c in chunks)
        self.manifest["updated"] = _now()
        _atomic_write_json(self.root / MANIFEST, self.manifest)

    def _clean(self) -> None:
        """Remove what a crash can leave behind: temporary files, chunk files the manifest does
        not list, and listed chunks that are missing or the wrong size (they are redone)."""
        listed = self.chunks
        names = {c.file for c in listed.values()}
        for p in self.root.iterdir():
            stray_chunk = p.name.startswith("chunk-") and p.name.endswith(".safetensors")
            temp = p.name.startswith(".") and p.name.endswith(".tmp")
            if (stray_chunk and p.name not in names) or temp:
                p.unlink()
        bad = {}
        for index, chunk in listed.items():
            problem = chunk_problem(self.root, chunk, self.manifest["fields"])
            if problem:
                bad[index] = problem
        if bad:
            warnings.warn(
                "redoing chunks of the store at "
                f"{self.root}: " + "; ".join(f"{listed[i].file} {p}" for i, p in bad.items()),
                stacklevel=3,
            )
            self.manifest["complete"] = False  # it has a hole now
            for index in bad:
                self.remove_chunk(index)

    # ---- changes -----------------------------------------------------------------------

    def set_target(self, n_tokens: int, n_contexts: int) -> None:
        self.manifest["target"] = {"n_tokens": n_tokens, "n_contexts": n_contexts}
        self.manifest["complete"] = False
        self.manifest["corpus_exhausted"] = False
        self._save()

    def remove_chunk(self, index: int) -> None:
        """Unlist a chunk, then delete its file (a crash in between leaves a stray, cleaned later)."""
        chunk = self.chunks.get(index)
        if chunk is None:
            return
        self.manifest["chunks"] = [c for c in self.manifest["chunks"] if c["index"] != index]
        self._save()
        (self.root / chunk.file).unlink(missing_ok=True)

    def write_chunk(self, index: int, tensors: dict[str, Tensor], n_contexts: int) -> ChunkInfo:
        """Write chunk `index` (contexts [index*chunk_contexts, +n_contexts)) and list it."""
        n_ctx = self.manifest["n_ctx"]
        n_tokens = n_contexts * n_ctx
        expected = {**self.manifest["field_shapes"], "tokens": [], "position": []}
        if set(tensors) != set(expected):
            raise ValueError(f"chunk fields {sorted(tensors)} != store fields {sorted(expected)}")
        for name, shape in expected.items():
            if list(tensors[name].shape) != [n_tokens, *shape]:
                raise ValueError(
                    f"{name} has shape {list(tensors[name].shape)}, expected {[n_tokens, *shape]}"
                )
        self.remove_chunk(index)
        chunk_file = chunk_name(index)
        tmp = self.root / f".{chunk_file}.tmp"
        first = index * self.chunk_contexts
        # One metadata key: safetensors writes a dict's keys in a random order, which would
        # make the bytes differ from run to run.
        info = {"first_context": first, "n_contexts": n_contexts, "n_ctx": n_ctx}
        metadata = {"attnviz_chunk": json.dumps(info, sort_keys=True)}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        chunk = ChunkInfo(
            index=index,
            file=chunk_file,
            first_context=first,
            n_contexts=n_contexts,
            n_tokens=n_tokens,
            bytes=tmp.stat().st_size,
            sha256=file_sha256(tmp),
        )
        os.replace(tmp, self.root / chunk_file)
        self._commit(chunk)
        return chunk

    def _commit(self, chunk: ChunkInfo) -> None:
        """List a chunk whose file is in place (the second rename of a write)."""
        self.manifest["chunks"].append(asdict(chunk))
        self._save()

    def read_tokens(self, index: int) -> Tensor:
        """The stored token ids [n_tokens] of a chunk."""
        with safe_open(str(self.root / self.chunks[index].file), framework="pt") as f:
            return f.get_tensor("tokens")

    def finish(self, corpus_exhausted: bool = False) -> None:
        self.manifest["complete"] = True
        self.manifest["corpus_exhausted"] = corpus_exhausted
        self._save()


def _lock_store(root: Path) -> Any:
    """An exclusive lock on the store, so two collections never write one directory at once."""
    handle = open(root / LOCK, "a")  # noqa: SIM115 - held open for the writer's life
    try:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: no lock, as before
        pass
    except OSError:
        handle.close()
        raise StoreMismatchError(
            f"another collection is writing to {root} right now: wait for it to finish, or "
            "collect into another directory"
        ) from None
    return handle


def _remove_store_files(root: Path) -> None:
    """Delete a store's own files only (never anything else a user put in the directory)."""
    for p in root.iterdir():
        ours = p.name == MANIFEST or (p.name.startswith("chunk-") and p.suffix == ".safetensors")
        if ours or (p.name.startswith(".") and p.name.endswith(".tmp")):
            p.unlink()


def _describe(key: str, value: Any) -> str:
    if key == "corpus":
        return f"{value['name']!r} (fingerprint {value['fingerprint'][:12]})"
    if key == "spec":
        return json.dumps(value, sort_keys=True)
    return repr(value)


def _check_identity(root: Path, manifest: dict[str, Any], header: dict[str, Any]) -> None:
    for key, label in IDENTITY.items():
        have, want = manifest.get(key), header.get(key)
        if key == "corpus":  # the text decides, not its name (a moved folder is the same corpus)
            same = (have or {}).get("fingerprint") == (want or {}).get("fingerprint")
        else:
            same = have == want
        if not same:
            raise StoreMismatchError(
                f"the store at {root} was collected with {label} {_describe(key, have)}, but "
                f"this collection uses {label} {_describe(key, want)}: collect into a new "
                "directory, or pass overwrite=True to replace the old store"
            )
