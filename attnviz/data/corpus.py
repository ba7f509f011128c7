"""The one idea every text source shares: a deterministic stream of documents with an identity.

Kept apart from `corpora` (which names and builds them) so a corpus defined in its own module,
such as `debian_docs`, can subclass it without importing the registry that imports it back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator


class Corpus(ABC):
    """A deterministic stream of documents with a stable identity."""

    name: str
    description: str = ""

    @abstractmethod
    def documents(self) -> Iterator[str]:
        """The documents, in the same order every time."""

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the corpus' identity and content (computed once)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = self.__dict__["_fingerprint"] = self._fingerprint()
        return cached

    @abstractmethod
    def _fingerprint(self) -> str: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
