"""Corpora (pydocs, local text, Hugging Face streaming) and fixed-length contexts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types

import pytest
import torch

import attnviz.hub
from attnviz.data import (
    TextFilesCorpus,
    UnknownCorpusError,
    batched_contexts,
    contexts,
    get_corpus,
    list_corpora,
)
from attnviz.data import corpora as corpora_module
from attnviz.errors import EmptyTextError, ModelUnavailableError

BOS = 0


# ---- pydocs ---------------------------------------------------------------------------------


def test_pydocs_is_real_prose_in_a_fixed_order():
    from pydoc_data.topics import topics

    corpus = get_corpus("pydocs")
    docs = list(corpus.documents())
    assert len(docs) > 1000
    assert sum(map(len, docs)) > 1_000_000  # the manual alone is ~465k characters
    assert all(len(d) >= 200 for d in docs)
    assert len(set(docs)) == len(docs)
    first_topic = topics[sorted(topics)[0]]
    assert docs[0] == first_topic  # the reference manual comes first
    assert any("Return a new list" in d or "Return a list" in d for d in docs)  # docstrings follow
    assert list(corpus.documents()) == docs
    assert get_corpus("pydocs").fingerprint == corpus.fingerprint


def test_pydocs_fingerprint_does_not_depend_on_what_was_imported():
    # This process has torch, transformers, nnsight and pytest loaded (nnsight adds a method to
    # `object`); a bare interpreter must still read the same text, or resuming would fail.
    import nnsight  # noqa: F401

    code = "from attnviz.data.corpora import get_corpus; print(get_corpus('pydocs').fingerprint)"
    fresh = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert fresh.stdout.strip() == get_corpus("pydocs").fingerprint


# ---- local text -----------------------------------------------------------------------------


def test_text_file_corpora(tmp_path):
    (tmp_path / "a.txt").write_text("The first document.\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.md").write_text("# The second\n\nIn markdown.")
    rows = [{"text": "third"}, {"text": "   "}, {"text": "fourth", "id": 4}]
    (sub / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "ignored.csv").write_text("not,text\n")
    (tmp_path / ".hidden.txt").write_text("hidden")

    corpus = get_corpus(tmp_path)
    assert isinstance(corpus, TextFilesCorpus)
    assert list(corpus.documents()) == [
        "The first document.\n",
        "# The second\n\nIn markdown.",
        "third",
        "fourth",
    ]
    assert list(get_corpus(str(sub / "c.jsonl")).documents()) == ["third", "fourth"]
    assert list(get_corpus(sub / "b.md").documents()) == ["# The second\n\nIn markdown."]

    # The fingerprint follows the content, not the folder's location.
    before = corpus.fingerprint
    assert get_corpus(tmp_path).fingerprint == before
    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "-moved"))
    assert get_corpus(moved).fingerprint == before
    (moved / "a.txt").write_text("The first document, edited.\n")
    assert get_corpus(moved).fingerprint != before


def test_text_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(EmptyTextError, match=r"bad\.jsonl:2 .*'text' field"):
        list(get_corpus(bad).documents())
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n")
    with pytest.raises(UnknownCorpusError, match=r"not a text corpus: use a \.txt"):
        get_corpus(csv)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyTextError, match=r"no \.txt"):
        get_corpus(empty)


def test_unknown_corpus_lists_the_known_names():
    with pytest.raises(UnknownCorpusError) as info:
        get_corpus("wikipedia-please")
    message = str(info.value)
    for name in ("pydocs", "openwebtext", "pile", "tinystories", "hf:<repo>"):
        assert name in message
    with pytest.raises(UnknownCorpusError, match="hf:<owner>/<dataset>"):
        get_corpus("hf:not-a-repo")


def test_list_corpora():
    rows = list_corpora()
    by_name = {r["name"]: r for r in rows}
    assert by_name["pydocs"]["offline"] is True
    assert by_name["openwebtext"]["source"] == "hf:Skylion007/openwebtext:train"
    assert {"pile", "tinystories"} <= set(by_name)
    assert all(set(r) == {"name", "source", "offline", "description"} for r in rows)


# ---- Hugging Face streaming -----------------------------------------------------------------


@pytest.fixture
def online_env(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _fails_fast_naming_pydocs(name: str) -> str:
    corpus = get_corpus(name)
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as info:
        next(iter(corpus.documents()))
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "'pydocs'" in message and ".txt" in message and ".jsonl" in message
    return message


def test_hf_offline_env_fails_at_once(online_env):
    online_env.setenv("HF_DATASETS_OFFLINE", "1")
    message = _fails_fast_naming_pydocs("openwebtext")
    assert "Skylion007/openwebtext" in message and "HF_DATASETS_OFFLINE" in message


def test_hf_without_network_fails_at_once(online_env):
    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    online_env.setattr(attnviz.hub.socket, "create_connection", refuse)
    message = _fails_fast_naming_pydocs("hf:roneneldan/TinyStories:validation")
    assert "cannot be reached" in message


def test_hf_without_datasets_package(online_env):
    online_env.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    assert "attnviz[online]" in _fails_fast_naming_pydocs("pile")


def test_hf_streams_with_load_dataset(online_env):
    calls = []

    def load_dataset(repo, split=None, streaming=False):
        calls.append((repo, split, streaming))
        return iter([{"text": "one story"}, {"text": ""}, {"text": "another story"}])

    online_env.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    online_env.setattr(corpora_module, "hub_reachable", lambda timeout=3.0: True)
    corpus = get_corpus("hf:roneneldan/TinyStories:validation")
    assert list(corpus.documents()) == ["one story", "another story"]
    assert calls == [("roneneldan/TinyStories", "validation", True)]
    assert corpus.fingerprint != get_corpus("tinystories").fingerprint  # another split


# ---- contexts -------------------------------------------------------------------------------


def _stream(tokenizer, docs, sep):
    ids = []
    for d in docs:
        ids += tokenizer(d, add_special_tokens=False)["input_ids"] + [sep]
    return ids


def test_contexts_start_with_bos_and_follow_the_stream(tmp_path, tiny_tokenizer):
    docs = [
        f"Document number {i} says something about attention heads. " * (i + 1) for i in range(12)
    ]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    corpus = get_corpus(tmp_path / "docs.jsonl")
    n_ctx = 16
    rows = list(contexts(corpus, tiny_tokenizer, n_ctx, BOS))
    stream = _stream(tiny_tokenizer, docs, BOS)
    assert len(rows) == len(stream) // (n_ctx - 1)  # the remainder is dropped
    for row in rows:
        assert row.dtype == torch.long and row.shape == (n_ctx,) and row[0] == BOS
    body = torch.cat([r[1:] for r in rows]).tolist()
    assert body == stream[: len(body)]
    again = list(contexts(corpus, tiny_tokenizer, n_ctx, BOS, n_contexts=3))
    assert len(again) == 3 and all(torch.equal(a, b) for a, b in zip(again, rows[:3], strict=True))

    # Without a BOS rows are plain slices of the stream, separated by end-of-text.
    eos = tiny_tokenizer.eos_token_id
    plain = list(contexts(corpus, tiny_tokenizer, n_ctx, None))
    assert torch.cat(plain).tolist() == _stream(tiny_tokenizer, docs, eos)[: len(plain) * n_ctx]

    batches = list(batched_contexts(corpus, tiny_tokenizer, n_ctx, BOS, batch_size=4))
    assert [b.shape for b in batches[:-1]] == [(4, n_ctx)] * (len(batches) - 1)
    assert torch.equal(torch.cat(batches), torch.stack(rows))


def test_contexts_errors(tmp_path, tiny_tokenizer):
    (tmp_path / "short.txt").write_text("Only a few words.")
    (tmp_path / "blank.txt").write_text("   \n\n")
    with pytest.raises(ValueError, match="n_ctx must be at least 2"):
        contexts("pydocs", tiny_tokenizer, 1, BOS)
    with pytest.raises(EmptyTextError, match=r"short\.txt.*fewer than one context of 128"):
        list(contexts(tmp_path / "short.txt", tiny_tokenizer, 128, BOS))
    with pytest.raises(EmptyTextError, match=r"blank\.txt.*no tokens"):
        list(contexts(tmp_path / "blank.txt", tiny_tokenizer, 8, BOS))
