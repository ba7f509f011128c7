"""ITOExplorer in a real JupyterLab and browser, on the tiny config-built model with small SAEs
(tests/test_ito_explorer.py's tiny_sae), so the whole module takes well under a minute: the FVU
curves come from the "pareto" request (a curve per method, the random baseline dashed), the L0
slider moves the per-token lists, a token click and a feature click (its scatter and agreement),
the CE curves with bands and the note for a value SAE, errors in the widget, no page errors; the
export opened from disk offline keeps the lists and the scatter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.lab import open_and_run
from tests.browser.test_export import offline_page  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "ito_explorer.ipynb"
TIMEOUT_MS = 60_000
SETUP = f"""import sys
sys.path.insert(0, {str(REPO)!r})
import torch
from attnviz.models.nnsight_adapter import NNsightAdapter
from attnviz.widgets.ito import ITOExplorer
from tests.helpers import TEXT
from tests.test_ito_explorer import tiny_sae
from tests.tiny_models import smollm2_tokenizer, tiny_llama

model = NNsightAdapter(tiny_llama(seed=0), smollm2_tokenizer(), "tiny-llama", bos_token_id=0)
ids = model.to_tokens(TEXT + " and then the dog ran home to sleep by the fire")
contexts = torch.cat([ids[:, :16], ids[:, 3:19], ids[:, 6:22]])
saes = {{"z1": tiny_sae(model), "v1": tiny_sae(model, "v", 1, extra=16, k=4)}}"""
CELLS = [
    SETUP,
    "w = ITOExplorer(model, saes, TEXT, l0=4, l0s=(1, 2, 4, 8), contexts=contexts)\nw",
    "other = tiny_sae(model)\nother.cfg.model = 'gpt2'\n"
    "ITOExplorer(model, {'other': other}, TEXT, contexts=contexts)",
]


@pytest.fixture(scope="module")
def widgets(lab, page, screenshots) -> dict[str, Any]:
    lab.write_notebook(NOTEBOOK, CELLS)
    errors = open_and_run(lab, page, NOTEBOOK)
    roots = page.locator('[data-testid="ito-explorer"]')
    try:
        roots.nth(1).wait_for(timeout=TIMEOUT_MS)
        roots.nth(0).locator('[data-testid="pareto"][data-complete="true"]').wait_for(
            timeout=TIMEOUT_MS
        )
    except Exception:
        page.screenshot(path=str(screenshots / "ito_explorer_never_appeared.png"))
        raise AssertionError(f"no ITOExplorer; page errors: {errors}\n{lab.log_tail()}") from None
    page.attnviz_errors = errors
    return {"w": roots.nth(0), "bad": roots.nth(1)}


def idle(root: Any) -> None:
    root.page.wait_for_function(
        "r => r.dataset.busy === 'false' && r.dataset.calls === '0'",
        arg=root.element_handle(),
        timeout=TIMEOUT_MS,
    )


def wait_data(root: Any, key: str, value: str) -> None:
    """Wait until the widget's root says data-<key>="value"."""
    root.page.wait_for_function(
        "([r, k, v]) => r.dataset[k] === v", arg=[root.element_handle(), key, value],
        timeout=TIMEOUT_MS,
    )  # fmt: skip


def ito_count(root: Any) -> int:
    return int(root.get_by_test_id("ito-list").get_attribute("data-count"))


def test_a_curve_for_each_method_and_the_random_baseline_dashed(widgets, screenshots):
    root = widgets["w"]
    charts = root.locator('[data-testid="fvu-chart"]')
    assert charts.count() == 2  # one per dictionary
    for i in range(2):
        chart = charts.nth(i)
        legend = chart.get_by_test_id("chart-legend").text_content()
        for name in ("topk", "mp", "gp", "mp, random dictionary", "gp, random dictionary"):
            assert name in legend
        lines = chart.locator("g[data-series] > path:not([data-testid])")
        assert lines.count() == 5  # three methods, two random baselines; the encoder is a dot
        dashed = chart.locator('path[stroke-dasharray="5 4"]')
        assert dashed.count() == 2
        assert int(chart.get_attribute("data-points")) == 5 * 4 + 1
    root.screenshot(path=str(screenshots / "ito_explorer.png"))


def test_the_slider_moves_the_per_token_lists(widgets):
    root = widgets["w"]
    idle(root)
    assert root.get_attribute("data-lists-l0") == "4" and ito_count(root) == 4
    before = root.get_by_test_id("ito-list").text_content()
    root.get_by_test_id("l0-slider").evaluate(
        """s => { s.value = "2"; s.dispatchEvent(new Event("input", { bubbles: true }));
                  s.dispatchEvent(new Event("change", { bubbles: true })); }"""
    )
    wait_data(root, "listsL0", "2")
    idle(root)
    assert 1 <= ito_count(root) <= 2 and root.get_by_test_id("ito-list").text_content() != before
    assert root.get_by_test_id("l0-value").text_content() == "2"
    assert "at L0 2 ·" in root.get_by_test_id("status").text_content()
    root.locator('[data-testid="token"][data-index="3"]').click()
    assert root.get_by_test_id("lists-title").text_content().startswith("token 3 ")
    assert root.get_attribute("data-token") == "3"
    shared = root.locator('[data-testid="feature-row"][data-shared="true"]').count()
    assert f"{shared // 2} shared" in root.get_by_test_id("lists-title").text_content()


