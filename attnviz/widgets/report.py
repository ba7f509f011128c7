"""Several widgets in one self-contained HTML file, with text between them, for a report.

The file is built like a single widget's export (attnviz.widgets.export): the host that stands in
for the notebook is inlined once, each widget class's bundle once however many of its widgets the
report holds, and each widget's state on its own. One nonce lets only the report's own script
run; nothing is fetched. A widget that fails to start shows its error in its own place, and the
others still start.

>>> attnviz.report(["Induction heads", view, explorer], "report.html", title="Layer 3")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attnviz.widgets.export import (
    ExportError,
    _b64,
    _script_json,
    _version,
    _write_atomic,
    widget_state,
)
from attnviz.widgets.static import static_path

__all__ = ["report", "report_document"]

# Start the host once, each bundle once, then every widget in its own place.
_BOOT = """
const read = (id) => JSON.parse(document.getElementById(id).textContent);
const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const module = (id) => import(URL.createObjectURL(new Blob([bytes(read(id))], { type: "text/javascript" })));
const fail = (el, err) => {
  const box = document.createElement("pre");
  box.className = "attnviz-failed";
  box.textContent = `attnviz: this widget could not start: ${err && err.stack ? err.stack : err}`;
  el.replaceChildren(box);
};
const roots = [...document.querySelectorAll("[data-attnviz-item]")];
let host;
try {
  host = await module("attnviz-host");
} catch (err) {
  roots.forEach((el) => fail(el, err));
}
const bundles = new Map();
for (const el of roots) {
  if (!host) break;
  const name = el.dataset.widget;
  try {
    if (!bundles.has(name)) bundles.set(name, module(`attnviz-bundle-${name}`));
    const widget = await bundles.get(name);
    host.mount(widget.default, read(`attnviz-state-${el.dataset.attnvizItem}`), el);
  } catch (err) {
    fail(el, err);
  }
}
"""

_STYLE = (
    "body{margin:24px auto;max-width:1400px;padding:0 16px;font-family:system-ui,sans-serif;"
    "background:#fff;color:#1f2328;line-height:1.5}"
    "h1{font-size:1.6em;margin:0 0 4px}.attnviz-meta{color:#57606a;font-size:.85em;margin:0 0 24px}"
    ".attnviz-text p{max-width:60em;margin:0 0 12px}"
    ".attnviz-item{margin:8px 0 32px}"
    ".attnviz-item figcaption{color:#57606a;font-size:.8em;margin-top:4px}"
)


def _text_block(text: str) -> str:
    """Plain text as paragraphs (split at blank lines), escaped: a report never runs markup."""
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return f'<section class="attnviz-text">{body}</section>'


def _check_items(items: Iterable[Any]) -> list[Any]:
    from attnviz.widgets.base import Widget

    if isinstance(items, (str, Widget)):
        items = [items]
    items = list(items)
    for i, item in enumerate(items):
        if not isinstance(item, (str, Widget)):
            raise ExportError(
                f"report item {i} is a {type(item).__name__}: give attnviz widgets (AttentionView, "
                "PatternExplorer, ...) and strings of text between them"
            )
    if not any(not isinstance(item, str) for item in items):
        raise ExportError("a report needs at least one widget: report([text, widget, ...], path)")
    return items


def report_document(items: Iterable[Any], title: str = "attnviz report") -> str:
    """The self-contained HTML text of a report of `items`: widgets as they are now, and strings
    (plain text; blank lines separate paragraphs) between them."""
    items = _check_items(items)
    nonce = secrets.token_urlsafe(18)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}' blob:; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:"
    )
    body: list[str] = []
    states: list[str] = []
    bundles: dict[str, Path] = {}
    for item in items:
        if isinstance(item, str):
            body.append(_text_block(item))
            continue
        n, name = len(states), item.BUNDLE
        bundles.setdefault(name, static_path(name))
        states.append(
            f'<script type="application/json" id="attnviz-state-{n}">'
            f"{_script_json(widget_state(item))}</script>"
        )
        body.append(
            f'<figure class="attnviz-item"><div data-attnviz-item="{n}" '
            f'data-widget="{html.escape(name)}"></div>'
            f"<figcaption>{html.escape(repr(item))}</figcaption></figure>"
        )
    scripts = [
        f'<script type="application/json" id="attnviz-host">"{_b64(static_path("export_host"))}"'
        "</script>",
        *(
            f'<script type="application/json" id="attnviz-bundle-{html.escape(name)}">'
            f'"{_b64(path)}"</script>'
            for name, path in bundles.items()
        ),
        *states,
        f'<script type="module" nonce="{nonce}">{_BOOT}</script>',
    ]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="attnviz {_version()}">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<header><h1>{html.escape(title)}</h1>",
        f'<p class="attnviz-meta">{len(states)} widget{"s" * (len(states) != 1)} · '
        f"attnviz {html.escape(_version())} · opens offline</p></header>",
        "<main>",
        *body,
        "</main>",
        *scripts,
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


def report(items: Iterable[Any], path: str | Path, title: str = "attnviz report") -> Path:
    """Write widgets (as they are now) and text between them to one self-contained HTML file that
    opens offline: every widget keeps hover and what it does without a kernel. Returns the path.
    """
    text = report_document(items, title)
    return _write_atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
