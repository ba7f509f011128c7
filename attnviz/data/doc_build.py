"""Build a documentation corpus: read pages, clean them, split by document, write JSONL shards.

The source-independent half of `debian-docs` (see `debian_docs` for the packages): give it
`DocSource`s and a folder; it writes `<split>-00000.jsonl` shards (one {"id", "text"} object per
document) and a manifest.json. Deterministic (the same files give the same bytes) and atomic (a
temporary sibling folder renamed at the end), so an interrupted build leaves nothing behind.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnviz.data.html_text import page_text

SPLITS = ("train", "heldout")
BUILD_VERSION = 1  # bump when reading or cleaning changes: caches built before are rebuilt
HELDOUT_PER_MILLE = 50  # 5% of the documents
MIN_DOC_CHARS = 500  # after cleaning; shorter pages are stubs, redirects or chapter tables
MAX_LINK_FRACTION = 0.5  # pages that are mostly link text are indices and tables of contents
MIN_ASCII_LETTERS = 0.95  # of the letters; below it a page is (mostly) not English
NEAR_DUPLICATE = 0.9  # drop a page when this share of its text is already in earlier pages
BOILERPLATE_DOCS = 30  # a line found in at least this many pages is boilerplate ...
BOILERPLATE_MIN_CHARS = 40  # ... unless shorter: headings like "Parameters" stay
SHARD_BYTES = 32 << 20


@dataclass(frozen=True)
class DocSource:
    """The documentation files one Debian package installs."""

    package: str
    """The Debian package that installs them (`apt-get install <package>`)."""
    root: str
    """The folder the patterns are relative to; a document's id is `package/<relative path>`."""
    include: tuple[str, ...]
    """Glob patterns (pathlib's, `**` recursive) of the files to read."""
    exclude: tuple[str, ...] = ()
    """fnmatch patterns of relative paths to leave out (`*` also matches across folders)."""

    def files(self) -> list[Path]:
        root = Path(self.root)
        found = {p.relative_to(root).as_posix() for pat in self.include for p in root.glob(pat)}
        kept = (f for f in found if not any(fnmatch.fnmatchcase(f, x) for x in self.exclude))
        return [root / f for f in sorted(kept) if (root / f).is_file()]


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """The installed version of each Debian package (None: not installed, or no dpkg here)."""
    names = sorted(set(packages))
    versions: dict[str, str | None] = dict.fromkeys(names)
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Status}\n", *names],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return versions
    for line in done.stdout.splitlines():
        name, version, status = [*line.split("\t"), "", ""][:3]
        if name in versions and status == "installed":
            versions[name] = version
    return versions


# ---- reading ---------------------------------------------------------------------------------


@dataclass
class Page:
    """One document being built: id, source package and text blocks (lines or paragraphs)."""

    id: str
    package: str
    blocks: list[tuple[int, str]]  # (newlines before, text), as in html_text.PageText
    link_fraction: float = 0.0

    @property
    def chars(self) -> int:
        return sum(len(t) for _, t in self.blocks)

    @property
    def text(self) -> str:
        return "".join("\n" * n + t for n, t in self.blocks).lstrip("\n")


def read_page(path: Path) -> tuple[list[tuple[int, str]], float]:
    """(blocks, link fraction) of an HTML page, or of a text / reStructuredText file (whose
    paragraphs are kept as written); `.gz` files are decompressed first."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".gz"):
        data, name = gzip.decompress(data), name[: -len(".gz")]
    text = data.decode("utf-8", errors="replace")
    if name.endswith((".html", ".htm", ".xhtml")):
        page = page_text(text)
        return page.blocks, page.link_fraction
    paragraphs = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n")]
    return [(2, p) for p in paragraphs if p.strip()], 0.0


def _read(job: tuple[str, str, str]) -> Page:
    doc_id, package, path = job
    blocks, links = read_page(Path(path))
    return Page(doc_id, package, blocks, links)


def read_all(jobs: list[tuple[str, str, str]], workers: int | None = None) -> list[Page]:
    """(id, package, path) -> Pages, in order; in several processes when there are many, as
    html.parser is pure Python (~5 minutes of CPU for the whole of debian-docs)."""
    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = 1 if len(jobs) < 200 else min(8, cpus or 1)
    if workers <= 1:
        return [_read(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:  # map keeps the order
        return list(pool.map(_read, jobs, chunksize=16))


# ---- cleaning --------------------------------------------------------------------------------


def _key(text: str) -> bytes:
    """A block's identity for deduplication: case and spacing do not count."""
    return hashlib.blake2b(" ".join(text.casefold().split()).encode(), digest_size=8).digest()


