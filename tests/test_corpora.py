"""Corpora (pydocs, debian-docs, local text, Hugging Face streaming) and fixed-length contexts."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

import attnviz.hub
from attnviz.cli import main
from attnviz.data import (
    TextFilesCorpus,
    UnknownCorpusError,
    batched_contexts,
    contexts,
    debian_docs,
    doc_build,
    get_corpus,
    list_corpora,
)
from attnviz.data import corpora as corpora_module
from attnviz.data.doc_build import DocSource
from attnviz.data.html_text import page_text
from attnviz.errors import CorruptFileError, EmptyTextError, ModelUnavailableError

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
    for name in (
        "pydocs",
        "debian-docs[:heldout]",
        "openwebtext",
        "pile",
        "tinystories",
        "hf:<repo>",
    ):
        assert name in message
    with pytest.raises(UnknownCorpusError, match="hf:<owner>/<dataset>"):
        get_corpus("hf:not-a-repo")


def test_list_corpora():
    rows = list_corpora()
    by_name = {r["name"]: r for r in rows}
    assert by_name["pydocs"]["offline"] is True
    assert "make corpus" in by_name["debian-docs, debian-docs:heldout"]["source"]
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


# ---- documentation corpora: HTML to prose, cleaning, splits (debian-docs) --------------------

SPHINX_PAGE = """<!DOCTYPE html><html><head><title>Classes</title><style>p {color: red}</style>
<script>var navigation = "Navigation";</script></head><body>
<div class="related" role="navigation"><h3>Navigation</h3><a href="index.html">index</a></div>
<div class="document"><div class="body" role="main"><section id="classes">
<h1>Classes<a class="headerlink" href="#classes">¶</a></h1>
<p>Classes bundle data &amp; functionality.</p>
<p>A <code>class</code> statement   creates
a new type.</p>
<div class="highlight-python3"><div class="highlight"><pre>&gt;&gt;&gt; class A: pass</pre></div></div>
<pre>$ python3 example.py</pre>
<ul><li>first item</li><li>second <a href="x.html">link</a></li></ul>
</section></div></div>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3></div>
<div class="footer">&copy; Copyright 2001-2023.</div></body></html>"""


def test_page_text_keeps_prose_and_drops_navigation_and_code():
    page = page_text(SPHINX_PAGE)
    assert page.text == (
        "Classes\n\nClasses bundle data & functionality.\n\nA class statement creates a new type."
        "\n\nfirst item\nsecond link"
    )
    assert page.link_fraction == pytest.approx(len("link") / page.chars)


def test_page_text_texinfo_navigation_and_index_pages():
    texinfo = """<html><body><div class="header"><p>Next: <a href="n.html">Next</a>,
    Previous: <a href="p.html">Prev</a></p></div>
    <h2 class="chapter"><a href="toc.html#2">2 The User's View</a></h2>
    <table class="menu"><tr><td><a href="s.html">2.1 Installation</a></td></tr></table>
    <p>Most users find their programs speak their language.</p>
    <p><a href="a.html">Section 2.1</a> <a href="b.html">Section 2.2</a></p>
    <table class="index-cp"><tr><td><a href="i.html">installation</a></td></tr></table>
    </body></html>"""
    page = page_text(texinfo)
    # The heading is a link but stays; the link-only line is dropped, as are menu and index.
    assert page.text == "2 The User's View\n\nMost users find their programs speak their language."
    index = "<html><body><h1>Index</h1><ul>" + "".join(
        f'<li><a href="p{i}.html">entry {i}</a>, <a href="q{i}.html">[2]</a></li>'
        for i in range(20)
    )
    assert page_text(index).link_fraction > doc_build.MAX_LINK_FRACTION
    assert page_text(index).text == "Index"  # every entry line is nearly all link


def _prose(i: int, n: int = 6) -> list[str]:
    return [
        f"Paragraph {j} of page {i} explains topic {i * 100 + j} in some detail, with enough "
        f"words to count as a paragraph of real documentation about feature {i}-{j}."
        for j in range(n)
    ]


def _html(paragraphs: list[str], footer: str = "") -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return f"<html><head><title>t</title></head><body>{body}<p>{footer}</p></body></html>"


BOILERPLATE = "This page was generated by a documentation tool from its sources."


@pytest.fixture
def doc_sources(tmp_path, monkeypatch):
    """Two fake documentation packages: 100 prose pages and one of each kind to be dropped."""
    monkeypatch.setattr(doc_build, "BOILERPLATE_DOCS", 3)
    a = tmp_path / "usr" / "a"
    (a / "sub").mkdir(parents=True)
    for i in range(100):
        (a / "sub" / f"page{i:03d}.html").write_text(_html(_prose(i), BOILERPLATE))
    # An exact duplicate up to case and spacing, a near-duplicate, an index, a translation, a stub.
    (a / "sub" / "xcopy.html").write_text(_html([p.upper() + "  " for p in _prose(1)]))
    (a / "sub" / "xnear.html").write_text(_html([*_prose(2), "One new sentence here."]))
    index = "".join(f'<p><a href="sub/page{i:03d}.html">Page {i}</a></p>' for i in range(100))
    (a / "index.html").write_text(f"<html><body><h1>Contents</h1>{index}</body></html>")
    (a / "zh.html").write_text(_html(["如果您发现本文档与原始文件有任何不同或者有翻译问题。" * 20]))
    (a / "stub.html").write_text(_html(["This page moved."]))
    (a / "sub" / "_static").mkdir()
    (a / "sub" / "_static" / "asset.html").write_text(_html(_prose(500)))
    b = tmp_path / "usr" / "b"
    b.mkdir()
    (b / "notes.rst.gz").write_bytes(gzip.compress("\n\n".join(_prose(200)).encode()))
    (b / "plain.txt").write_text("Title\n=====\n\n" + "\n\n".join(_prose(201)) + "\n")
    return (
        DocSource("fake-a-doc", str(a), ("**/*.html",), ("*/_static/*",)),
        DocSource("fake-b-doc", str(b), ("*.rst.gz", "*.txt")),
    )


def test_doc_build_cleans_splits_and_is_deterministic(tmp_path, doc_sources):
    manifest = doc_build.build(tmp_path / "one", "docs", doc_sources)
    again = doc_build.build(tmp_path / "two", "docs", doc_sources)
    a, b = manifest["sources"]
    assert a["files"] == 105 and a["documents"] == 100
    assert a["dropped"] == {"duplicate": 2, "link_dense": 1, "not_english": 1, "short": 1}
    assert b["documents"] == 2 and a["version"] is None  # not a real package: no version
    docs = {}
    for split in doc_build.SPLITS:
        for doc_id, text in doc_build.iter_docs(tmp_path / "one", split):
            assert doc_build.is_heldout(doc_id, "docs") == (split == "heldout")
            docs[doc_id] = text
    assert len(docs) == 102 == sum(s["documents"] for s in manifest["splits"].values())
    assert 0 < manifest["splits"]["heldout"]["documents"] < 20
    assert not any(BOILERPLATE in t for t in docs.values())  # on every page: stripped
    assert docs["fake-a-doc/sub/page007.html"] == "\n\n".join(_prose(7))
    assert docs["fake-b-doc/notes.rst.gz"] == "\n\n".join(_prose(200))  # read as text
    assert docs["fake-b-doc/plain.txt"].startswith("Title\n=====\n\nParagraph 0 of page 201")
    # Hash order, not path order: a prefix of the stream mixes the sources.
    train_ids = [i for i, _ in doc_build.iter_docs(tmp_path / "one", "train")]
    assert train_ids != sorted(train_ids)
    # Same files, same bytes and fingerprints; the splits have their own.
    for shard in manifest["splits"]["train"]["shards"]:
        assert (tmp_path / "one" / shard["file"]).read_bytes() == (
            tmp_path / "two" / shard["file"]
        ).read_bytes()
    assert again["splits"] == manifest["splits"]
    fingerprints = {s["fingerprint"] for s in manifest["splits"].values()}
    assert len(fingerprints) == 2
    (Path(doc_sources[0].root) / "sub" / "page050.html").write_text(_html(_prose(999)))
    edited = doc_build.build(tmp_path / "three", "docs", doc_sources)
    assert {s["fingerprint"] for s in edited["splits"].values()} != fingerprints


def test_doc_build_is_atomic(tmp_path, doc_sources, monkeypatch):
    calls = []

    def fail_second(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted while writing the held-out split
        return real(*args)

    real = doc_build._write_split
    monkeypatch.setattr(doc_build, "_write_split", fail_second)
    with pytest.raises(KeyboardInterrupt):
        doc_build.build(tmp_path / "out", "docs", doc_sources)
    assert len(calls) == 2
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["usr"]  # no temporary folder left


@pytest.fixture
def docs_cache(tmp_path, doc_sources, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(debian_docs, "SOURCES", doc_sources)
    return tmp_path / "cache" / "corpora" / "debian-docs"


def test_debian_docs_through_get_corpus(docs_cache, tiny_tokenizer, capsys):
    train = get_corpus("debian-docs")  # built on first use
    heldout = get_corpus("debian-docs:heldout")
    assert (train.name, heldout.name) == ("debian-docs", "debian-docs:heldout")
    assert get_corpus("debian-docs:train").fingerprint == train.fingerprint != heldout.fingerprint
    train_docs, heldout_docs = list(train.documents()), list(heldout.documents())
    assert len(train_docs) + len(heldout_docs) == 102 and not set(train_docs) & set(heldout_docs)
    assert list(get_corpus("debian-docs").documents()) == train_docs

    manifest = doc_build.count_tokens(docs_cache, tiny_tokenizer, "tiny")
    expected = sum(
        len(tiny_tokenizer(d, add_special_tokens=False)["input_ids"]) for d in heldout_docs
    )
    assert manifest["splits"]["heldout"]["tokens"] == expected
    assert sum(s["tokens"] for s in manifest["sources"]) == sum(
        s["tokens"] for s in manifest["splits"].values()
    )
    assert get_corpus("debian-docs:heldout").fingerprint == heldout.fingerprint  # tokens aside
    assert main(["corpus", "info", "debian-docs"]) == 0
    out = capsys.readouterr().out
    assert "heldout" in out and "fake-a-doc" in out and f"{expected:,}" in out

    with pytest.raises(UnknownCorpusError, match="debian-docs:heldout"):
        get_corpus("debian-docs:test")
    shard = docs_cache / manifest["splits"]["train"]["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CorruptFileError, match="attnviz corpus build --force"):
        get_corpus("debian-docs")
    debian_docs.ensure_built(force=True)  # the fix the message names
    assert get_corpus("debian-docs").fingerprint == train.fingerprint
    assert [p.name for p in docs_cache.parent.iterdir()] == ["debian-docs"]  # nothing left over


def test_debian_docs_missing_packages_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))
    missing = (DocSource("python3.11-doc", str(tmp_path / "nowhere"), ("*.html",)),)
    monkeypatch.setattr(debian_docs, "SOURCES", missing)
    with pytest.raises(ModelUnavailableError) as info:
        get_corpus("debian-docs:heldout")
    message = str(info.value)
    for part in ("python3.11-doc", "make corpus", "apt-get install", "'pydocs'"):
        assert part in message
    assert main(["corpus", "info"]) == 2
    assert "make corpus" in capsys.readouterr().err


PYTHON_HTML = Path("/usr/share/doc/python3.11/html")


@pytest.mark.skipif(
    not PYTHON_HTML.is_dir(), reason="needs Debian's python3.11-doc (`make test` installs it)"
)
def test_real_python_docs_become_prose(tmp_path):
    python = debian_docs.SOURCES[0]
    assert python.root == str(PYTHON_HTML)
    tutorial = DocSource(python.package, python.root, ("tutorial/*.html",), python.exclude)
    manifest = doc_build.build(tmp_path / "docs", "debian-docs", (tutorial,))
    assert manifest["sources"][0]["version"].startswith("3.11")
    docs = {
        i: t for split in doc_build.SPLITS for i, t in doc_build.iter_docs(tmp_path / "docs", split)
    }
    assert len(docs) >= 14  # 17 pages, the table of contents and a stub or two dropped
    classes = docs["python3.11-doc/tutorial/classes.html"]
    assert classes.startswith("9. Classes\n\nClasses provide a means of bundling data")
    for text in docs.values():
        for navigation in ("Previous topic", "Table of Contents", "Show Source", "©", "¶"):
            assert navigation not in text
        assert not any(line.startswith(">>> ") for line in text.splitlines())  # no listings
    assert "12345" in (PYTHON_HTML / "tutorial" / "classes.html").read_text()
    assert "12345" not in classes  # MyClass.i = 12345 is only in a code listing
