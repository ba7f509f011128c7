"""The user cache directory (converted model weights, generated corpora)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$ATTNVIZ_CACHE`, else `$XDG_CACHE_HOME/attnviz`, else `~/.cache/attnviz`; created on use."""
    root = os.environ.get("ATTNVIZ_CACHE")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        root = str(Path(xdg) / "attnviz")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
