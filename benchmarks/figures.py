"""How the benchmarks save a plot: a PNG through attnviz's own export (kaleido with a local
chromium), or, where that cannot run, a self-contained HTML file beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnviz.errors import AttnvizError
from attnviz.widgets.figure_files import write_png


def save_plot(fig: Any, path: Path) -> Path:
    """`path` with .png, or with .html when the PNG cannot be made (the reason is printed)."""
    try:
        return write_png(fig, path.with_suffix(".png"), scale=1.0)
    except AttnvizError as err:
        print(f"PNG export failed ({err}); writing HTML")
        out = path.with_suffix(".html")
        fig.write_html(str(out), include_plotlyjs=True)
        return out
