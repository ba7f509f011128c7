"""attnviz: live notebook widgets for understanding transformer attention with sparse dictionaries.

Data flows one way: model -> activations -> dictionaries -> analysis -> widgets.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attnviz._version import __version__
from attnviz.errors import AttnvizError
from attnviz.models import DEFAULT_MODEL, load_model, wrap

__all__ = ["DEFAULT_MODEL", "AttnvizError", "__version__", "load_model", "report", "wrap"]


def report(items: Iterable[Any], path: str | Path, title: str = "attnviz report") -> Path:
    """Write widgets and text between them to one self-contained HTML file that opens offline
    (see attnviz.widgets.report). Returns the path."""
    from attnviz.widgets.report import report as write_report  # widgets load only when asked

    return write_report(items, path, title)
