"""FeatureAttribution and PairExplorer's edge features in a real JupyterLab and browser:
tutorial 04 is run (it trains a small z SAE and opens the widget on an induction feature), with a
few cells appended for the test (a PairExplorer linked to the widget, an export). The widgets are
then driven: tokens, features, the DFA adding up to the pre-activation shown, hover, the edge's
contributions against the DFA cells, errors, an XSS prompt, the export opened offline."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest

from tests.browser.conftest import TUTORIALS, notebook_finished
from tests.browser.lab import open_and_run
from tests.browser.test_export import offline_page  # noqa: F401  (a fixture)
from tests.browser.test_qk_explorers import XSS, n_tokens, settle, submit

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TUTORIAL = TUTORIALS / "04_attention_output_saes.ipynb"
TIMEOUT_MS = 120_000
EXTRA = [
    # A random QK dictionary is enough here: the edge's features do not depend on it.
    """from attnviz.dictionaries.qk import QKConfig, QKDictionary
from attnviz.widgets.pair_explorer import PairExplorer

qk = QKDictionary(QKConfig.for_model(model.spec, LAYER, d_hidden_q=32, d_hidden_k=32))
linked = FeatureAttribution(model, "not yet", layer=LAYER, sae=sae)
pe = PairExplorer(model, PROMPT, layer=LAYER, qk=qk, attribution=linked)
pe""",
    "linked",
    'export = fa.to_html("dfa.html").resolve()\nprint(export)',
]


@pytest.fixture(scope="module")
def widgets(lab, page, screenshots) -> dict[str, Any]:
    nb = nbformat.read(TUTORIAL, as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in EXTRA]
    nbformat.write(nb, lab.root / TUTORIAL.name)
    errors = open_and_run(lab, page, TUTORIAL.name)
    notebook_finished(page)
    roots = page.locator('[data-testid="feature-attribution"]')
    roots.first.wait_for(timeout=TIMEOUT_MS)
    assert roots.count() == 2, f"page errors: {errors}\n{lab.log_tail()}"
    page.screenshot(path=str(screenshots / "tutorial_04.png"), full_page=True)
    page.attnviz_errors = errors
    return {"fa": roots.nth(0), "pe": page.get_by_test_id("pair-explorer"), "linked": roots.nth(1),
            "lab": lab}  # fmt: skip


def value(root: Any, testid: str) -> float:
    return float(root.get_by_test_id(testid).get_attribute("data-value"))


def wait_text(root: Any, testid: str, text: str) -> None:
    root.get_by_test_id(testid).filter(has_text=text).first.wait_for(timeout=TIMEOUT_MS)


def test_opens_on_a_feature_whose_cells_add_up_to_its_pre_activation(widgets, screenshots):
    root = widgets["fa"]
    settle(root)
    assert root.get_by_test_id("token").count() == int(root.get_attribute("data-n-tokens"))
    assert root.locator('[data-testid="feature-row"]').count() > 0
    # cells decoded in the browser from the binary payload; pre-activation from the SAE itself
    cells, remainder = value(root, "cell-sum"), value(root, "remainder")
    assert cells + remainder == pytest.approx(value(root, "pre-activation"), abs=1e-3)
    heads = root.locator('[data-testid="head-total"]').evaluate_all(
        "els => els.map((e) => Number(e.dataset.value))"
    )
    assert len(heads) == 9 and sum(heads) == pytest.approx(cells, abs=1e-3)
    assert root.get_by_test_id("feature-panel").count() == 1
    assert root.locator('[data-testid="example"]').count() > 0
    root.screenshot(path=str(screenshots / "feature_attribution.png"))


def test_hover_names_head_source_and_contribution(widgets):
    root = widgets["fa"]
    canvas = root.get_by_test_id("dfa-heatmap")
    box = canvas.bounding_box()
    cols = int(canvas.get_attribute("data-cols"))
    canvas.hover(position={"x": (cols - 2.5) * box["width"] / cols, "y": 6.5 * box["height"] / 9})
    tip = root.get_by_test_id("tooltip")
    tip.wait_for(state="visible", timeout=5_000)
    lines = tip.text_content().split("\n")
    assert lines[0] == "head 6" and lines[1].startswith(f"source {cols - 3}: ")
    assert lines[2].startswith("contribution ")
    root.get_by_test_id("status").hover()


def test_clicking_a_token_then_a_feature(widgets, screenshots):
    root = widgets["fa"]
    root.locator('[data-testid="token"][data-index="5"]').click()
    wait_text(root, "features-title", "destination 5 ")
    settle(root)
    button = root.locator('button[data-testid^="feature-"]').first
    feature = button.get_attribute("data-testid").split("-")[1]
    button.click()
    wait_text(root, "dfa-title", f"feature {feature} at destination 5 ")
    settle(root)
    assert root.get_by_test_id("dfa-heatmap").get_attribute("data-cols") == "6"
    assert value(root, "cell-sum") + value(root, "remainder") == pytest.approx(
        value(root, "pre-activation"), abs=1e-3
    )
    assert button.get_attribute("aria-pressed") == "true"
    root.screenshot(path=str(screenshots / "feature_attribution_click.png"))


def test_edge_contributions_equal_the_dfa_cells_of_that_head_and_source(widgets, screenshots):
    pe, linked = widgets["pe"], widgets["linked"]
    settle(pe)
    n = int(pe.get_attribute("data-n-tokens"))
    head = 6
    pe.get_by_test_id(f"thumb-{head}").click()
    box = pe.get_by_test_id("heatmap").bounding_box()
    cell = box["width"] / n
    dest, src = n - 1, n // 2 + 1  # the last token, a source in the first copy
    pe.get_by_test_id("heatmap").click(position={"x": (src + 0.5) * cell, "y": (dest + 0.5) * cell})
    pe.get_by_test_id("edge-table").wait_for(timeout=TIMEOUT_MS)
    settle(pe)
    rows = pe.locator('[data-testid="edge-row"]')
    listed = rows.evaluate_all(
        "rs => rs.map((r) => [r.dataset.feature, Number(r.dataset.contribution)])"
    )
    assert len(listed) > 0
    for feature, contribution in listed[:3]:
        pe.get_by_test_id(f"edge-feature-{feature}").click()
        wait_text(linked, "dfa-title", f"feature {feature} at destination {dest} ")
        settle(linked)
        canvas = linked.get_by_test_id("dfa-heatmap")
        b = canvas.bounding_box()
        cols = int(canvas.get_attribute("data-cols"))
        assert cols == dest + 1
        canvas.hover(
            position={"x": (src + 0.5) * b["width"] / cols, "y": (head + 0.5) * b["height"] / 9}
        )
        tip = linked.get_by_test_id("tooltip")
        tip.wait_for(state="visible", timeout=5_000)
        assert (tip.get_attribute("data-head"), tip.get_attribute("data-source")) == (
            str(head),
            str(src),
        )
        assert float(tip.get_attribute("data-contribution")) == pytest.approx(
            contribution, abs=1e-4
        )
        linked.get_by_test_id("status").hover()
    pe.screenshot(path=str(screenshots / "pair_explorer_edge.png"))


def test_errors_show_in_the_widget(widgets):
    root = widgets["fa"]
    submit(root, "")
    error = root.get_by_test_id("error")
    error.filter(has_text="empty").wait_for(timeout=TIMEOUT_MS)
    assert root.get_by_test_id("token").count() > 0  # the last picture stays


def test_xss_prompt_renders_as_text(widgets, tiny_tokenizer, screenshots):
    root = widgets["fa"]
    submit(root, XSS)
    settle(root, n_tokens(tiny_tokenizer, XSS))
    root.page.wait_for_timeout(500)  # an injected <img src=x> would have failed by now
    shown = root.locator('[data-testid="token"]').evaluate_all(
        "els => els.map((e) => e.title.split(': ').slice(1).join(': '))"
    )
    assert "".join(shown) == "<|endoftext|>" + XSS
    assert root.page.locator('img[src="x"]').count() == 0 and root.page.dialogs == []
    assert root.get_by_test_id("hint").is_visible()  # a new prompt clears the old selection
    root.screenshot(path=str(screenshots / "feature_attribution_xss.png"))


def test_the_export_opens_offline(widgets, offline_page):  # noqa: F811
    path = widgets["lab"].root / "dfa.html"
    assert path.is_file()
    offline_page.goto(path.as_uri())
    root = offline_page.get_by_test_id("feature-attribution")
    root.get_by_test_id("dfa-heatmap").wait_for(timeout=20_000)
    assert root.get_by_test_id("static-note").is_visible()
    canvas = root.get_by_test_id("dfa-heatmap")
    b = canvas.bounding_box()
    canvas.hover(position={"x": b["width"] - 2, "y": 6.5 * b["height"] / 9})
    assert root.get_by_test_id("tooltip").text_content().startswith("head 6")
    assert (
        offline_page.requests == [] and offline_page.problems == [] and offline_page.dialogs == []
    )


def test_no_page_errors(widgets):
    page = widgets["fa"].page
    assert [e for e in page.attnviz_errors if "attnviz" in e or "feature" in e.lower()] == []
