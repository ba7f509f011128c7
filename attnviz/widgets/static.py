"""Where the bundled front-end lives: ``attnviz/static/<name>.js``, built by esbuild.

The bundles are build outputs (``make widgets``, i.e. ``npm --prefix widgets run build``),
ignored by git and shipped in the wheel; a source checkout has none until it is built.
"""

from __future__ import annotations

import re
from pathlib import Path

from attnviz.errors import AttnvizError

__all__ = ["STATIC_DIR", "MissingBundleError", "static_path"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class MissingBundleError(AttnvizError, FileNotFoundError):
    """A widget's JavaScript bundle has not been built (or was not installed)."""

    def __str__(self) -> str:  # OSError would otherwise prefix an errno
        return str(self.args[0]) if self.args else ""


def static_path(name: str) -> Path:
    """Path of the bundle ``attnviz/static/<name>.js``; MissingBundleError if it is not there."""
    if not _NAME.fullmatch(name) or name.endswith(".js"):
        raise ValueError(f"bad bundle name {name!r}: give the widget's name, like 'arrays_probe'")
    path = STATIC_DIR / f"{name}.js"
    if not path.is_file():
        raise MissingBundleError(
            f"the front-end bundle {name}.js is missing: run `make widgets` (npm + esbuild) "
            f"or reinstall attnviz"
        )
    return path
