"""Widgets out of the notebook: self-contained HTML (attnviz.widgets.export.write_html) and PNG
through plotly + kaleido + Debian chromium. The HTML file is opened in a real browser by
tests/browser/test_export.py; here its text is checked."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import pytest

from attnviz.errors import AttnvizError
from attnviz.widgets.arrays import decode_array
from attnviz.widgets.attention_view import AttentionView
from attnviz.widgets.export import ExportError, html_document, widget_state, write_html
from attnviz.widgets.pattern_explorer import PatternExplorer
from tests.helpers import check_figure_files, make_qk

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
    from attnviz.widgets.figure_files import write_png

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


@pytest.mark.slow
def test_pattern_widgets_save_png_svg_and_pdf_of_what_they_show(view, tiny_llama_adapter, tmp_path):
    from attnviz.widgets.pair_explorer import PairExplorer

    check_figure_files(view, tmp_path)
    text = "one two three four five six seven eight nine ten eleven twelve"
    attention = AttentionView(tiny_llama_adapter, text, layer=1, head=2)
    attention.window = [4, 10]
    fig = attention.figure()
    assert "layer 1 head 2 · tokens 4-9" in fig.layout.title.text
    assert fig.layout.xaxis.ticktext[0] == f"4: {html.escape(attention.tokens[4])}"
    check_figure_files(attention, tmp_path, width=500, height=400)
    with pytest.raises(AttnvizError, match=r"PairExplorer has no picture to draw: .*layer 0"):
        PairExplorer(
            tiny_llama_adapter, text, qk=make_qk(tiny_llama_adapter.spec), layer=0
        ).figure()
    pair = PairExplorer(tiny_llama_adapter, text, qk=make_qk(tiny_llama_adapter.spec))
    pair.clicked = [5, 2]
    shapes = pair.figure().layout.shapes
    assert [(s.x0, s.y0) for s in shapes] == [(1.5, 4.5)] * 2  # the clicked cell, both panels
    check_figure_files(pair, tmp_path)


def test_figure_export_names_bad_formats_sizes_and_palettes(view, tmp_path):
    with pytest.raises(ExportError, match=r"name it \.png, \.svg or \.pdf"):
        view.save_figure(tmp_path / "view.jpg")
    with pytest.raises(ExportError, match="width must be a whole number"):
        view.save_figure(tmp_path / "view.png", width=0)
    with pytest.raises(ExportError, match="choose one of default, colorblind"):
        view.save_figure(tmp_path / "view.png", palette="viridis")
    assert list(tmp_path.iterdir()) == []


def test_the_colorblind_palette_redraws_a_copy(view):
    from attnviz.widgets.palettes import BLUE_ORANGE, recolour

    fig = view.figure()
    before = [t.colorscale for t in fig.data]
    redrawn = recolour(type(fig)(fig), "colorblind")
    assert [t.colorscale for t in fig.data] == before  # the original figure is untouched
    scales = [(t.colorscale, t.reversescale) for t in redrawn.data]
    cividis = tuple(tuple(c) for c in type(fig)(layout={"colorscale": {"sequential": "cividis"}})
                    .layout.colorscale.sequential)  # fmt: skip
    assert scales[0] == (cividis, True)  # weights: light at 0, as the widget draws them
    assert scales[-1][0] == tuple(tuple(c) for c in BLUE_ORANGE)  # the signed difference


def test_report_names_bad_items_and_leaves_nothing_behind(view, tmp_path):
    import attnviz

    with pytest.raises(ExportError, match="report item 1 is a int: give attnviz widgets"):
        attnviz.report(["text", 3, view], tmp_path / "r.html")
    with pytest.raises(ExportError, match="needs at least one widget"):
        attnviz.report(["only text"], tmp_path / "r.html")
    with pytest.raises(ExportError, match="does not exist"):
        attnviz.report([view], tmp_path / "missing" / "r.html")
    assert list(tmp_path.iterdir()) == []
    doc = attnviz.report(view, tmp_path / "r.html").read_text(encoding="utf-8")  # one widget
    assert doc.count("attnviz-bundle-pattern_explorer") == 1 and "1 widget ·" in doc


def test_the_output_bundle_carries_a_static_copy_unless_switched_off(view, monkeypatch):
    data, _ = view._repr_mimebundle_()
    assert {"text/plain", "application/vnd.jupyter.widget-view+json", "text/html"} <= set(data)
    fragment = data["text/html"]
    uid = re.search(r'<div id="(attnviz-[0-9a-f]{16})"', fragment).group(1)
    assert set(scripts(fragment)) == {f"{uid}-state", f"{uid}-host", f"{uid}-widget"}
    assert f"<pre>{html.escape(repr(view))}</pre>" in fragment  # shown where scripts are not
    state = json.loads(scripts(fragment)[f"{uid}-state"])
    assert state["prompt"] == view.prompt and "<img" not in fragment  # hostile text stays data
    again, _ = view._repr_mimebundle_()
    assert uid not in again["text/html"]  # two outputs of one widget do not share ids
    monkeypatch.setenv("ATTNVIZ_STATIC_VIEWS", "0")
    assert "text/html" not in view._repr_mimebundle_()[0]
    monkeypatch.delenv("ATTNVIZ_STATIC_VIEWS")
    monkeypatch.setattr("attnviz.widgets.export.OUTPUT_VIEW_MAX_BYTES", 1000)
    assert "too much to keep in the notebook" in view._repr_mimebundle_()[0]["text/html"]
    monkeypatch.setattr("attnviz.widgets.export._script_json", lambda value: 1 / 0)
    live, _ = view._repr_mimebundle_()  # a copy that cannot be made never hides the widget
    assert "text/html" not in live and "application/vnd.jupyter.widget-view+json" in live
