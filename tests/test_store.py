"""The activation store: collection, crash-safe resume, mismatch and corruption errors, batches."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from attnviz.data import ActivationStore, collect_activations, contexts, get_corpus
from attnviz.data import collect as collect_module
from attnviz.data.store_writer import StoreWriter
from attnviz.errors import (
    ContextTooLongError,
    CorruptStoreError,
    LayerOutOfRangeError,
    ModelUnavailableError,
    StoreMismatchError,
)

N_CTX = 32
N_CONTEXTS = 22  # 5 full chunks of 4 and a last one of 2
# batch_size 3 does not divide chunk_contexts 4, so batches must restart at each chunk.
ARGS = dict(
    layer=1,
    n_tokens=N_CONTEXTS * N_CTX,
    n_ctx=N_CTX,
    batch_size=3,
    chunk_contexts=4,
    fields=("resid_normed", "q", "k"),
    progress=False,
)


def collect(adapter, out_dir, **overrides):
    return collect_activations(adapter, "pydocs", out_dir=out_dir, **{**ARGS, **overrides})


def file_hashes(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob("chunk-*.safetensors"))
    }


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


class Crash(RuntimeError):
    pass


def crash_after(monkeypatch, method: str, n_calls: int) -> None:
    """Make StoreWriter.<method> raise on its (n_calls+1)-th call, as a killed process would."""
    real = getattr(StoreWriter, method)
    calls = {"n": 0}

    def wrapper(self, *args, **kwargs):
        if calls["n"] == n_calls:
            raise Crash(f"killed in {method}")
        calls["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, method, wrapper)


@pytest.fixture(scope="module")
def reference(tiny_llama_adapter, tmp_path_factory):
    """An uninterrupted collection, for the others to compare against."""
    root = tmp_path_factory.mktemp("reference")
    collect(tiny_llama_adapter, root)
    return root


def test_store_holds_what_the_adapter_computes(tiny_llama_adapter, reference):
    store = ActivationStore.open(reference, expect_model="tiny-llama", expect_layer=1)
    spec = tiny_llama_adapter.spec
    assert store.complete and store.n_contexts == N_CONTEXTS and len(store) == N_CONTEXTS * N_CTX
    assert [c.n_contexts for c in store.chunks] == [4, 4, 4, 4, 4, 2]
    store.verify()

    m = manifest(reference)
    assert m["model"] == "tiny-llama" and m["spec"] == spec.to_dict() and m["layer"] == 1
    assert m["fields"] == ["resid_normed", "q", "k"] and m["dtype"] == "float32"
    assert m["n_ctx"] == N_CTX and m["corpus"] == {
        "name": "pydocs",
        "fingerprint": get_corpus("pydocs").fingerprint,
    }
    assert m["target"] == {"n_tokens": N_CONTEXTS * N_CTX, "n_contexts": N_CONTEXTS}
    assert m["attnviz_version"] and m["created"] and m["complete"] is True

    chunk = store.read_chunk(1, ("resid_normed", "q", "k", "tokens", "position"))
    n = 4 * N_CTX
    assert chunk["resid_normed"].shape == (n, spec.d_model)
    assert chunk["q"].shape == (n, spec.n_heads, spec.d_head)
    assert chunk["k"].shape == (n, spec.n_kv_heads, spec.d_head)
    assert chunk["tokens"].dtype == torch.int32 and chunk["position"].dtype == torch.int16
    assert torch.equal(chunk["position"], torch.arange(N_CTX, dtype=torch.int16).repeat(4))

    # Chunk 1 holds contexts 4-7 of the corpus, and their activations.
    rows = list(contexts("pydocs", tiny_llama_adapter.tokenizer, N_CTX, 0, n_contexts=8))[4:]
    tokens = torch.stack(rows)
    assert torch.equal(chunk["tokens"].long().reshape(4, N_CTX), tokens)
    acts = tiny_llama_adapter.attention(tokens, 1, ("resid_normed", "q", "k"))
    torch.testing.assert_close(chunk["q"].reshape(4, N_CTX, -1, spec.d_head), acts.q)
    torch.testing.assert_close(chunk["k"].reshape(4, N_CTX, -1, spec.d_head), acts.k)
    torch.testing.assert_close(chunk["resid_normed"].reshape(4, N_CTX, -1), acts.resid_normed)


def test_interrupted_collection_resumes_to_the_same_bytes(
    tiny_llama_adapter, reference, tmp_path, monkeypatch
):
    crash_after(monkeypatch, "write_chunk", 3)
    with pytest.raises(Crash):
        collect(tiny_llama_adapter, tmp_path)
    assert len(manifest(tmp_path)["chunks"]) == 3 and not manifest(tmp_path)["complete"]
    with pytest.raises(CorruptStoreError, match=r"incomplete.*re-run collect_activations"):
        ActivationStore.open(tmp_path)
    assert ActivationStore.open(tmp_path, require_complete=False).n_contexts == 12
    monkeypatch.undo()

    computed = []
    real = collect_module.compute_chunk
    monkeypatch.setattr(
        collect_module,
        "compute_chunk",
        lambda adapter, tokens, *a: computed.append(len(tokens)) or real(adapter, tokens, *a),
    )
    store = collect(tiny_llama_adapter, tmp_path)
    assert computed == [4, 4, 2]  # only the three missing chunks
    assert file_hashes(tmp_path) == file_hashes(reference)
    assert manifest(tmp_path)["chunks"] == manifest(reference)["chunks"]
    assert store.complete

    # Finished: running again computes nothing.
    computed.clear()
    collect(tiny_llama_adapter, tmp_path)
    assert computed == []


def test_a_smaller_store_extends_to_the_same_bytes(tiny_llama_adapter, reference, tmp_path):
    # 10 contexts: chunks of 4, 4 and a partial 2, which must be redone with 4 when extended.
    small = collect(tiny_llama_adapter, tmp_path, n_tokens=10 * N_CTX)
    assert [c.n_contexts for c in small.chunks] == [4, 4, 2]
    collect(tiny_llama_adapter, tmp_path)
    assert manifest(tmp_path)["chunks"] == manifest(reference)["chunks"]
    assert file_hashes(tmp_path) == file_hashes(reference)


def test_a_chunk_missing_from_the_manifest_is_redone(
    tiny_llama_adapter, reference, tmp_path, monkeypatch
):
    # Killed between the chunk's rename and the manifest's: chunk 2 is on disk, unlisted.
    crash_after(monkeypatch, "_commit", 2)
    with pytest.raises(Crash):
        collect(tiny_llama_adapter, tmp_path)
    monkeypatch.undo()
    stray = tmp_path / "chunk-00002.safetensors"
    assert stray.exists()
    assert [c["file"] for c in manifest(tmp_path)["chunks"]] == [
        "chunk-00000.safetensors",
        "chunk-00001.safetensors",
    ]
    stray.write_bytes(stray.read_bytes()[:100])  # whatever it holds is not trusted
    (tmp_path / ".chunk-00003.safetensors.tmp").write_bytes(b"half a file")

    collect(tiny_llama_adapter, tmp_path)
    assert file_hashes(tmp_path) == file_hashes(reference)
    assert manifest(tmp_path)["chunks"] == manifest(reference)["chunks"]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"layer": 0}, ["layer 1", "layer 0"]),
        ({"fields": ("resid_normed", "q", "k", "v")}, ["fields", "'v'"]),
        ({"n_ctx": 16, "n_tokens": 22 * 16}, ["n_ctx 32", "n_ctx 16"]),
        ({"dtype": "float16"}, ["'float32'", "'float16'"]),
        ({"corpus": "text"}, ["corpus 'pydocs'", "notes.txt"]),
        ({"model": "other-model"}, ["'tiny-llama'", "'other-model'"]),
    ],
)
def test_a_store_for_something_else_is_refused(
    tiny_llama_adapter, reference, tmp_path, change, words
):
    root = tmp_path / "store"
    shutil.copytree(reference, root)
    before = file_hashes(root)
    adapter = tiny_llama_adapter
    change = dict(change)
    corpus = "pydocs"
    if change.pop("corpus", None):
        corpus = tmp_path / "notes.txt"
        corpus.write_text("Attention heads move information between positions. " * 200)
    if name := change.pop("model", None):
        adapter = copy.copy(tiny_llama_adapter)
        adapter.spec = dataclasses.replace(adapter.spec, name=name)
    with pytest.raises(StoreMismatchError) as info:
        collect_activations(adapter, corpus, out_dir=root, **{**ARGS, **change})
    message = str(info.value)
    assert all(w in message for w in words), message
    assert "new directory" in message and "overwrite=True" in message
    assert file_hashes(root) == before  # nothing was touched

    replaced = collect_activations(
        adapter, corpus, out_dir=root, **{**ARGS, **change}, overwrite=True
    )
    replaced.verify()
    assert replaced.complete


def test_open_checks_the_expected_model_and_layer(reference):
    with pytest.raises(StoreMismatchError, match=r"layer 1.*layer 3"):
        ActivationStore.open(reference, expect_layer=3)
    with pytest.raises(StoreMismatchError, match=r"'tiny-llama'.*'smollm2-135m'"):
        ActivationStore.open(reference, expect_model="smollm2-135m")
    with pytest.raises(StoreMismatchError, match=r"no \['z'\]"):
        ActivationStore.open(reference, expect_fields=("q", "z"))
    with pytest.raises(CorruptStoreError, match="not an activation store"):
        ActivationStore.open(reference.parent)


def test_a_damaged_chunk_is_detected_and_redone(tiny_llama_adapter, reference, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(reference, root)
    chunk = root / "chunk-00001.safetensors"
    data = chunk.read_bytes()

    chunk.write_bytes(data[: len(data) // 2])  # truncated: caught cheaply on open
    with pytest.raises(CorruptStoreError, match=r"chunk-00001.*bytes.*re-run collect"):
        ActivationStore.open(root)

    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # same size, other bytes: only verify() reads them all
    chunk.write_bytes(bytes(flipped))
    store = ActivationStore.open(root)
    with pytest.raises(CorruptStoreError, match=r"chunk-00001.*sha256.*delete"):
        store.verify()

    chunk.write_bytes(b"\xff" * len(data))  # right size, broken header
    with pytest.raises(CorruptStoreError, match=r"chunk-00001.*header"):
        ActivationStore.open(root)

    # The fix the message gives: delete the chunk and collect again.
    chunk.unlink()
    with pytest.warns(UserWarning, match=r"chunk-00001.*missing"):
        collect(tiny_llama_adapter, root).verify()
    assert file_hashes(root) == file_hashes(reference)


def test_token_batches_cover_every_token_once(reference):
    store = ActivationStore.open(reference)
    every = [
        store.read_chunk(i, ("resid_normed",))["resid_normed"] for i in range(len(store.chunks))
    ]
    rows = torch.cat(every)
    expected = Counter(r.numpy().tobytes() for r in rows)

    reads = []
    real = ActivationStore.read_chunk
    store.read_chunk = lambda i, fields=None: reads.append(i) or real(store, i, fields)
    batches = list(
        store.batches(50, fields=("resid_normed", "q", "k", "position"), buffer_chunks=2, seed=1)
    )
    assert sorted(reads) == list(range(len(store.chunks)))  # each chunk read once per epoch
    sizes = [b["q"].shape[0] for b in batches]
    assert sizes == [50] * (len(store) // 50) + [len(store) % 50]
    assert batches[0]["q"].shape[1:] == (4, 16) and batches[0]["k"].shape[1:] == (2, 16)
    got = torch.cat([b["resid_normed"] for b in batches])
    assert Counter(r.numpy().tobytes() for r in got) == expected
    assert not torch.equal(got, rows)  # shuffled

    again = torch.cat([b["resid_normed"] for b in store.batches(50, seed=1, buffer_chunks=2)])
    other = torch.cat([b["resid_normed"] for b in store.batches(50, seed=2, buffer_chunks=2)])
    assert torch.equal(again, got) and not torch.equal(other, got)
    ordered = torch.cat([b["resid_normed"] for b in store.batches(64, shuffle=False)])
    assert torch.equal(ordered, rows)
    dropped = list(store.batches(50, drop_last=True))
    assert sum(b["q"].shape[0] for b in dropped) == len(store) // 50 * 50
    half = next(iter(store.batches(8, dtype=torch.float16, fields=("q", "tokens"))))
    assert half["q"].dtype == torch.float16 and half["tokens"].dtype == torch.int32


def test_context_batches_recompute_the_patterns(tiny_llama_adapter, reference):
    store = ActivationStore.open(reference)
    spec = tiny_llama_adapter.spec
    batches = list(store.batches(5, fields=("q", "k", "tokens", "position"), by="context"))
    assert [b["tokens"].shape for b in batches] == [(5, N_CTX)] * 4 + [(2, N_CTX)]
    b = batches[0]
    assert b["q"].shape == (5, N_CTX, spec.n_heads, spec.d_head)
    assert b["k"].shape == (5, N_CTX, spec.n_kv_heads, spec.d_head)
    assert (b["tokens"][:, 0] == 0).all()
    assert (b["position"] == torch.arange(N_CTX)).all()
    seen = Counter(t.numpy().tobytes() for b in batches for t in b["tokens"])
    assert sum(seen.values()) == N_CONTEXTS

    # Whole contexts of pre-rotation q and k give back the model's own patterns.
    tokens = b["tokens"].long()
    pattern = tiny_llama_adapter.attention(tokens, 1, ("pattern",)).pattern
    torch.testing.assert_close(tiny_llama_adapter.pattern_from_qk(b["q"], b["k"], 1), pattern)


def test_collect_argument_errors(tiny_llama_adapter, tmp_path):
    with pytest.raises(ContextTooLongError, match=r"n_ctx=512.*256"):
        collect(tiny_llama_adapter, tmp_path, n_ctx=512)
    with pytest.raises(LayerOutOfRangeError, match="layers 0-1"):
        collect(tiny_llama_adapter, tmp_path, layer=2)
    with pytest.raises(ValueError, match="recompute patterns"):
        collect(tiny_llama_adapter, tmp_path, fields=("q", "pattern"))
    with pytest.raises(ValueError, match="dtype"):
        collect(tiny_llama_adapter, tmp_path, dtype="int8")
    assert not (tmp_path / "manifest.json").exists()  # refused before any work


def test_a_corpus_that_runs_out(tiny_llama_adapter, tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("Queries meet keys, and the softmax decides where to look. " * 40)
    with pytest.warns(UserWarning, match="ran out after"):
        store = collect_activations(
            tiny_llama_adapter,
            text,
            out_dir=tmp_path / "s",
            **{**ARGS, "n_tokens": 10_000, "dtype": "bfloat16"},
        )
    assert store.complete and 0 < store.n_contexts < 10_000 // N_CTX
    assert store.read_chunk(0)["q"].dtype == torch.bfloat16
    assert manifest(tmp_path / "s")["corpus_exhausted"] is True
    again = collect_activations(
        tiny_llama_adapter,
        text,
        out_dir=tmp_path / "s",
        **{**ARGS, "n_tokens": 10_000, "dtype": "bfloat16"},
    )
    assert again.n_contexts == store.n_contexts


def test_a_moved_text_folder_is_the_same_corpus(tiny_llama_adapter, tmp_path):
    text = tmp_path / "texts"
    text.mkdir()
    (text / "a.md").write_text("Keys advertise, queries search, values carry the content. " * 60)
    args = {**ARGS, "n_tokens": 8 * N_CTX}
    store = collect_activations(tiny_llama_adapter, text, out_dir=tmp_path / "s", **args)
    moved = text.rename(tmp_path / "moved")
    again = collect_activations(tiny_llama_adapter, moved, out_dir=tmp_path / "s", **args)
    assert again.chunks == store.chunks


def test_an_offline_corpus_fails_before_touching_the_disk(
    tiny_llama_adapter, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="'pydocs'"):
        collect_activations(tiny_llama_adapter, "tinystories", out_dir=tmp_path / "s", **ARGS)
    assert not (tmp_path / "s").exists()


def test_two_collections_never_write_one_store_at_once(tiny_llama_adapter, tmp_path):
    header = {"model": "m", "spec": tiny_llama_adapter.spec.to_dict(), "layer": 1,
              "fields": ["q"], "dtype": "float32", "n_ctx": 8, "chunk_contexts": 2,
              "corpus": {"name": "c", "fingerprint": "f"}}  # fmt: skip
    with (
        StoreWriter.open(tmp_path / "s", header),
        pytest.raises(StoreMismatchError, match="another collection is writing"),
    ):
        StoreWriter.open(tmp_path / "s", header)
    StoreWriter.open(tmp_path / "s", header).close()  # free again once the first is done
