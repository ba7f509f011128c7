"""PatternExplorer and PairExplorer in a real JupyterLab and browser: tutorial 02 is opened and
run, then its two widgets are driven (heads, hover, a new prompt, a clicked cell whose pair
contributions must add up to the score shown, a clicked feature, an XSS prompt). Screenshots go
to tests/browser/screenshots/."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import TUTORIALS, notebook_finished, wait_for_widget
from tests.browser.lab import open_and_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TUTORIAL = TUTORIALS / "02_qk_pairs.ipynb"
NEW_PROMPT = "When Mary and John went to the store, John gave a drink to"
XSS = "<img src=x onerror=alert(1)> and <script>alert(2)</script> again"
TIMEOUT_MS = 60_000


def n_tokens(tokenizer: Any, text: str) -> int:
    return 1 + len(tokenizer(text, add_special_tokens=False)["input_ids"])


def pixels(root: Any, testid: str) -> str:
    return root.get_by_test_id(testid).evaluate("c => c.toDataURL('image/png')")


def settle(root: Any, count: int | None = None) -> None:
    """Wait until the widget is idle (and shows `count` tokens)."""
    root.page.wait_for_function(
        """([id, n]) => {
            const r = document.querySelector(`[data-testid="${id}"]`);
            return r && r.dataset.busy === "false" && (n === null || r.dataset.nTokens === String(n));
        }""",
        arg=[root.get_attribute("data-testid"), count],
        timeout=TIMEOUT_MS,
    )


def submit(root: Any, text: str) -> None:
    box = root.get_by_test_id("prompt")
    box.fill(text)
    box.press("Enter")


@pytest.fixture(scope="module")
def widgets(lab, page, screenshots) -> dict[str, Any]:
    errors = open_and_run(lab, page, TUTORIAL)
    found = {
        testid: wait_for_widget(page, lab, testid, screenshots, errors)
        for testid in ("pattern-explorer", "pair-explorer")
    }
    notebook_finished(page)
    page.screenshot(path=str(screenshots / "tutorial_02.png"), full_page=True)
    page.attnviz_errors = errors
    return found


def test_four_panels_with_a_cell_per_token_pair(widgets, screenshots):
    root = widgets["pattern-explorer"]
    settle(root)
    n = int(root.get_attribute("data-n-tokens"))
    assert root.locator('[data-axis="src"]').count() >= n  # every panel labels its sources
    for panel in ("panel-true", "panel-transcoder", "panel-masked", "panel-diff"):
        canvas = root.get_by_test_id(panel)
        assert canvas.is_visible() and canvas.evaluate("c => [c.width, c.height]") == [n, n]
    assert root.locator('[data-testid^="thumb-"]').count() == 9
    captions = root.locator('[data-testid^="thumb-"]').all_text_contents()
    assert all("KL tc 0." in c or "KL tc 1." in c for c in captions), captions
    assert root.get_by_test_id("status").text_content().startswith("layer 15 · ")
    assert "QK transcoder" in root.get_by_test_id("dictionary").text_content()
    root.screenshot(path=str(screenshots / "pattern_explorer.png"))


def test_head_change_redraws_every_panel(widgets, screenshots):
    root = widgets["pattern-explorer"]
    current = int(root.get_attribute("data-head"))
    other = (current + 4) % 9
    before = {p: pixels(root, p) for p in ("panel-true", "panel-transcoder", "panel-masked")}
    root.get_by_test_id(f"thumb-{other}").click()
    assert root.get_attribute("data-head") == str(other)
    for panel, old in before.items():
        assert pixels(root, panel) != old, panel
    line = root.get_by_test_id("kl-line").text_content()
    assert line.startswith(f"head {other}: KL")
    # Beside the masked map, the baseline its kept pairs improve on: its bias terms alone.
    assert re.search(r"masked map\) \d+\.\d+ · bias terms alone \d+\.\d+ ", line), line
    assert "bias terms alone" in root.get_by_test_id(f"thumb-{other}").get_attribute("title")
    root.screenshot(path=str(screenshots / "pattern_explorer_head.png"))


def test_hover_shows_both_tokens_and_three_values(widgets):
    root = widgets["pattern-explorer"]
    n = int(root.get_attribute("data-n-tokens"))
    box = root.get_by_test_id("panel-masked").bounding_box()
    cell = box["width"] / n
    root.get_by_test_id("panel-masked").hover(position={"x": 1.5 * cell, "y": (n - 0.5) * cell})
    tip = root.get_by_test_id("tooltip")
    tip.wait_for(state="visible", timeout=5_000)
    text = tip.text_content()
    assert f"destination {n - 1}:" in text and "source 1:" in text
    for name in ("model ", "transcoder ", "masked map ", "− model"):
        assert name in text, text
    root.get_by_test_id("status").hover()  # off the panels


def test_typing_a_prompt_recomputes_the_reconstructions(widgets, tiny_tokenizer, screenshots):
    root = widgets["pattern-explorer"]
    before = pixels(root, "panel-transcoder")
    submit(root, NEW_PROMPT)
    n = n_tokens(tiny_tokenizer, NEW_PROMPT)
    settle(root, n)
    assert root.get_by_test_id("panel-transcoder").evaluate("c => c.width") == n
    assert pixels(root, "panel-transcoder") != before
    root.screenshot(path=str(screenshots / "pattern_explorer_new_prompt.png"))


def test_clicked_cell_contributions_add_up_to_the_score(widgets, screenshots):
    root = widgets["pair-explorer"]
    settle(root)
    n = int(root.get_attribute("data-n-tokens"))
    box = root.get_by_test_id("heatmap").bounding_box()
    cell = box["width"] / n
    row, col = n - 2, 2
    root.get_by_test_id("heatmap").click(
        position={"x": (col + 0.5) * cell, "y": (row + 0.5) * cell}
    )
    title = root.get_by_test_id("decomposition").locator(".av-panel-title").first
    title.wait_for(timeout=TIMEOUT_MS)
    root.page.wait_for_function(
        """t => document.querySelector('[data-testid="pair-explorer"] [data-testid="decomposition"] .av-panel-title')
            .textContent.includes(t)""",
        arg=f"destination {row} ",
        timeout=TIMEOUT_MS,
    )
    settle(root)
    assert f"← source {col} " in title.text_content()
    score = root.get_by_test_id("score")
    terms = root.locator('[data-testid="term-row"]').evaluate_all(
        "rows => rows.map((r) => Number(r.dataset.contribution))"
    )
    kinds = root.locator('[data-testid="term-row"]').evaluate_all(
        "rows => rows.map((r) => r.dataset.kind)"
    )
    assert "pair" in kinds and kinds[-3:] == ["query_x_key_bias", "query_bias_x_key", "bias_x_bias"]
    assert sum(terms) == pytest.approx(float(score.get_attribute("data-value")), abs=1e-3)
    assert root.get_by_test_id("total").text_content() == score.text_content()  # as displayed
    assert root.get_by_test_id("heatmap-selected").is_visible()
    root.screenshot(path=str(screenshots / "pair_explorer_cell.png"))


def test_clicked_feature_shows_its_contexts(widgets, screenshots):
    root = widgets["pair-explorer"]
    button = root.locator('button[data-testid^="feature-q-"]').first
    index = button.get_attribute("data-index")
    button.click()
    panel = root.get_by_test_id("feature-panel")
    root.page.wait_for_function(
        """i => { const p = document.querySelector('[data-testid="pair-explorer"] [data-testid="feature-panel"]');
                  return p && p.dataset.index === i && p.dataset.side === "q"; }""",
        arg=index,
        timeout=120_000,  # the first feature click runs the model over the held-out contexts
    )
    assert f"query feature {index}" in panel.text_content()
    assert "held-out tokens" in root.get_by_test_id("density").text_content()
    examples = root.locator('[data-testid="example"]')
    assert examples.count() > 0
    acts = examples.evaluate_all("els => els.map((e) => Number(e.dataset.activation))")
    assert acts == sorted(acts, reverse=True) and acts[0] > 0
    assert examples.first.locator(".av-center").count() == 1
    assert button.get_attribute("aria-pressed") == "true"
    root.screenshot(path=str(screenshots / "pair_explorer_feature.png"))


def test_xss_prompt_renders_as_text(widgets, tiny_tokenizer, screenshots):
    root = widgets["pair-explorer"]
    submit(root, XSS)
    settle(root, n_tokens(tiny_tokenizer, XSS))
    root.page.wait_for_timeout(500)  # an injected <img src=x> would have failed by now
    titles = root.locator('[data-axis="src"]').evaluate_all("els => els.map((e) => e.title)")
    assert "".join(t.split(": ", 1)[1] for t in titles) == "<|endoftext|>" + XSS
    assert root.page.locator('img[src="x"]').count() == 0
    assert root.page.dialogs == []
    # a new prompt clears the old cell: nothing stale is explained
    assert root.get_by_test_id("hint").is_visible()
    root.screenshot(path=str(screenshots / "pair_explorer_xss.png"))


def test_no_page_errors_from_the_widgets(widgets):
    page = widgets["pair-explorer"].page
    assert page.dialogs == []
    assert [e for e in page.attnviz_errors if "attnviz" in e or "explorer" in e.lower()] == []