def _english(page: Page) -> bool:
    letters = [c for _, t in page.blocks for c in t if c.isalpha()]
    return not letters or sum(c.isascii() for c in letters) >= MIN_ASCII_LETTERS * len(letters)


def clean(pages: list[Page], dropped: dict[str, Counter[str]]) -> list[Page]:
    """Drop index pages, other languages, boilerplate lines, short pages and (near-)duplicates,
    counting the drops per package and reason in `dropped`.

    `pages` is in priority order: of two near-identical pages the earlier one is kept."""
    kept = []
    for page in pages:
        if page.link_fraction > MAX_LINK_FRACTION:
            dropped[page.package]["link_dense"] += 1
        elif not _english(page):
            dropped[page.package]["not_english"] += 1
        else:
            kept.append(page)
    # Lines that recur on many pages (generator credits, navigation rows, stock sentences of an
    # API reference) say nothing about the page they are on.
    spread = Counter(k for page in kept for k in {_key(t) for _, t in page.blocks})
    seen: set[bytes] = set()
    out = []
    for page in kept:
        page.blocks = [
            (n, t)
            for n, t in page.blocks
            if len(t) < BOILERPLATE_MIN_CHARS or spread[_key(t)] < BOILERPLATE_DOCS
        ]
        chars = page.chars
        if chars < MIN_DOC_CHARS:
            dropped[page.package]["short"] += 1
            continue
        keys = [(_key(t), len(t)) for _, t in page.blocks]
        # Exact duplicates are the case where all of it was seen; near-identical pages (the
        # same release note in two branches, a page also included whole in another) come close.
        if sum(n for k, n in keys if k in seen) >= NEAR_DUPLICATE * chars:
            dropped[page.package]["duplicate"] += 1
            continue
        seen.update(k for k, _ in keys)
        out.append(page)
    return out


# ---- splitting and writing -------------------------------------------------------------------


