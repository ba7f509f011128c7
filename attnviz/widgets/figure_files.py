"""A widget's figure as a PNG, SVG or PDF file, rendered by plotly through kaleido and a local
chromium.

Kaleido starts a chromium for each cold render (~2-3 s). While figures are being made, one is
kept running (~0.2 s a render), and closed after KALEIDO_IDLE_S without use: its processes hold
~0.5 GB, more than a notebook on a small machine (Binder: 2 GB) should keep for nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any

from attnviz.widgets.export import ExportError, _write_atomic

__all__ = ["FIGURE_FORMATS", "write_figure", "write_png"]

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FIGURE_FORMATS = ("png", "svg", "pdf")
# Fonts Debian ships (fonts-dejavu, fonts-liberation with chromium) before the usual fallbacks.
REPORT_FONT = "DejaVu Sans, Liberation Sans, Arial, sans-serif"
KALEIDO_IDLE_S = 30.0


def find_chromium() -> str | None:
    """BROWSER_PATH, a system chromium, or the Chrome for Testing `kaleido_get_chrome` fetched."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for candidate in (*CHROMIUM_PATHS, shutil.which("chromium"), shutil.which("google-chrome")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    with contextlib.suppress(Exception):  # kaleido's helper library, where it keeps its download
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False)
    return None


class _WarmBrowser:
    """Kaleido's sync server, started on first use and stopped after KALEIDO_IDLE_S idle."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = False
        self.timer: threading.Timer | None = None

    def render(self, figure: Any, **options: Any) -> bytes:
        import kaleido

        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
            if not self.running:
                kaleido.start_sync_server(silence_warnings=True)
                self.running = True
                # After kaleido's own exit handler, so that it runs first (atexit is last in,
                # first out): ours cancels the idle timer, which could otherwise stop the
                # server at the same moment as kaleido's handler (an AttributeError at exit).
                atexit.unregister(self.stop)
                atexit.register(self.stop)
            try:
                with warnings.catch_warnings():  # kaleido warns about options plotly passes it
                    warnings.simplefilter("ignore", UserWarning)
                    return bytes(figure.to_image(**options))
            except Exception:  # the browser may be broken: start afresh next time
                self.running = False
                with contextlib.suppress(Exception):
                    kaleido.stop_sync_server(silence_warnings=True)
                raise
            finally:
                self.timer = threading.Timer(KALEIDO_IDLE_S, self.stop)
                self.timer.daemon = True
                self.timer.start()

    def stop(self) -> None:
        import kaleido

        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
            if self.running:
                self.running = False
                with contextlib.suppress(Exception):  # the browser may be gone already
                    kaleido.stop_sync_server(silence_warnings=True)


_BROWSER = _WarmBrowser()


def _renderer() -> str:
    """Check kaleido and a chromium are there; returns the browser's path."""
    if importlib.util.find_spec("kaleido") is None:
        raise ExportError(
            "figure export needs kaleido: pip install 'kaleido>=1.0' (and a chromium: on Debian, "
            "apt-get install chromium); to_html needs neither"
        )
    browser = find_chromium()
    if browser is None:
        raise ExportError(
            "figure export needs a chromium for kaleido and none was found: on Debian, "
            "apt-get install chromium; elsewhere `kaleido_get_chrome` fetches one; or set BROWSER_PATH "
            "to a Chrome/Chromium binary"
        )
    os.environ.setdefault("BROWSER_PATH", browser)  # where kaleido (choreographer) looks first
    return browser


def _check_size(width: int | None, height: int | None, scale: float) -> None:
    for name, value in (("width", width), ("height", height)):
        if value is not None and not (isinstance(value, int) and 10 <= value <= 10_000):
            raise ExportError(f"{name} must be a whole number of pixels from 10 to 10000, "
                              f"not {value!r}")  # fmt: skip
    if not (isinstance(scale, (int, float)) and 0 < scale <= 10):
        raise ExportError(f"scale must be a number above 0 and at most 10, not {scale!r}")


def write_figure(figure: Any, path: str | Path, width: int | None = None,
                 height: int | None = None, scale: float = 2.0, palette: str = "default",
                 format: str | None = None) -> Path:  # fmt: skip
    """Render a plotly figure to PNG, SVG or PDF (`format`, or the suffix of `path`) with kaleido.

    `width` x `height` are CSS pixels (default: the figure's own size); a PNG has `scale` times
    as many pixels, SVG and PDF are vector (a PDF page of width x 0.75 points). Text is set in
    DejaVu Sans or Liberation Sans, which chromium embeds in the PDF. `palette` "colorblind"
    redraws the figure in colours every common colour-vision deficiency tells apart (see
    attnviz.widgets.palettes). The widget's figure is not changed.
    """
    import plotly.graph_objects as go

    from attnviz.widgets.palettes import check_palette, recolour

    path = Path(path)
    kind = (format or path.suffix.lstrip(".")).lower()
    if kind not in FIGURE_FORMATS:
        raise ExportError(f"cannot write a figure as {kind or 'a file without a suffix'!r} "
                          f"({path.name}): name it .png, .svg or .pdf")  # fmt: skip
    _check_size(width, height, scale)
    try:
        check_palette(palette)
    except ValueError as err:
        raise ExportError(str(err)) from err
    picture = recolour(go.Figure(figure), palette)  # a copy: the widget's figure stays as it is
    picture.update_layout(font_family=REPORT_FONT)
    browser = _renderer()
    # scale multiplies pixels; vector files keep width x height as their size
    options = dict(format=kind, width=width, height=height, scale=scale if kind == "png" else 1)

    def render(tmp: Path) -> None:
        tmp.write_bytes(_BROWSER.render(picture, **options))

    try:
        return _write_atomic(path, render)
    except (ExportError, OSError):
        raise
    except Exception as err:  # kaleido reports browser trouble with many exception types
        raise ExportError(
            f"kaleido could not render the {kind.upper()} with {browser}: "
            f"{type(err).__name__}: {err}"
        ) from err


def write_png(figure: Any, path: str | Path, scale: float = 2.0) -> Path:
    """Render a plotly figure to a PNG with kaleido (headless chromium); see write_figure."""
    return write_figure(figure, path, scale=scale, format="png")
