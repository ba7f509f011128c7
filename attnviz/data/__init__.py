"""Text corpora, fixed-length token contexts, and the on-disk activation store."""

from attnviz.data.collect import collect_activations
from attnviz.data.contexts import batched_contexts, contexts
from attnviz.data.corpora import (
    DEFAULT_CORPUS,
    Corpus,
    HFStreamCorpus,
    PyDocsCorpus,
    TextFilesCorpus,
    UnknownCorpusError,
    get_corpus,
    list_corpora,
)
from attnviz.data.store import ActivationStore, ChunkInfo

__all__ = [
    "DEFAULT_CORPUS",
    "ActivationStore",
    "ChunkInfo",
    "Corpus",
    "HFStreamCorpus",
    "PyDocsCorpus",
    "TextFilesCorpus",
    "UnknownCorpusError",
    "batched_contexts",
    "collect_activations",
    "contexts",
    "get_corpus",
    "list_corpora",
]