def is_heldout(doc_id: str, name: str) -> bool:
    """Whether a document is held out: a hash of its id, so a page's split does not move when
    other pages come or go, and held-out text is other pages, not the rest of a training page."""
    digest = hashlib.sha256(f"{name}-split\0{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < HELDOUT_PER_MILLE


def _order(doc_id: str, name: str) -> bytes:
    # Documents in hash order, not by source: any prefix of the stream (a collection of a few
    # million tokens) then mixes all the sources instead of being only the first one.
    return hashlib.sha256(f"{name}-order\0{doc_id}".encode()).digest()


def fingerprint(name: str, split: str, docs: Iterable[tuple[str, str]]) -> str:
    """sha256 of the split's (id, text) pairs, in order."""
    h = hashlib.sha256(f"{name}\0{split}\0".encode())
    for doc_id, text in docs:
        h.update(doc_id.encode() + b"\0" + text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _write_split(out: Path, name: str, split: str, pages: list[Page]) -> dict[str, Any]:
    shards: list[dict[str, Any]] = []
    for page in pages:
        line = json.dumps({"id": page.id, "text": page.text}, ensure_ascii=False) + "\n"
        data = line.encode("utf-8", "surrogatepass")
        if not shards or shards[-1]["bytes"] + len(data) > SHARD_BYTES:
            shards.append({"file": f"{split}-{len(shards):05d}.jsonl", "documents": 0, "bytes": 0})
        with open(out / shards[-1]["file"], "ab") as f:
            f.write(data)
        shards[-1]["documents"] += 1
        shards[-1]["bytes"] += len(data)
    return {
        "documents": len(pages),
        "chars": sum(len(p.text) for p in pages),
        "tokens": None,
        "fingerprint": fingerprint(name, split, ((p.id, p.text) for p in pages)),
        "shards": shards,
    }


def build(
    out_dir: str | Path, name: str, sources: Sequence[DocSource], workers: int | None = None
) -> dict[str, Any]:
    """Read, clean, split and write the corpus `name` to `out_dir` (which must not exist yet);
    returns the manifest. If `out_dir` appears meanwhile (another process built the same
    corpus), that one is kept."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    versions = package_versions(s.package for s in sources)
    files: Counter[str] = Counter()
    jobs, seen_paths = [], set()
    for source in sources:
        for path in source.files():
            real = path.resolve()  # a file reached twice through a symlink counts once
            if real not in seen_paths:
                seen_paths.add(real)
                jobs.append((f"{source.package}/{path.relative_to(source.root).as_posix()}",
                             source.package, str(path)))  # fmt: skip
                files[source.package] += 1
    dropped: dict[str, Counter[str]] = {s.package: Counter() for s in sources}
    pages = clean(read_all(jobs, workers), dropped)
    pages.sort(key=lambda p: _order(p.id, name))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{out_dir.name}-", dir=out_dir.parent))
    try:
        splits = {}
        for split in SPLITS:
            part = [p for p in pages if is_heldout(p.id, name) == (split == "heldout")]
            splits[split] = _write_split(staging, name, split, part)
        per_source = []
        for s in sources:
            mine = [p for p in pages if p.package == s.package]
            per_source.append({
                "package": s.package, "version": versions[s.package], "root": s.root,
                "files": files[s.package], "documents": len(mine),
                "heldout_documents": sum(is_heldout(p.id, name) for p in mine),
                "chars": sum(len(p.text) for p in mine), "tokens": None,
                "dropped": dict(sorted(dropped[s.package].items())),
            })  # fmt: skip
        manifest = {
            "name": name,
            "build_version": BUILD_VERSION,
            "format": 'JSONL shards: one {"id": ..., "text": ...} object per document',
            "settings": {
                "heldout_per_mille": HELDOUT_PER_MILLE,
                "min_doc_chars": MIN_DOC_CHARS,
                "max_link_fraction": MAX_LINK_FRACTION,
                "min_ascii_letters": MIN_ASCII_LETTERS,
                "near_duplicate": NEAR_DUPLICATE,
                "boilerplate_docs": BOILERPLATE_DOCS,
                "code_listings": "dropped (<pre>); inline code kept",
            },
            "tokenizer": None,
            "sources": per_source,
            "splits": splits,
            "build_seconds": round(time.perf_counter() - start, 1),
        }
        write_manifest(staging, manifest)
        try:
            staging.rename(out_dir)
        except OSError:
            if not (out_dir / "manifest.json").is_file():
                raise
            return read_manifest(out_dir)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_manifest(root: Path) -> dict[str, Any]:
    return json.loads((Path(root) / "manifest.json").read_text())


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Atomically: a reader sees the old manifest or the new one, never half of one."""
    tmp = Path(root) / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(Path(root) / "manifest.json")


def iter_docs(root: Path, split: str) -> Iterable[tuple[str, str]]:
    """(id, text) of a built split, in order."""
    for shard in read_manifest(root)["splits"][split]["shards"]:
        with open(Path(root) / shard["file"], encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                yield row["id"], row["text"]


def count_tokens(root: Path, tokenizer: Any, tokenizer_name: str, batch: int = 64) -> dict:
    """Count each split's and source's tokens (without special tokens, as `contexts` reads
    them) and record them in the manifest, with the tokenizer's name; returns the manifest."""
    manifest = read_manifest(root)
    by_package: Counter[str] = Counter()
    for split in SPLITS:
        total = 0
        docs = list(iter_docs(root, split))
        for i in range(0, len(docs), batch):
            part = docs[i : i + batch]
            ids = tokenizer([t for _, t in part], add_special_tokens=False, verbose=False)
            for (doc_id, _), row in zip(part, ids["input_ids"], strict=True):
                total += len(row)
                by_package[doc_id.split("/", 1)[0]] += len(row)
        manifest["splits"][split]["tokens"] = total
    for source in manifest["sources"]:
        source["tokens"] = by_package[source["package"]]
    manifest["tokenizer"] = tokenizer_name
    write_manifest(root, manifest)
    return manifest
