"""Exported HTML files opened from disk in Debian chromium with the network cut off: they render,
keep hover and head selection, show hostile token text as text, and fetch nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from attnviz.widgets.attention_view import AttentionView
from attnviz.widgets.pair_explorer import PairExplorer
from attnviz.widgets.pattern_explorer import PatternExplorer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script> When Mary and John went to"


@pytest.fixture(scope="module")
def exported(smollm2, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exports")
    pairs = PairExplorer(smollm2, XSS, layer=3, cell=(20, 17))
    pairs.show_feature(
        "q", next(r["q_feature"] for r in pairs.decomposition["rows"] if r["q_feature"])
    )
    widgets = {
        "attention_view": AttentionView(smollm2, XSS, layer=3, head=2),
        "pattern_explorer": PatternExplorer(smollm2, XSS, layer=3),
        "pair_explorer": pairs,
    }
    return {name: w.to_html(out / f"{name}.html") for name, w in widgets.items()}


@pytest.fixture(scope="module")
def offline_page(browser) -> Any:
    """A page that may load file:, blob: and data: URLs only; everything else is recorded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, offline=True)
    page = context.new_page()
    page.requests, page.problems, page.dialogs = [], [], []

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(("file:", "blob:", "data:")):
            r.continue_()
        else:
            page.requests.append(url)
            r.abort()

    context.route("**/*", route)
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()


def open_export(page: Any, path: Path, testid: str) -> Any:
    page.goto(path.as_uri())
    root = page.get_by_test_id(testid)
    root.wait_for(timeout=20_000)
    page.wait_for_timeout(300)  # an injected <img src=x> would have failed to load by now
    return root


def pixels(root: Any, testid: str) -> str:
    return root.get_by_test_id(testid).evaluate("c => c.toDataURL('image/png')")


def assert_clean(page: Any, root: Any) -> None:
    assert page.requests == [] and page.problems == [] and page.dialogs == []
    assert (
        page.locator('img[src="x"]').count() == 0
        and page.locator("#attnviz-root script").count() == 0
    )
    assert root.get_by_test_id("static-note").is_visible()
    assert root.get_by_test_id("prompt").is_disabled()
    assert root.get_by_test_id("prompt").input_value() == XSS


def test_attention_view_export(offline_page, exported, smollm2, screenshots):
    page = offline_page
    root = open_export(page, exported["attention_view"], "attention-view")
    n = len(smollm2.to_str_tokens(smollm2.to_tokens(XSS)[0]))
    assert root.get_by_test_id("heatmap").evaluate("c => [c.width, c.height]") == [n, n]
    assert root.get_attribute("data-head") == "2"  # the head selected when exported
    titles = root.locator('[data-axis="src"]').evaluate_all("els => els.map((e) => e.title)")
    assert "".join(t.split(": ", 1)[1] for t in titles) == "<|endoftext|>" + XSS
    before = pixels(root, "heatmap")
    root.get_by_test_id("thumb-5").click()
    assert root.get_attribute("data-head") == "5" and pixels(root, "heatmap") != before
    box = root.get_by_test_id("heatmap").bounding_box()
    cell = box["width"] / n
    page.mouse.move(box["x"] + 2.5 * cell, box["y"] + (n - 0.5) * cell)
    tip = root.get_by_test_id("tooltip")
    tip.wait_for(state="visible", timeout=5_000)
    assert f"destination {n - 1}" in tip.text_content() and "source 2" in tip.text_content()
    root.screenshot(path=str(screenshots / "export_attention_view.png"))
    assert_clean(page, root)


def test_pattern_explorer_export(offline_page, exported, screenshots):
    page = offline_page
    root = open_export(page, exported["pattern_explorer"], "pattern-explorer")
    n = int(root.get_attribute("data-n-tokens"))
    for panel in ("panel-true", "panel-transcoder", "panel-masked", "panel-diff"):
        assert root.get_by_test_id(panel).evaluate("c => [c.width, c.height]") == [n, n]
    assert root.locator('[data-testid^="thumb-"]').count() == 9
    assert "KL tc 0." in root.get_by_test_id("thumb-3").text_content()
    before = pixels(root, "panel-masked")
    root.get_by_test_id("thumb-7").click()
    assert pixels(root, "panel-masked") != before
    assert (
        root.get_by_test_id("kl-line")
        .text_content()
        .startswith("head 7: KL(model ‖ transcoder) 0.")
    )
    box = root.get_by_test_id("panel-transcoder").bounding_box()
    cell = box["width"] / n
    page.mouse.move(box["x"] + 1.5 * cell, box["y"] + (n - 0.5) * cell)
    text = root.get_by_test_id("tooltip").text_content()
    for name in ("model", "transcoder", "masked map", "transcoder − model"):
        assert name in text
    root.screenshot(path=str(screenshots / "export_pattern_explorer.png"))
    assert_clean(page, root)


def test_pair_explorer_export_keeps_its_decomposition(offline_page, exported, screenshots):
    page = offline_page
    root = open_export(page, exported["pair_explorer"], "pair-explorer")
    score = float(root.get_by_test_id("score").get_attribute("data-value"))
    terms = root.locator('[data-testid="term-row"]').evaluate_all(
        "rows => rows.map((r) => Number(r.dataset.contribution))"
    )
    assert len(terms) >= 4 and sum(terms) == pytest.approx(score, abs=1e-3)
    assert (
        root.get_by_test_id("total").text_content() == root.get_by_test_id("score").text_content()
    )
    assert root.get_by_test_id("feature-panel").is_visible()
    assert root.locator('[data-testid="example"]').count() > 0
    root.screenshot(path=str(screenshots / "export_pair_explorer.png"))
    # Everything either works or is visibly off with the reason (nothing enabled but silent).
    note = root.get_by_test_id("static-note").text_content()
    assert "explaining another cell, features" in note and "need the notebook" in note
    assert root.get_by_test_id("map").is_disabled()
    buttons = root.locator('[data-testid="decomposition"] button')
    assert buttons.count() > 0
    assert all(buttons.nth(i).is_disabled() for i in range(buttons.count()))
    assert "needs the notebook" in buttons.first.get_attribute("title")
    shown = root.get_attribute("data-head")
    other = "1" if shown != "1" else "2"
    root.get_by_test_id(f"thumb-{other}").click()  # head selection works without the kernel
    assert root.get_attribute("data-head") == other
    assert "the shown head's cells need the notebook" in (
        root.get_by_test_id("other-head-note").text_content()
    )
    root.get_by_test_id(f"thumb-{shown}").click()
    assert root.get_by_test_id("other-head-note").count() == 0
    assert_clean(page, root)
