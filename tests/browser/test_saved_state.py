"""A notebook saved with its widget state re-renders the widgets with no kernel behind them: the view state
(head, token window) and the binary patterns live in synced traits, which JupyterLab stores in the
notebook (tests/browser/lab.py turns saveState on)."""

from __future__ import annotations

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
        ran = lab.save_and_end_kernels(page, NOTEBOOK)
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


FA_NOTEBOOK = "saved_state_fa.ipynb"
FA_CELLS = [
    "import attnviz\n"
    "from attnviz.dictionaries.pretrained import held_out_contexts\n"
    "from attnviz.widgets.feature_attribution import FeatureAttribution\n"
    "model = attnviz.load_model()\n"
    "fa = FeatureAttribution(model, 'When Mary and John went to the store, John gave a drink to',\n"
    "                        layer=2, examples_from=held_out_contexts(model, 8))\n"
    "dest = len(fa.tokens) - 1\n"
    "fa.select(dest, fa.select(dest)['rows'][1]['feature'])\n"
    "fa",
]
FA_SHOWN = """root => ({
    features: [...root.querySelectorAll('[data-testid="feature-row"]')]
        .map((r) => [r.dataset.feature, r.dataset.activation]),
    pressed: root.querySelector('button[aria-pressed="true"]')?.dataset.testid,
    numbers: ["pre-activation", "cell-sum", "remainder"]
        .map((id) => Number(root.querySelector(`[data-testid="${id}"]`).dataset.value)),
    heatmap: root.querySelector('[data-testid="dfa-heatmap"]').toDataURL(),
    shading: [...root.querySelectorAll('[data-testid="token"]')].map((t) => t.dataset.contribution),
    examples: root.querySelectorAll('[data-testid="example"]').length,
    panel: root.querySelector('[data-testid="feature-panel"]')?.dataset.feature,
})"""


def test_saved_feature_attribution_renders_its_features_and_dfa_without_a_kernel(
    lab, browser, screenshots
):
    lab.write_notebook(FA_NOTEBOOK, FA_CELLS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        open_and_run(lab, page, FA_NOTEBOOK)
        root = page.get_by_test_id("feature-attribution")
        root.get_by_test_id("feature-panel").wait_for(timeout=240_000)
        live = root.evaluate(FA_SHOWN)
        ran = lab.save_and_end_kernels(page, FA_NOTEBOOK)
    finally:
        context.close()
    assert len(live["features"]) > 1 and live["panel"] == live["pressed"].split("-")[1]
    pre, cells, remainder = live["numbers"]
    assert cells + remainder == pytest.approx(pre, abs=1e-3)

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(lab.notebook_url(FA_NOTEBOOK))
        root = page.get_by_test_id("feature-attribution")
        root.get_by_test_id("dfa-heatmap").wait_for(timeout=90_000)
        assert not ran & {k["id"] for k in lab.api("GET", "/api/kernels") or []}
        assert root.evaluate(FA_SHOWN) == live  # features, DFA pixels, numbers, shading, examples
        assert root.get_by_test_id("examples-pending").count() == 0  # nothing asked of a kernel
        # hover is the browser's own: it works with no kernel
        canvas = root.get_by_test_id("dfa-heatmap")
        b = canvas.bounding_box()
        canvas.hover(position={"x": b["width"] - 2, "y": 3.5 * b["height"] / 9})
        tip = root.get_by_test_id("tooltip")
        tip.wait_for(state="visible", timeout=5_000)
        assert tip.text_content().startswith("head 3\n")
        assert tip.get_attribute("data-source") == str(len(live["shading"]) - 1)
        page.screenshot(path=str(screenshots / "saved_state_feature_attribution.png"))
    finally:
        context.close()


HL_NOTEBOOK = "saved_state_head_loadings.ipynb"
HL_CELLS = [
    "from attnviz.dictionaries.pretrained import load_pretrained\n"
    "from attnviz.widgets.head_loadings import HeadLoadingExplorer\n"
    "view = HeadLoadingExplorer(load_pretrained('smollm2-135m', 'z-sae-L2'), ks=range(2, 7))\n"
    "view",
]
HL_SHOWN = """(root) => ({
    k: root.dataset.k, cluster: root.dataset.cluster,
    heatmap: root.querySelector('[data-testid="loadings-heatmap"]').toDataURL(),
    sizes: [...root.querySelectorAll('[data-testid="cluster-row"]')].map((r) => r.dataset.size),
    panel: root.querySelector('[data-testid="cluster-features"]')?.dataset.features,
    points: root.querySelector('[data-testid="chart-sizes"]').dataset.points,
})"""


def test_saved_head_loading_explorer_renders_its_clusters_without_a_kernel(lab, browser):
    lab.write_notebook(HL_NOTEBOOK, HL_CELLS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        open_and_run(lab, page, HL_NOTEBOOK)
        root = page.get_by_test_id("head-loadings")
        page.wait_for_function("r => r.dataset.analysed === 'true' && r.dataset.calls === '0'",
                               arg=root.element_handle(timeout=120_000), timeout=120_000)  # fmt: skip
        root.get_by_test_id("cluster-2").click()
        page.wait_for_function("r => r.dataset.cluster === '2' && r.dataset.busy === 'false'",
                               arg=root.element_handle())  # fmt: skip
        live = root.evaluate(HL_SHOWN)
        lab.save_and_end_kernels(page, HL_NOTEBOOK)
    finally:
        context.close()
    assert live["cluster"] == "2" and live["panel"]

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(lab.notebook_url(HL_NOTEBOOK))
        root = page.get_by_test_id("head-loadings")
        page.wait_for_function("r => r.dataset.analysed === 'true'",
                               arg=root.element_handle(timeout=90_000))  # fmt: skip
        assert root.evaluate(HL_SHOWN) == live  # clusters, heatmap pixels, selection, sizes
        assert root.get_attribute("data-calls") == "0"  # no sweep asked of a kernel
    finally:
        context.close()
