"""Pattern widgets with awkward input, in a real JupyterLab: a layer or head that does not exist
at construction, a prompt written with \\r\\n line endings, a prompt past the model's context
(here a 64-token context), characters split across tokens, and the PatternExplorer's captions
and masked cells."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.conftest import notebook_finished
from tests.browser.lab import open_and_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "pattern_inputs.ipynb"
CELLS = [
    "import dataclasses\n"
    "import attnviz\n"
    "from attnviz.widgets.attention_view import AttentionView\n"
    "from attnviz.widgets.pattern_explorer import PatternExplorer\n"
    "model = attnviz.load_model()",
    "bad_layer = AttentionView(model, 'The cat sat', layer=99)\nbad_layer",
    "bad_head = AttentionView(model, 'The cat sat', layer=3, head=20)\nbad_head",
    "crlf = AttentionView(model, 'one\\r\\ntwo\\r\\nthree', layer=3)\ncrlf",
    "short = attnviz.load_model()\n"
    "short.spec = dataclasses.replace(short.spec, n_ctx=64)  # a model with a 64-token context\n"
    "long = AttentionView(short, 'the cat sat on the mat. ' * 20, layer=3)\nlong",
    "cjk = AttentionView(model, '日本語のテキスト 🙂 emoji', layer=3)\ncjk",
    "explorer = PatternExplorer(model, 'When Mary and John went to the store, John gave', layer=15)\n"
    "explorer",
]
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def views(lab, page):
    lab.write_notebook(NOTEBOOK, CELLS)
    errors = open_and_run(lab, page, NOTEBOOK)
    page.get_by_test_id("pattern-explorer").locator('[data-testid="token-label"]').first.wait_for(
        timeout=300_000
    )
    notebook_finished(page)
    page.attnviz_errors = errors
    return page.get_by_test_id("attention-view")


def idle(view: Any) -> None:
    view.page.wait_for_function(
        "root => root.dataset.busy === 'false'", arg=view.element_handle(), timeout=TIMEOUT_MS
    )


def test_a_layer_that_does_not_exist_is_named_not_replaced(views):
    view = views.nth(0)
    assert "layer 99 is out of range" in view.get_by_test_id("error").text_content()
    select = view.get_by_test_id("layer")
    assert select.input_value() == "99"
    assert select.locator("option:checked").text_content() == "layer 99 (not available)"
    assert view.get_by_test_id("status").text_content().startswith("nothing shown yet")
    select.select_option("3")  # a real layer shows the prompt and drops the placeholder
    view.locator('[data-testid="token-label"]').first.wait_for(timeout=TIMEOUT_MS)
    assert select.locator("option", has_text="not available").count() == 0


def test_a_head_that_does_not_exist_is_a_message_not_a_traceback(views):
    view = views.nth(1)
    error = view.get_by_test_id("error")
    assert "head 20 is out of range" in error.text_content() and "heads 0-8" in error.text_content()
    assert view.get_attribute("data-head") == "0"
    assert view.page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
    view.get_by_test_id("thumb-5").click()
    assert view.get_attribute("data-head") == "5"


def test_crlf_line_endings_survive_the_prompt_box(views):
    view = views.nth(2)
    box = view.get_by_test_id("prompt")
    n = view.locator('[data-testid="token-label"][data-axis="src"]').count()
    box.click()
    box.press("End")
    box.press("Enter")  # unedited: nothing to send (a textarea shows the \r\n as \n)
    assert view.get_attribute("data-busy") == "false"
    box.press("Control+End")  # the end of the text, not of its first line
    box.type(" four")
    box.press("Enter")
    view.page.wait_for_function(
        "([root, n]) => root.dataset.busy === 'false' && root.querySelectorAll("
        '\'[data-testid="token-label"][data-axis="src"]\').length > n',
        arg=[view.element_handle(), n],
        timeout=TIMEOUT_MS,
    )
    titles = view.locator('[data-testid="token-label"][data-axis="src"]').evaluate_all(
        "els => els.map((e) => e.title.split(': ').slice(1).join(': '))"
    )
    assert "".join(titles[1:]) == "one\r\ntwo\r\nthree four"


def test_a_prompt_past_the_context_can_be_cut_in_the_widget(views):
    view = views.nth(3)
    error = view.get_by_test_id("error")
    assert "allows at most 64" in error.text_content() and "cut to context" in error.text_content()
    assert "truncate=True" not in error.text_content()
    cut = view.get_by_test_id("truncate")
    assert cut.is_visible()
    cut.check()
    view.locator('[data-testid="token-label"][data-axis="src"]').nth(63).wait_for(
        timeout=TIMEOUT_MS
    )
    idle(view)
    note = view.get_by_test_id("cut-note")
    assert "only its first 64" in note.text_content() and not error.is_visible()


def test_characters_split_across_tokens_show_their_text_not_u_fffd(views):
    view = views.nth(4)
    titles = view.locator('[data-testid="token-label"][data-axis="src"]').evaluate_all(
        "els => els.map((e) => e.title.split(': ').slice(1).join(': '))"
    )
    assert "\ufffd" not in "".join(titles)
    assert titles[1:3] == ["日[1/2]", "日[2/2]"] and "語[3/3]" in titles
    heatmap = view.get_by_test_id("heatmap")
    box = heatmap.bounding_box()
    n = len(titles)
    heatmap.hover(position={"x": 1.5 * box["width"] / n, "y": 2.5 * box["height"] / n})
    tip = view.get_by_test_id("tooltip").text_content()
    assert "日[2/2]" in tip and "日[1/2]" in tip and "\ufffd" not in tip


def test_explorer_captions_name_their_kl_and_masked_differences_are_hatched(views):
    explorer = views.page.get_by_test_id("pattern-explorer")
    thumb = explorer.get_by_test_id("thumb-0")
    assert "KL tc" in thumb.text_content() and "KL map" in thumb.text_content()
    assert "KL(model ‖ transcoder pattern)" in thumb.get_attribute("title")
    diff = explorer.get_by_test_id("panel-diff")
    background = diff.evaluate("c => getComputedStyle(c).backgroundImage")
    assert "repeating-linear-gradient" in background
    # the top-right cell is in the future: transparent there, so the hatching shows
    alpha = diff.evaluate("c => c.getContext('2d').getImageData(c.width - 1, 0, 1, 1).data[3]")
    assert alpha == 0
    assert "future (masked)" in explorer.locator(".av-legend").nth(1).text_content()


def test_the_explorer_fits_a_notebook_width_with_every_panel_labelled(views, screenshots):
    explorer = views.page.get_by_test_id("pattern-explorer")
    explorer.scroll_into_view_if_needed()
    for width, per_row in ((968, 2), (700, 2), (1900, 4)):
        explorer.evaluate(f"r => {{ r.style.width = '{width}px'; }}")
        views.page.wait_for_function(
            "([r, n]) => r.dataset.perRow === String(n)",
            arg=[explorer.element_handle(), per_row],
            timeout=10_000,
        )
        left = explorer.bounding_box()["x"]
        panels = explorer.locator(".av-panel")
        boxes = [panels.nth(i).bounding_box() for i in range(panels.count())]
        assert all(b["x"] + b["width"] <= left + width + 1 for b in boxes), width
        titles = explorer.locator(".av-panel .av-panel-title").all_text_contents()
        assert titles[:2] == (
            ["model", "difference"] if per_row == 2 else ["model", "transcoder q̂·k̂"]
        )
        rows = sorted({round(b["y"]) for b in boxes})
        assert len(rows) == -(-len(boxes) // per_row)
        for top in rows:  # each row's first panel carries the destination labels
            first = min((b for b in boxes if round(b["y"]) == top), key=lambda b: b["x"])
            index = boxes.index(first)
            assert panels.nth(index).locator('[data-axis="dest"]').count() > 0, (width, top)
        if width == 968:
            explorer.screenshot(path=str(screenshots / "pattern_explorer_968.png"))
            model, diff = boxes[0], boxes[1]
            # the model's pattern beside the difference: both in one screenful
            assert round(model["y"]) == round(diff["y"])
            assert model["height"] < 560 and explorer.bounding_box()["height"] < 1250
            thumbs = explorer.locator('[data-testid^="thumb-"]')
            tops = {round(thumbs.nth(i).bounding_box()["y"]) for i in range(thumbs.count())}
            assert len(tops) == 1  # all nine heads in one strip
    explorer.evaluate("r => { r.style.width = ''; }")


def test_no_page_errors(views):
    ours = [e for e in views.page.attnviz_errors if "attnviz" in e or "attention" in e.lower()]
    assert ours == [] and views.page.dialogs == []


def test_a_restarted_kernel_is_said_within_seconds(views):
    """Last: it restarts the kernel behind every widget of the notebook. The widgets' heartbeat
    goes unanswered and each says what to do within seconds."""
    view = views.nth(1)
    gone = view.get_by_test_id("kernel-gone")
    assert not gone.is_visible() and view.get_attribute("data-kernel") in (None, "live")
    page = views.page
    page.locator(".lm-MenuBar-item", has_text="Kernel").first.click()
    page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Restart Kernel…'))").click()
    page.locator(".jp-Dialog .jp-mod-accept").click(timeout=10_000)
    start = time.monotonic()
    gone.wait_for(state="visible", timeout=15_000)
    assert time.monotonic() - start < 10
    assert "run the widget's cell again" in gone.text_content()
    assert view.get_attribute("data-kernel") == "silent"
    # every widget says so (each on its own heartbeat; a cell scrolled out of the notebook's
    # window is detached and checks again once it is back)
    explorer = page.get_by_test_id("pattern-explorer")
    explorer.scroll_into_view_if_needed()
    explorer.get_by_test_id("kernel-gone").wait_for(state="visible", timeout=15_000)
