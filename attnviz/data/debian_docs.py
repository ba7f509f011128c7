"""The `debian-docs` corpus: ~13M tokens of documentation written by people, from Debian packages.

pydocs (~0.3M tokens) is too small to train dictionaries on, and the Hugging Face corpora need a
network. Debian's documentation packages are large, in English, installable from any Debian mirror
and versioned, so the text is reproducible: the Python 3.11 manual, the Linux kernel's
documentation, the PostgreSQL and Django manuals, Git's manual pages, the Debian Reference,
Handbook, Policy and Developer's Reference, the R manuals and GNU manuals (Bash, Autoconf, Flex,
gettext, the GNU coding standards).

Built once (`make corpus`, `attnviz corpus build`, or on first use when the packages are there)
by `doc_build` into `<attnviz cache>/corpora/debian-docs/`. `get_corpus("debian-docs")` is the
training split, `get_corpus("debian-docs:heldout")` the 5% of pages held out, each with its own
fingerprint. Once built, the cache is the corpus: removing the packages does not change it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from attnviz.cache import cache_dir
from attnviz.data import doc_build
from attnviz.data.corpus import Corpus
from attnviz.data.doc_build import SPLITS, DocSource
from attnviz.errors import CorruptFileError, ModelUnavailableError, UnknownCorpusError

CORPUS_NAME = "debian-docs"

# Sphinx output that is not a page of the manual: sources, assets, the index and search pages.
_SPHINX_EXTRA = ("_*/*", "genindex*", "search.html", "py-modindex.html")

# Debian 12 (bookworm) package names, in priority order: of two near-identical pages, the one
# from the earlier source is kept.
SOURCES: tuple[DocSource, ...] = (
    DocSource(
        "python3.11-doc",
        "/usr/share/doc/python3.11/html",
        ("**/*.html",),
        (*_SPHINX_EXTRA, "license.html", "copyright.html"),  # legal text of bundled libraries
    ),
    DocSource(
        "linux-doc-6.1",
        "/usr/share/doc/linux-doc-6.1/html",
        ("**/*.html",),
        (*_SPHINX_EXTRA, "translations/*"),  # Chinese, Japanese, Korean and Italian
    ),
    DocSource(
        "postgresql-doc-15",
        "/usr/share/doc/postgresql-doc-15/html",
        ("*.html",),
        ("bookindex.html",),
    ),
    DocSource(
        "python-django-doc",
        "/usr/share/doc/python-django-doc/html",
        ("**/*.html",),
        _SPHINX_EXTRA,  # _modules/ is Django's source code as HTML
    ),
    DocSource("git-doc", "/usr/share/doc/git-doc", ("*.html", "howto/*.html", "technical/*.html")),
    DocSource("debian-reference-en", "/usr/share/debian-reference", ("*.en.html",)),
    DocSource("debian-handbook", "/usr/share/doc/debian-handbook/html/en-US", ("*.html",)),
    DocSource(
        "debian-policy",
        "/usr/share/doc/debian-policy",
        ("*.html", "*.html/*.html"),  # policy.html/ is a folder of chapters
        ("*-1.html", "*/_*/*"),  # one-page copies of the split manuals; Sphinx assets
    ),
    DocSource(
        "developers-reference",
        "/usr/share/developers-reference",
        ("*.html",),
        (*_SPHINX_EXTRA, "developers-reference.html"),
    ),
    DocSource("maint-guide", "/usr/share/doc/maint-guide/html", ("*.en.html",)),
    DocSource("r-doc-html", "/usr/share/R/doc/manual", ("*.html",)),
    # bashref.html only: bash.html is the manual page, mostly the same text again.
    DocSource("bash-doc", "/usr/share/doc/bash", ("bashref.html",)),
    DocSource("autoconf-doc", "/usr/share/doc/autoconf", ("autoconf.html",)),
    DocSource("gnu-standards", "/usr/share/doc/gnu-standards", ("standards.html", "maintain.html")),
    DocSource("flex-doc", "/usr/share/doc/flex-doc/html", ("*.html",)),
    DocSource(
        "gettext-doc", "/usr/share/doc/gettext", ("gettext_*.html", "FAQ.html", "tutorial.html")
    ),
)


def apt_packages(sources: Sequence[DocSource] | None = None) -> list[str]:
    return sorted({s.package for s in sources or SOURCES})


def install_hint(sources: Sequence[DocSource] | None = None) -> str:
    return (
        "run `make corpus`, or as root `DEBIAN_FRONTEND=noninteractive apt-get install -y "
        f"--no-install-recommends {' '.join(apt_packages(sources))}` then `attnviz corpus build`"
    )


def corpus_dir() -> Path:
    return cache_dir("corpora") / CORPUS_NAME


class ShardCorpus(Corpus):
    """One split of a built documentation corpus, read from its shards in order."""

    def __init__(self, root: Path, split: str = "train"):
        self.root = Path(root)
        self.split = split
        self.manifest = _manifest(self.root)
        base = self.manifest["name"]
        self.name = base if split == "train" else f"{base}:{split}"
        self.info = self.manifest["splits"][split]
        tokens = self.info.get("tokens")
        size = f"{tokens / 1e6:.1f}M tokens" if tokens else f"{self.info['chars'] / 1e6:.0f}M chars"
        self.description = (
            f"Debian documentation packages, {split} ({self.info['documents']} pages, {size})"
        )
        for shard in self.info["shards"]:  # cheap: catches a deleted or truncated shard
            path = self.root / shard["file"]
            if not path.is_file() or path.stat().st_size != shard["bytes"]:
                raise CorruptFileError(
                    f"{path} is missing or not the size its manifest records: rebuild with "
                    "`attnviz corpus build --force`"
                )

    def documents(self) -> Iterator[str]:
        for shard in self.info["shards"]:  # the shards this object's fingerprint describes
            with open(self.root / shard["file"], encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)["text"]

    def _fingerprint(self) -> str:
        return self.info["fingerprint"]


def _manifest(root: Path) -> dict[str, Any]:
    try:
        return doc_build.read_manifest(root)
    except (OSError, ValueError) as e:
        raise CorruptFileError(
            f"{root}/manifest.json is unreadable ({e}): rebuild with `attnviz corpus build --force`"
        ) from e


def is_built(root: Path | None = None) -> bool:
    """A manifest from this version of the builder is there."""
    manifest = (Path(root) if root else corpus_dir()) / "manifest.json"
    try:
        return json.loads(manifest.read_text()).get("build_version") == doc_build.BUILD_VERSION
    except (OSError, ValueError):
        return False


def ensure_built(
    root: Path | None = None, sources: Sequence[DocSource] | None = None, force: bool = False
) -> Path:
    """The corpus folder, built first when missing, built by another builder version, or
    `force`d. Building needs every source's package: a corpus that silently lacked one would
    differ from machine to machine."""
    root = Path(root) if root is not None else corpus_dir()
    sources = sources or SOURCES
    if not force and is_built(root):
        return root
    missing = sorted({s.package for s in sources if not s.files()})
    if missing:
        raise ModelUnavailableError(
            f"the corpus {CORPUS_NAME!r} is not built and these Debian documentation packages "
            f"are missing: {', '.join(missing)}. To build it, {install_hint(sources)}. "
            "Without them, use the offline corpus 'pydocs' (the Python docs, shipped with Python)"
        )
    print(f"building the {CORPUS_NAME} corpus into {root} (once; a few minutes)", file=sys.stderr)
    # Built beside the old one and swapped in, so a reader finds the old corpus or the new one.
    stamp = time.time_ns()
    fresh, old = (root.with_name(f".{kind}-{root.name}-{stamp}") for kind in ("new", "old"))
    doc_build.build(fresh, CORPUS_NAME, sources)
    if root.exists():
        root.rename(old)
    fresh.rename(root)
    shutil.rmtree(old, ignore_errors=True)
    return root


def open_corpus(
    spec: str = CORPUS_NAME, root: Path | None = None, sources: Sequence[DocSource] | None = None
) -> ShardCorpus:
    """`debian-docs` (the train split), `debian-docs:train` or `debian-docs:heldout`; built
    first if need be."""
    _, _, split = spec.partition(":")
    split = split or "train"
    if split not in SPLITS:
        raise UnknownCorpusError(
            f"{spec!r}: {CORPUS_NAME} has the splits {', '.join(SPLITS)}, not {split!r}; "
            f"write {CORPUS_NAME} (train) or {CORPUS_NAME}:heldout"
        )
    return ShardCorpus(ensure_built(root, sources), split)


def report(root: Path) -> str:
    """The manifest as two tables: the splits, then the sources."""
    m = _manifest(root)

    def table(rows: list[list[Any]]) -> list[str]:
        cells = [[f"{v:,}" if isinstance(v, int) else str(v or "-") for v in r] for r in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
        return [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
        ]

    tokens = m["tokenizer"] or "not counted (attnviz corpus build counts them)"
    lines = [f"{m['name']} in {root}, built in {m['build_seconds']} s; tokens: {tokens}", ""]
    lines += table(
        [["split", "documents", "chars", "tokens", "fingerprint"]]
        + [
            [name, s["documents"], s["chars"], s["tokens"], s["fingerprint"][:16]]
            for name, s in m["splits"].items()
        ]
    )
    lines.append("")
    rows = [["package", "version", "files", "documents", "heldout", "chars", "tokens", "dropped"]]
    for s in m["sources"]:
        dropped = " ".join(f"{k}={v}" for k, v in s["dropped"].items())
        rows.append([s["package"], s["version"], s["files"], s["documents"],
                     s["heldout_documents"], s["chars"], s["tokens"], dropped])  # fmt: skip
    lines += table(rows)
    return "\n".join(lines)
