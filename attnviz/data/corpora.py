"""Text sources that yield documents (plain strings) for collecting activations.

Four kinds, all behind `get_corpus(name_or_path)`:

- `pydocs`, the offline default: the Python reference manual topics shipped with every CPython
  (`pydoc_data.topics`) followed by the docstrings of the standard library. Real English prose
  written by people, available without a network.
- `debian-docs` and `debian-docs:heldout`: ~13M tokens of documentation from Debian's
  documentation packages, split into train and held-out by page (see `debian_docs`). Offline once
  `make corpus` has installed the packages and built it.
- local text: a .txt / .md / .jsonl file, or a directory of them (jsonl: a "text" field per line).
- Hugging Face datasets streamed over the network: `openwebtext`, `pile`, `tinystories`, or
  `hf:<repo>[:split]`. Offline these fail at once with a message naming the alternatives.

Every corpus has a `fingerprint` (sha256 of what it reads) so an activation store can tell whether
a resumed collection still reads the same text.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attnviz.data.corpus import Corpus
from attnviz.data.debian_docs import open_corpus
from attnviz.errors import EmptyTextError, ModelUnavailableError, UnknownCorpusError
from attnviz.hub import hub_reachable, offline_reason

DEFAULT_CORPUS = "pydocs"
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")
MIN_DOC_CHARS = 200  # shorter docstrings are mostly one-line summaries or signatures

# Short names for Hugging Face datasets that stream plain English text.
HF_DATASETS: dict[str, tuple[str, str, str]] = {
    # name: (repo, split, description)
    "openwebtext": (
        "Skylion007/openwebtext",
        "train",
        "web pages linked from Reddit (GPT-2's mix)",
    ),
    "pile": ("monology/pile-uncopyrighted", "train", "the Pile without its copyrighted parts"),
    "tinystories": ("roneneldan/TinyStories", "train", "short stories in simple English"),
}

OFFLINE_HINT = (
    f"use the offline corpus {DEFAULT_CORPUS!r} (the Python documentation, shipped with Python), "
    "or your own text: a path to a .txt/.md file, a .jsonl file with a 'text' field per line, "
    "or a directory of them"
)


# ---- pydocs: the Python documentation -----------------------------------------------------

# Modules that do something on import (print, open a browser or a window, start IDLE, set up the
# terminal's line editing), the test suite, platform-only modules, and distutils (setuptools swaps
# in its own copy when installed, which would make the text depend on the environment).
_PYDOCS_SKIP = frozenset(
    {
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "readline",
        "rlcompleter",
        "test",
        "lib2to3",
        "distutils",
        "pydoc_data",
        "ensurepip",
        "msilib",
        "msvcrt",
        "winreg",
        "winsound",
        "nt",
    }
)
# Packages whose submodules are generated boilerplate rather than prose.
_PYDOCS_NO_SUBMODULES = frozenset({"encodings"})


def _extract_pydocs(skip: list[str], no_submodules: list[str], min_chars: int) -> list[str]:
    """Reference-manual topics, then standard-library docstrings of >= min_chars, deduplicated.

    Self-contained (standard library only) because it runs in a fresh interpreter: in a used one,
    other packages have replaced stdlib attributes (pytest's sys.unraisablehook, ipykernel's
    builtins.input) or added methods (nnsight's object.save), which would change the text."""
    import contextlib
    import importlib
    import inspect
    import io
    import pkgutil
    import sys
    import warnings

    docs: list[str] = []
    seen: set[str] = set()

    def add(doc: str | None) -> None:
        if doc and len(doc) >= min_chars and doc not in seen:
            seen.add(doc)
            docs.append(doc)

    def quiet_import(name: str):  # None if it fails or prints while importing
        out = io.StringIO()
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
            except (Exception, SystemExit):  # platform-only modules, missing C libraries
                return None
        return None if out.getvalue() else module

    def modules(name: str):  # a module, then its public submodules, depth first, sorted
        module = quiet_import(name)
        if module is None:
            return
        yield module
        if hasattr(module, "__path__") and name not in no_submodules:
            for sub in sorted(info.name for info in pkgutil.iter_modules(module.__path__)):
                if not sub.startswith("_") and sub not in ("test", "tests"):
                    yield from modules(f"{name}.{sub}")

    def own_member(member) -> bool:  # a method or property of the class itself
        return inspect.isroutine(member) or isinstance(
            member, (property, classmethod, staticmethod)
        )

    manual = quiet_import("pydoc_data.topics")  # some distributions split it off
    reference: dict[str, str] = getattr(manual, "topics", {})
    for key in sorted(reference):
        add(reference[key])
    for top in sorted(sys.stdlib_module_names):
        if top.startswith("_") or top in skip:
            continue
        for module in modules(top):
            add(inspect.getdoc(module))
            # Names sorted: the order must not depend on the order of definition or import.
            for name, obj in sorted(vars(module).items()):
                if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
                    continue
                if getattr(obj, "__module__", None) != module.__name__:  # re-exported
                    continue
                add(inspect.getdoc(obj))
                if inspect.isclass(obj):
                    for attr, member in sorted(vars(obj).items()):
                        if not attr.startswith("_") and own_member(member):
                            add(inspect.getdoc(member))
    return docs


@functools.lru_cache(maxsize=1)
def pydocs_documents() -> tuple[str, ...]:
    """The pydocs text, extracted in a fresh `python -I` (falls back to this process, warning
    that the text may then differ from other processes')."""
    args = (sorted(_PYDOCS_SKIP), sorted(_PYDOCS_NO_SUBMODULES), MIN_DOC_CHARS)
    try:
        code = (
            textwrap.dedent(inspect.getsource(_extract_pydocs))
            + f"\nimport json, sys\njson.dump(_extract_pydocs{args!r}, sys.stdout)\n"
        )
        done = subprocess.run(
            [sys.executable, "-I", "-c", code], capture_output=True, timeout=300, check=True
        )
        return tuple(json.loads(done.stdout))
    except (OSError, TypeError, ValueError, subprocess.SubprocessError) as e:
        warnings.warn(
            f"could not read the Python docs in a fresh interpreter ({type(e).__name__}: {e}); "
            "reading them in this one, so the pydocs fingerprint may differ from other runs'",
            stacklevel=2,
        )
        return tuple(_extract_pydocs(*args))


class PyDocsCorpus(Corpus):
    name = "pydocs"
    description = "Python reference manual + standard-library docstrings (offline, ~0.3M tokens)"

    def documents(self) -> Iterator[str]:
        docs = pydocs_documents()
        if not docs:
            raise EmptyTextError(
                "the pydocs corpus is empty: this Python has no pydoc_data and no docstrings "
                "(run without -OO), or give your own text file"
            )
        yield from docs

    def _fingerprint(self) -> str:
        h = hashlib.sha256(f"pydocs\0{sys.version}\0".encode())
        for doc in pydocs_documents():
            h.update(doc.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        return h.hexdigest()


# ---- local text files ---------------------------------------------------------------------


class TextFilesCorpus(Corpus):
    """A text file or a directory of them (searched recursively, in sorted path order).

    .txt and .md files are one document each; .jsonl files give one document per line."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().resolve()
        self.name = str(self.path)
        self.description = "local text"
        self.files = self._find_files()

    def _find_files(self) -> list[Path]:
        if self.path.is_file():
            if self.path.suffix.lower() not in TEXT_SUFFIXES:
                raise UnknownCorpusError(
                    f"{self.path} is not a text corpus: use a {', '.join(TEXT_SUFFIXES)} file "
                    "or a directory of them"
                )
            return [self.path]
        files = sorted(
            p
            for p in self.path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in TEXT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
        )
        if not files:
            raise EmptyTextError(
                f"the directory {self.path} holds no {', '.join(TEXT_SUFFIXES)} files: "
                "put some text in it, or use the offline corpus 'pydocs'"
            )
        return files

    def documents(self) -> Iterator[str]:
        for file in self.files:
            if file.suffix.lower() == ".jsonl":
                yield from _jsonl_texts(file)
            else:
                text = file.read_text(encoding="utf-8", errors="replace")
                if text.strip():
                    yield text

    def _fingerprint(self) -> str:
        # Names relative to the root and the bytes: moving the folder keeps the fingerprint,
        # editing a file changes it.
        h = hashlib.sha256(b"files\0")
        root = self.path.parent if self.path.is_file() else self.path
        for file in self.files:
            h.update(file.relative_to(root).as_posix().encode() + b"\0")
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            h.update(b"\0")
        return h.hexdigest()


def _jsonl_texts(file: Path) -> Iterator[str]:
    with open(file, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = row["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise EmptyTextError(
                    f"{file}:{lineno} is not a JSON object with a 'text' field ({e}): "
                    'write one {"text": ...} object per line'
                ) from e
            if isinstance(text, str) and text.strip():
                yield text


# ---- Hugging Face datasets, streamed --------------------------------------------------------


class HFStreamCorpus(Corpus):
    """A Hugging Face dataset read with `datasets.load_dataset(..., streaming=True)`."""

    def __init__(
        self,
        repo: str,
        split: str = "train",
        name: str | None = None,
        text_field: str = "text",
        description: str = "",
    ):
        self.repo = repo
        self.split = split
        self.text_field = text_field
        self.name = name or f"hf:{repo}:{split}"
        self.description = description or f"Hugging Face dataset {repo} ({split})"

    def _unavailable(self, why: str) -> ModelUnavailableError:
        return ModelUnavailableError(
            f"the corpus {self.name!r} streams {self.repo} from the Hugging Face Hub, but {why}: "
            f"{OFFLINE_HINT}"
        )

    def _load(self) -> Any:
        reason = offline_reason()
        if reason:
            raise self._unavailable(f"{reason} (offline mode)")
        try:
            import datasets
        except ImportError as e:
            raise self._unavailable(
                "the package `datasets` is not installed (pip install 'attnviz[online]')"
            ) from e
        if not hub_reachable():
            raise self._unavailable("huggingface.co cannot be reached (no network?)")
        try:
            return datasets.load_dataset(self.repo, split=self.split, streaming=True)
        except Exception as e:  # network, auth, unknown repo or split
            raise self._unavailable(f"loading it failed ({type(e).__name__}: {e})") from e

    def documents(self) -> Iterator[str]:
        rows = iter(self._load())
        try:
            first = next(rows, None)  # the first read is where a broken connection shows up
        except Exception as e:
            raise self._unavailable(f"reading it failed ({type(e).__name__}: {e})") from e
        if first is None:
            return
        for row in itertools.chain([first], rows):
            if self.text_field not in row:
                raise EmptyTextError(
                    f"rows of {self.repo} have no {self.text_field!r} field "
                    f"(fields: {sorted(row)}): this dataset is not plain text"
                )
            text = row[self.text_field]
            if isinstance(text, str) and text.strip():
                yield text

    def _fingerprint(self) -> str:
        # A stream has no cheap content hash; the repo, split and field name identify it.
        ident = f"hf\0{self.repo}\0{self.split}\0{self.text_field}"
        return hashlib.sha256(ident.encode()).hexdigest()


# ---- the registry --------------------------------------------------------------------------


def _parse_hf(spec: str) -> HFStreamCorpus:
    body = spec[len("hf:") :]
    repo, _, split = body.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UnknownCorpusError(
            f"{spec!r} is not a Hugging Face dataset name: write hf:<owner>/<dataset>[:split], "
            "e.g. hf:roneneldan/TinyStories:validation"
        )
    return HFStreamCorpus(repo, split or "train")


DOCS_CORPUS = "debian-docs"  # the name `attnviz.data.debian_docs` answers to


def get_corpus(name_or_path: str | os.PathLike[str] | Corpus) -> Corpus:
    """A corpus by name (`pydocs`, `debian-docs[:heldout]`, `openwebtext`, `pile`, `tinystories`,
    `hf:<repo>[:split]`) or by the path of a text file or directory."""
    if isinstance(name_or_path, Corpus):
        return name_or_path
    key = os.fspath(name_or_path)
    if key == "pydocs":
        return PyDocsCorpus()
    if key == DOCS_CORPUS or key.startswith(DOCS_CORPUS + ":"):
        return open_corpus(key)
    if key in HF_DATASETS:
        repo, split, description = HF_DATASETS[key]
        return HFStreamCorpus(repo, split, name=key, description=description)
    if key.startswith("hf:"):
        return _parse_hf(key)
    if Path(key).expanduser().exists():
        return TextFilesCorpus(key)
    known = ", ".join(["pydocs", f"{DOCS_CORPUS}[:heldout]", *HF_DATASETS, "hf:<repo>[:split]"])
    raise UnknownCorpusError(
        f"unknown corpus {key!r}: it is neither a known name ({known}) nor an existing "
        f"file or directory; give a path to a {'/'.join(TEXT_SUFFIXES)} file or a folder of them"
    )


def list_corpora() -> list[dict[str, Any]]:
    """The named corpora, as rows for a table: name, source, offline, description."""
    rows: list[dict[str, Any]] = [
        {
            "name": PyDocsCorpus.name,
            "source": "pydoc_data.topics + standard-library docstrings",
            "offline": True,
            "description": PyDocsCorpus.description,
        },
        {
            "name": f"{DOCS_CORPUS}, {DOCS_CORPUS}:heldout",
            "source": "Debian documentation packages (make corpus)",
            "offline": True,
            "description": "~13M tokens of manuals (Python, Linux, PostgreSQL, Django, Git, Debian, "
            "GNU), 5% of pages held out",
        },
    ]
    for name, (repo, split, description) in HF_DATASETS.items():
        rows.append(
            {
                "name": name,
                "source": f"hf:{repo}:{split}",
                "offline": False,
                "description": description,
            }
        )
    rows.append(
        {
            "name": "hf:<repo>[:split]",
            "source": "any Hugging Face text dataset",
            "offline": False,
            "description": "streamed; needs `datasets` and a network",
        }
    )
    rows.append(
        {
            "name": "<path>",
            "source": "a .txt/.md/.jsonl file or a directory of them",
            "offline": True,
            "description": "your own text",
        }
    )
    return rows