def test_a_feature_click_draws_its_scatter(widgets, screenshots):
    root = widgets["w"]
    button = root.locator('[data-testid="ito-list"] button[data-testid="feature"]').first
    feature = button.get_attribute("data-feature")
    button.click()
    wait_data(root, "scatterFeature", feature)
    idle(root)
    scatter = root.get_by_test_id("scatter-chart")
    assert int(scatter.get_attribute("data-points")) > 0
    assert f"feature {feature}:" in scatter.text_content()
    for testid in ("corr", "corr-strong", "corr-weak", "jaccard"):
        assert root.get_by_test_id("agreement").get_by_test_id(testid).is_visible()
    point = scatter.locator('[data-testid="chart-point"]').first
    point.hover(force=True)  # points may overlap: whichever is on top answers
    tip = scatter.get_by_test_id("tooltip")
    tip.wait_for(state="visible", timeout=5_000)
    assert "context " in tip.text_content()
    root.screenshot(path=str(screenshots / "ito_explorer_scatter.png"))


def test_ce_curves_with_bands_and_the_value_sae_note(widgets):
    root = widgets["w"]
    assert "v cannot be spliced" in root.get_by_test_id("ce-note").text_content()
    root.get_by_test_id("ce-run").click()
    root.get_by_test_id("ce-chart").wait_for(timeout=TIMEOUT_MS)
    idle(root)
    assert root.locator('[data-testid="ce-chart"]').count() == 1  # z only
    assert root.get_by_test_id("ce-chart").locator('[data-testid="chart-band"]').count() >= 3
    assert not root.get_by_test_id("ce-run").is_visible()


def test_errors_render_in_the_widget(widgets):
    bad = widgets["bad"]
    error = bad.get_by_test_id("error")
    assert error.is_visible() and "other is an SAE for gpt2, not tiny-llama" in error.text_content()
    root = widgets["w"]
    box = root.get_by_test_id("prompt")
    box.fill("   ")
    box.press("Enter")
    root.get_by_test_id("error").filter(has_text="the text is empty").wait_for(timeout=TIMEOUT_MS)
    assert "last input that worked" in root.get_by_test_id("error").text_content()
    assert ito_count(root) >= 1  # the last picture stays
    assert root.page.attnviz_errors == [] and root.page.dialogs == []


SHOWN = """root => ({
    lists: [...root.querySelectorAll('[data-testid="feature-row"]')]
        .map((r) => [r.dataset.list, r.dataset.feature, r.dataset.activation, r.dataset.shared]),
    title: root.querySelector('[data-testid="lists-title"]').textContent,
    curves: root.querySelectorAll('[data-testid="fvu-chart"] [data-testid="chart-point"]').length,
    bands: root.querySelectorAll('[data-testid="chart-band"]').length,
    scatter: root.querySelector('[data-testid="scatter-chart"]').dataset.points,
    agreement: root.querySelector('[data-testid="agreement"]').textContent,
    l0: root.querySelector('[data-testid="l0-value"]').textContent,
})"""


def test_a_saved_notebook_re_renders_without_its_kernel(widgets, lab, screenshots):
    root = widgets["w"]
    page = root.page
    live = root.evaluate(SHOWN)
    page.locator(".jp-Cell .jp-InputArea-prompt").first.click()  # focus the notebook, not a box
    ran = lab.save_and_end_kernels(page, NOTEBOOK)
    page.goto(lab.notebook_url(NOTEBOOK))
    again = page.locator('[data-testid="ito-explorer"]').first
    again.get_by_test_id("scatter-chart").wait_for(timeout=TIMEOUT_MS)
    assert not ran & {k["id"] for k in lab.api("GET", "/api/kernels") or []}
    assert again.evaluate(SHOWN) == live
    assert again.get_attribute("data-calls") == "0"  # nothing asked of a kernel
    page.screenshot(path=str(screenshots / "saved_state_ito_explorer.png"))


@pytest.fixture(scope="module")
def exported(tiny_llama_adapter, tmp_path_factory) -> Path:
    import torch

    from attnviz.widgets.ito import ITOExplorer
    from tests.helpers import TEXT
    from tests.test_ito_explorer import tiny_sae

    model = tiny_llama_adapter
    ids = model.to_tokens(TEXT + " and then the dog ran home")
    view = ITOExplorer(model, {"z1": tiny_sae(model)}, TEXT, l0=4, l0s=(1, 4),
                       contexts=torch.cat([ids[:, :12], ids[:, 2:14]]))  # fmt: skip
    view.run_pareto()
    view.run_ce()
    view.show_feature(view.token_features()["ito"][0][0])
    return view.to_html(tmp_path_factory.mktemp("ito") / "ito.html")


def test_the_export_opens_offline(offline_page, exported, screenshots):  # noqa: F811
    page = offline_page
    page.goto(exported.as_uri())
    root = page.get_by_test_id("ito-explorer")
    root.wait_for(timeout=20_000)
    assert root.get_by_test_id("static-note").is_visible()
    assert root.get_by_test_id("l0-slider").is_disabled()
    assert root.locator('[data-testid="fvu-chart"]').count() == 1
    assert root.locator('[data-testid="ce-chart"]').count() == 1
    assert int(root.get_by_test_id("scatter-chart").get_attribute("data-points")) > 0
    root.locator('[data-testid="token"][data-index="2"]').click()  # drawn without a kernel
    assert root.get_by_test_id("lists-title").text_content().startswith("token 2 ")
    root.screenshot(path=str(screenshots / "export_ito_explorer.png"))
    assert page.requests == [] and page.problems == [] and page.dialogs == []
