"""Widgets out of the notebook: self-contained HTML (attnviz.widgets.export.write_html) and PNG
through plotly + kaleido + Debian chromium. The HTML file is opened in a real browser by
tests/browser/test_export.py; here its text is checked."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from attnviz.widgets.arrays import decode_array
from attnviz.widgets.attention_view import AttentionView
from attnviz.widgets.export import ExportError, html_document, widget_state, write_html
from attnviz.widgets.pattern_explorer import PatternExplorer
from tests.helpers import make_qk

XSS = "</script><img src=x onerror=alert(1)> & <!-- <script>alert(2)</script>"


@pytest.fixture(scope="module")
def view(tiny_llama_adapter):
    return PatternExplorer(
        tiny_llama_adapter, f"Hello {XSS} world", qk=make_qk(tiny_llama_adapter.spec)
    )


def scripts(doc: str) -> dict[str, str]:
    return dict(
        re.findall(r'<script type="application/json" id="([\w-]+)">(.*?)</script>', doc, re.S)
    )


def test_state_round_trips_with_binary_arrays(view):
    state = widget_state(view)
    assert {"prompt", "layer", "head", "tokens", "panels", "kl", "downsampled"} <= set(state)
    assert not any(k.startswith("_") or k in ("layout", "tabbable", "tooltip") for k in state)
    wire = state["panels"]["true"]
    data = base64.b64decode(wire["data"]["$bytes"])
    restored = decode_array({**wire, "data": data})
    np.testing.assert_array_equal(restored, decode_array(view.panels["true"]), strict=True)


def test_document_is_self_contained_and_locked_down(view):
    doc = html_document(view, title=f"report {XSS}")
    assert "http://" not in doc and "https://" not in doc and "//cdn" not in doc
    nonce = re.search(r"script-src 'nonce-([\w-]+)' blob:", doc).group(1)
    assert "default-src 'none'" in doc
    # one executable script, carrying the nonce; the rest are JSON data blocks
    assert re.findall(r"<script(?![^>]*application/json)[^>]*>", doc) == [
        f'<script type="module" nonce="{nonce}">'
    ]
    # the hostile prompt never appears as markup, only escaped inside JSON or the title
    assert "<img" not in doc and "</script><img" not in doc and "<!-- <script>" not in doc
    assert "&lt;/script&gt;&lt;img" in doc  # the <title>
    blocks = scripts(doc)
    assert set(blocks) == {"attnviz-state", "attnviz-host", "attnviz-widget"}
    state = json.loads(blocks["attnviz-state"])
    assert state["prompt"] == f"Hello {XSS} world"
    widget_js = base64.b64decode(json.loads(blocks["attnviz-widget"])).decode()
    assert "export" in widget_js and "import(" not in widget_js


def test_two_exports_differ_only_in_their_nonce(view):
    a, b = html_document(view), html_document(view)
    strip = re.compile(r'nonce(?:-|=")[\w-]+')
    assert a != b and strip.sub("", a) == strip.sub("", b)


def test_write_html_is_atomic_and_names_bad_paths(view, tmp_path):
    out = write_html(view, tmp_path / "view.html")
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    with pytest.raises(ExportError, match="does not exist"):
        write_html(view, tmp_path / "missing" / "view.html")
    with pytest.raises(ExportError, match="is a folder"):
        write_html(view, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view.html"]  # no temp files left


def test_figures_escape_token_text(view):
    fig = view.figure()
    assert [t.type for t in fig.data] == ["heatmap"] * 4
    ticks = " ".join(fig.layout.xaxis.ticktext)
    assert "&lt;/" in ticks and "<" not in ticks and ">" not in ticks


@pytest.mark.slow
def test_png_through_kaleido(view, tmp_path, tiny_llama_adapter):
    out = view.to_png(tmp_path / "explorer.png", scale=1)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    attention = AttentionView(tiny_llama_adapter, "a short prompt", layer=0)
    assert attention.to_png(tmp_path / "attention.png").stat().st_size > 10_000
    with pytest.raises(ExportError, match="does not exist"):
        view.to_png(tmp_path / "nowhere" / "x.png")


@pytest.mark.slow
def test_a_chart_spec_renders_to_png_through_kaleido(tmp_path):
    from attnviz.widgets.charts import chart_figure, chart_spec
    from attnviz.widgets.export import write_png

    sizes = [120, 40, 17, 9, 5, 3, 2, 1]
    loglog = chart_spec("bar", [{"name": "cluster sizes", "x": list(range(1, 9)), "y": sizes}],
                        title="sizes", log_x=True, log_y=True)  # fmt: skip
    pareto = chart_spec(
        "pareto", [{"name": "steering", "x": [0.1, 0.3, 0.2, 0.6], "y": [0.2, 0.5, 0.6, 0.9]}],
        x_title="loss", y_title="P(success)", frontier=("min", "max"),
    )  # fmt: skip
    for name, spec in (("loglog", loglog), ("pareto", pareto)):
        figure = chart_figure(spec)
        assert figure.layout.xaxis.type == ("log" if name == "loglog" else "linear")
        data = write_png(figure, tmp_path / f"{name}.png", scale=1).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
