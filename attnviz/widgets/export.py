"""Widgets out of the notebook as one self-contained HTML file (``write_html``); figures as
PNG, SVG or PDF are attnviz.widgets.figure_files, several widgets in one file attnviz.widgets.report.

The HTML file holds the widget's front-end bundle, a small host that stands in for the notebook
(``widgets/export_host``: the synced traits as a local model, so hover and head selection keep
working) and the widget's state, binary arrays included, all inlined as base64/JSON. A content
security policy with a per-file nonce lets only those scripts run: nothing is fetched from the
network, and markup smuggled in through token text could not run even if it reached the page.
"""

from __future__ import annotations

import base64
import html
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget

from attnviz.errors import AttnvizError
from attnviz.widgets.static import static_path

if TYPE_CHECKING:
    from attnviz.widgets.base import Widget

__all__ = ["ExportError", "html_document", "output_view", "widget_state", "write_html"]


class ExportError(AttnvizError):
    """A widget could not be written out (missing figure renderer, unwritable path, bad size)."""


def widget_state(widget: Widget) -> dict[str, Any]:
    """The widget's own synced traits (not anywidget's or ipywidgets' plumbing), JSON-safe:
    bytes become {"$bytes": base64}."""
    # anywidget adds its own private traits (_esm, _css, ...) to a subclass made per instance.
    own = set(type(widget).class_traits(sync=True)) - set(anywidget.AnyWidget.class_traits())
    own = {name for name in own if not name.startswith("_")}

    def safe(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, dict):
            return {str(k): safe(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [safe(v) for v in value]
        return value

    return {name: safe(getattr(widget, name)) for name in sorted(own)}


def _script_json(value: Any) -> str:
    """JSON that cannot end its <script> element early or open a comment inside it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


# The bootstrap: decode the two bundles into blob: modules and mount the widget on its state.
_BOOT = """
const read = (id) => JSON.parse(document.getElementById(id).textContent);
const root = document.getElementById("attnviz-root");
try {
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const module = (id) => import(URL.createObjectURL(new Blob([bytes(read(id))], { type: "text/javascript" })));
  const [host, widget] = await Promise.all([module("attnviz-host"), module("attnviz-widget")]);
  host.mount(widget.default, read("attnviz-state"), root);
} catch (err) {
  const box = document.createElement("pre");
  box.textContent = `attnviz: this export could not start: ${err && err.stack ? err.stack : err}`;
  root.replaceChildren(box);
}
"""


def html_document(widget: Widget, title: str | None = None) -> str:
    """The self-contained HTML text of `widget` as it is now."""
    name = widget.BUNDLE
    nonce = secrets.token_urlsafe(18)
    title = title or repr(widget)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}' blob:; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:"
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="attnviz {_version()}">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{margin:16px;font-family:system-ui,sans-serif;background:#fff}</style>",
        "</head><body>",
        f'<div id="attnviz-root" data-widget="{html.escape(name)}"></div>',
        f'<script type="application/json" id="attnviz-state">{_script_json(widget_state(widget))}'
        "</script>",
        '<script type="application/json" id="attnviz-host">'
        f'"{_b64(static_path("export_host"))}"</script>',
        f'<script type="application/json" id="attnviz-widget">"{_b64(static_path(name))}"</script>',
        f'<script type="module" nonce="{nonce}">{_BOOT}</script>',
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


# A notebook output's copy of the same bootstrap, for one widget among others on the page.
_OUTPUT_BOOT = """
const id = "__ID__";
const read = (part) => JSON.parse(document.getElementById(`${id}-${part}`).textContent);
const root = document.getElementById(id);
try {
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const module = (part) => import(URL.createObjectURL(new Blob([bytes(read(part))], { type: "text/javascript" })));
  const [host, widget] = await Promise.all([module("host"), module("widget")]);
  host.mount(widget.default, read("state"), root);
} catch (err) {
  root.textContent = `attnviz: this picture could not start: ${err && err.stack ? err.stack : err}`;
}
"""
# Above this much state, a notebook output keeps a note instead of the widget's copy.
OUTPUT_VIEW_MAX_BYTES = 2_000_000


def output_view(widget: Widget) -> str | None:
    """The widget as it is now, as HTML for its notebook output beside the live view: where
    widgets cannot run (`jupyter nbconvert --to html`) it starts like an exported file (hover and head selection work, what needs the kernel says so).
    None with ATTNVIZ_STATIC_VIEWS=0; a note where the state is too big to keep in a notebook."""
    if os.environ.get("ATTNVIZ_STATIC_VIEWS", "1").strip().lower() in ("0", "false", "no"):
        return None
    state = _script_json(widget_state(widget))
    if len(state) > OUTPUT_VIEW_MAX_BYTES:
        return (
            f"<p>{html.escape(repr(widget))}: {len(state) / 1e6:.0f} MB of state, too much to "
            "keep in the notebook; <code>to_html(path)</code> writes it to a file.</p>"
        )
    uid = f"attnviz-{secrets.token_hex(8)}"
    return "\n".join([
        # the repr stays where scripts are stripped (GitHub, --sanitize-html); mount replaces it
        f'<div id="{uid}" class="attnviz-output" data-widget="{html.escape(widget.BUNDLE)}">'
        f"<pre>{html.escape(repr(widget))}</pre></div>",
        f'<script type="application/json" id="{uid}-state">{state}</script>',
        f'<script type="application/json" id="{uid}-host">"{_b64(static_path("export_host"))}"'
        "</script>",
        f'<script type="application/json" id="{uid}-widget">"{_b64(static_path(widget.BUNDLE))}"'
        "</script>",
        f'<script type="module">{_OUTPUT_BOOT.replace("__ID__", uid)}</script>',
    ])  # fmt: skip


def _version() -> str:
    from attnviz._version import __version__

    return __version__


def _write_atomic(path: Path, write: Any) -> Path:
    """Call write(tmp_path) then move tmp_path onto `path`: a failure leaves no partial file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ExportError(f"{path} is a folder: give a file name, like {path / 'attention.html'}")
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write {path}: the folder {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_html(widget: Widget, path: str | Path, title: str | None = None) -> Path:
    """Write `widget` to `path` as one self-contained HTML file (see the module docstring)."""
    text = html_document(widget, title)
    return _write_atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
