"""The widgets in Notebook 7 (the classic-style front-end built from JupyterLab's parts), served by
the same test server at /notebooks/: they render, switch heads in the browser, recompute a typed
prompt, and PairExplorer answers a click."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.lab import run_all

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "notebook7.ipynb"
CELLS = [
    "import attnviz\n"
    "from attnviz.widgets.attention_view import AttentionView\n"
    "from attnviz.widgets.pair_explorer import PairExplorer\n"
    "model = attnviz.load_model()",
    "AttentionView(model, 'When Mary and John went to the store, John gave a drink to', layer=3)",
    "PairExplorer(model, 'The cat sat on the mat because it was tired', layer=3)",
]
TIMEOUT_MS = 240_000


def kernel_idle(lab: Any, timeout_s: float = 90) -> None:
    """Wait until the notebook's kernel exists and is idle (asked through the REST API, which
    works the same for every front-end)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sessions = lab.api("GET", "/api/sessions") or []
        if any(s["path"].endswith(NOTEBOOK) and s["kernel"]["execution_state"] == "idle"
               for s in sessions):  # fmt: skip
            return
        time.sleep(0.5)
    raise AssertionError(f"no idle kernel for {NOTEBOOK} after {timeout_s} s")


@pytest.fixture(scope="module")
def notebook7(lab, page, screenshots) -> Any:
    lab.write_notebook(NOTEBOOK, CELLS)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{lab.url}/notebooks/{NOTEBOOK}?token={lab.token}")
    page.locator(".jp-Cell").first.wait_for(timeout=90_000)
    assert page.locator("#main-panel, .jp-LabShell").count() >= 1
    assert "/lab" not in page.url  # the Notebook 7 page, not JupyterLab
    kernel_idle(lab)
    run_all(page)
    for testid in ("attention-view", "pair-explorer"):
        page.get_by_test_id(testid).locator('[data-testid="token-label"]').first.wait_for(
            timeout=TIMEOUT_MS
        )
    page.screenshot(path=str(screenshots / "notebook7.png"), full_page=True)
    page.attnviz_errors = errors
    return page


def test_attention_view_in_notebook7(notebook7):
    root = notebook7.get_by_test_id("attention-view")
    canvas = root.get_by_test_id("heatmap")
    n = int(root.get_attribute("data-n-tokens"))
    assert canvas.evaluate("c => [c.width, c.height]") == [n, n]
    before = canvas.evaluate("c => c.toDataURL()")
    root.get_by_test_id("thumb-6").click()
    assert (
        root.get_attribute("data-head") == "6" and canvas.evaluate("c => c.toDataURL()") != before
    )
    box = root.get_by_test_id("prompt")
    box.fill("Short and sweet")
    box.press("Enter")
    notebook7.wait_for_function(
        """() => { const r = document.querySelector('[data-testid="attention-view"]');
                   return r.dataset.busy === "false" && r.dataset.nTokens === "4"; }""",
        timeout=60_000,
    )


def test_pair_explorer_click_in_notebook7(notebook7, screenshots):
    root = notebook7.get_by_test_id("pair-explorer")
    n = int(root.get_attribute("data-n-tokens"))
    heatmap = root.get_by_test_id("heatmap")
    cell = heatmap.bounding_box()["width"] / n
    heatmap.click(position={"x": 1.5 * cell, "y": (n - 0.5) * cell})
    score = root.get_by_test_id("score")
    score.wait_for(timeout=60_000)
    terms = root.locator('[data-testid="term-row"]').evaluate_all(
        "rows => rows.map((r) => Number(r.dataset.contribution))"
    )
    assert sum(terms) == pytest.approx(float(score.get_attribute("data-value")), abs=1e-3)
    root.screenshot(path=str(screenshots / "notebook7_pair_explorer.png"))
    assert notebook7.dialogs == [] and not [e for e in notebook7.attnviz_errors if "attnviz" in e]
