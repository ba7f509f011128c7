"""A notebook saved with its widget state re-renders the widgets with no kernel behind them: the view state
(head, token window) and the binary patterns live in synced traits, which JupyterLab stores in the
notebook (tests/browser/lab.py turns saveState on)."""

from __future__ import annotations

import json
import time

import pytest

from tests.browser.lab import open_and_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "saved_state.ipynb"
CELLS = [
    "import attnviz\n"
    "from attnviz.widgets.attention_view import AttentionView\n"
    "model = attnviz.load_model()\n"
    "view = AttentionView(model, ' '.join(f'w{i}' for i in range(400)), layer=2, max_size=256)\n"
    "view.window = [100, 164]\n"
    "view",
]


def test_saved_widget_state_renders_without_a_kernel(lab, browser, screenshots):
    lab.write_notebook(NOTEBOOK, CELLS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        open_and_run(lab, page, NOTEBOOK)
        root = page.get_by_test_id("attention-view")
        root.locator('[data-testid="token-label"]').first.wait_for(timeout=240_000)
        root.get_by_test_id("thumb-7").click()
        live = root.get_by_test_id("heatmap").evaluate("c => c.toDataURL()")
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while "widgets" not in json.loads((lab.root / NOTEBOOK).read_text())["metadata"]:
            assert time.monotonic() < deadline, "the notebook was not saved with its widget state"
            time.sleep(0.5)
        ran = {k["id"] for k in lab.api("GET", "/api/kernels") or []}
        for session in lab.api("GET", "/api/sessions") or []:  # the kernel that ran it is gone
            lab.api("DELETE", f"/api/sessions/{session['id']}")
    finally:
        context.close()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(lab.notebook_url(NOTEBOOK))
        root = page.get_by_test_id("attention-view")
        root.get_by_test_id("heatmap").wait_for(timeout=90_000)
        # JupyterLab may start a fresh kernel for the notebook, but none that ran its cells
        assert not ran & {k["id"] for k in lab.api("GET", "/api/kernels") or []}
        assert root.get_attribute("data-head") == "7"
        assert root.get_by_test_id("heatmap").evaluate("c => [c.width, c.height]") == [64, 64]
        assert "showing tokens 100–163" in root.get_by_test_id("status").text_content()
        assert root.get_by_test_id("heatmap").evaluate("c => c.toDataURL()") == live
        page.screenshot(path=str(screenshots / "saved_state.png"))
        # nothing behind the view answers a new prompt: the widget says so instead of spinning
        box = root.get_by_test_id("prompt")
        box.fill("a prompt no kernel will see")
        box.press("Enter")
        page.wait_for_function(
            """() => document.querySelector('[data-testid="attention-view"] [data-testid="status"]')
                .textContent.startsWith("no answer from the kernel")""",
            timeout=40_000,
        )
    finally:
        context.close()
