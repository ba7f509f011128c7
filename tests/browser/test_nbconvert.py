"""A tutorial run top to bottom, saved without widget state (JupyterLab's default) and converted
by `jupyter nbconvert --to html`, shows its widgets: each widget output carries an HTML copy of
the widget as it was displayed, which the converted page starts offline like an exported file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from playwright.sync_api import expect

from tests.browser.conftest import TUTORIALS
from tests.browser.test_export import offline_page  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("nbconvert")
    nb = nbformat.read(TUTORIALS / "01_attention_patterns.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(folder)}}).execute()  # fmt: skip
    assert "widgets" not in nb.metadata  # as JupyterLab saves it by default: no widget state
    outputs = [
        o for c in nb.cells for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})
    ]
    assert outputs, "tutorial 01 displays no widget"
    assert all('class="attnviz-output"' in o["data"]["text/html"] for o in outputs)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    for name in (
        "attention.html",
        "report.html",
        "attention.png",
        "attention.svg",
        "attention.pdf",
    ):
        assert (folder / name).stat().st_size > 10_000 and f"{name}: " in printed
    body, _ = HTMLExporter().from_notebook_node(nb)
    path = folder / "01_attention_patterns.html"
    path.write_text(body, encoding="utf-8")
    return path, len(outputs)


def test_the_converted_tutorial_shows_and_hovers_every_widget(offline_page, converted, screenshots):  # noqa: F811
    page: Any = offline_page
    path, n_widgets = converted
    page.goto(path.as_uri())
    views = page.locator(".attnviz-output")
    expect(views).to_have_count(n_widgets)
    expect(page.locator('.attnviz-output > [data-testid="attention-view"]')).to_have_count(
        n_widgets, timeout=30_000
    )
    for i in range(n_widgets):
        root = views.nth(i).get_by_test_id("attention-view")
        root.scroll_into_view_if_needed()
        canvas = root.get_by_test_id("heatmap")
        box = canvas.bounding_box()
        assert box and box["width"] > 100, f"widget {i} is not drawn"
        canvas.hover(position={"x": 0.2 * box["width"], "y": 0.9 * box["height"]})
        tip = root.get_by_test_id("tooltip")
        tip.wait_for(state="visible", timeout=5_000)
        assert "destination" in tip.text_content()
        assert root.get_by_test_id("static-note").is_visible()
        if i == 0:
            page.screenshot(path=str(screenshots / "nbconvert_tutorial_01.png"))
    # nbconvert's page asks for its own scripts (require.js, MathJax) from CDNs; attnviz nothing
    assert not [url for url in page.requests if "attnviz" in url]
    assert page.problems == [] or all("attnviz" not in p for p in page.problems)
