"""AttentionView in a real JupyterLab and a real browser (Debian chromium through Playwright).

Tutorial 01 is opened and run once per module; the tests then drive the live widget in
order (head thumbnails, hover, layer, new prompts, an XSS prompt, an empty prompt) and leave
screenshots in tests/browser/screenshots/.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import TUTORIALS, notebook_finished, wait_for_widget
from tests.browser.lab import open_and_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPT = "When Mary and John went to the store, John gave a drink to"
NEW_PROMPT = "The quick brown fox jumps over the lazy dog"
XSS = "<img src=x onerror=alert(1)>"
TUTORIAL = TUTORIALS / "01_attention_patterns.ipynb"
WIDGET_TIMEOUT_MS = 240_000  # kernel start + model load (10-15 s alone, more on a busy machine)
RECOMPUTE_TIMEOUT_MS = 60_000


def n_tokens(tokenizer: Any, text: str) -> int:
    """Tokens the widget shows: the BOS token, then the text's own."""
    return 1 + len(tokenizer(text, add_special_tokens=False)["input_ids"])


def label_token(tokenizer: Any, text: str, position: int) -> str:
    """The text of token `position` as the widget shows it (position 0 is BOS)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode([ids[position - 1]])


def labels(view: Any, axis: str) -> Any:
    return view.locator(f'[data-testid="token-label"][data-axis="{axis}"]')


def label_titles(view: Any) -> list[str]:
    """Full token text of each source label (its title is 'index: token')."""
    titles = labels(view, "src").evaluate_all("els => els.map((e) => e.title)")
    return [t.split(": ", 1)[1] for t in titles]


def heatmap_pixels(view: Any) -> str:
    return view.get_by_test_id("heatmap").evaluate("c => c.toDataURL('image/png')")


def wait_for_tokens(page: Any, count: int, timeout: int = RECOMPUTE_TIMEOUT_MS) -> None:
    page.wait_for_function(
        """n => {
            const root = document.querySelector('[data-testid="attention-view"]');
            return root && root.dataset.busy === "false" && root.querySelectorAll(
                '[data-testid="token-label"][data-axis="src"]').length === n;
        }""",
        arg=count,
        timeout=timeout,
    )


def submit_prompt(view: Any, text: str) -> None:
    box = view.get_by_test_id("prompt")
    box.fill(text)
    box.press("Enter")


def shot(view: Any, screenshots: Path, name: str) -> None:
    view.screenshot(path=str(screenshots / f"{name}.png"))


@pytest.fixture(scope="module")
def view(lab, page, screenshots, tiny_tokenizer):
    """The AttentionView of tutorial 01, after "Run All Cells", set to layer 3 and PROMPT."""
    errors = open_and_run(lab, page, TUTORIAL)
    # the first of the tutorial's two AttentionViews (the second shows a previous-token head)
    root = wait_for_widget(
        page, lab, "attention-view", screenshots, errors, WIDGET_TIMEOUT_MS
    ).first
    notebook_finished(page)  # the kernel answers the widget between cells, so let them finish
    page.screenshot(path=str(screenshots / "tutorial_01.png"), full_page=True)
    page.attnviz_errors = errors
    if root.get_by_test_id("layer").input_value() != "3":
        root.get_by_test_id("layer").select_option("3")
        page.wait_for_function(
            """() => document.querySelector('[data-testid="attention-view"] [data-testid="status"]')
                .textContent.startsWith("layer 3 ·")""",
            timeout=RECOMPUTE_TIMEOUT_MS,
        )
    submit_prompt(root, PROMPT)
    wait_for_tokens(page, n_tokens(tiny_tokenizer, PROMPT))
    root.get_by_test_id("thumb-0").click()
    if root.get_by_test_id("scale").input_value() != "weights":
        root.get_by_test_id("scale").select_option("weights")
    return root


def test_heatmap_with_one_label_per_token(view, tiny_tokenizer, screenshots):
    n = n_tokens(tiny_tokenizer, PROMPT)
    heatmap = view.get_by_test_id("heatmap")
    assert heatmap.is_visible()
    assert heatmap.evaluate("c => [c.width, c.height]") == [n, n]  # one canvas pixel per cell
    assert labels(view, "src").count() == n and labels(view, "dest").count() == n
    assert "".join(label_titles(view)) == "<|endoftext|>" + PROMPT
    assert labels(view, "src").nth(3).text_content() == " and"
    status = view.get_by_test_id("status").text_content()
    assert status == f"layer 3 · head 0 · {n} tokens"
    assert not view.get_by_test_id("error").is_visible()
    # labels line up with the heatmap: the first and last source labels sit over its columns
    box = heatmap.bounding_box()
    first, last = labels(view, "src").first.bounding_box(), labels(view, "src").last.bounding_box()
    assert box["x"] <= first["x"] + first["width"] / 2 <= box["x"] + box["width"] / n
    assert box["x"] + box["width"] * (n - 1) / n <= last["x"] + last["width"] / 2
    shot(view, screenshots, "attention_view")


def test_nine_thumbnails_and_clicking_one_changes_the_heatmap(view, screenshots):
    thumbs = view.locator('[data-testid^="thumb-"]')
    assert thumbs.count() == 9
    assert view.get_by_test_id("thumb-0").get_attribute("aria-pressed") == "true"
    before = heatmap_pixels(view)
    view.get_by_test_id("thumb-4").click()
    view.page.wait_for_function(
        """() => document.querySelector('[data-testid="attention-view"]').dataset.head === "4" """
    )
    after = heatmap_pixels(view)
    assert after != before
    assert view.get_by_test_id("thumb-4").get_attribute("aria-pressed") == "true"
    assert view.get_by_test_id("thumb-0").get_attribute("aria-pressed") == "false"
    assert "head 4" in view.get_by_test_id("status").text_content()
    # back to head 0 draws head 0's picture again
    view.get_by_test_id("thumb-0").click()
    assert heatmap_pixels(view) == before
    view.get_by_test_id("thumb-4").click()
    shot(view, screenshots, "head_4")


def test_hover_shows_source_destination_and_value(view, screenshots):
    n = labels(view, "src").count()
    box = view.get_by_test_id("heatmap").bounding_box()
    row, col = n - 1, 3  # the last token (" to") looking at " and"
    cell = box["width"] / n
    view.get_by_test_id("heatmap").hover(
        position={"x": (col + 0.5) * cell, "y": (row + 0.5) * cell}
    )
    tooltip = view.get_by_test_id("tooltip")
    tooltip.wait_for(state="visible", timeout=5_000)
    text = tooltip.text_content()
    assert f'destination {row}: " to"' in text
    assert f'source {col}: " and"' in text
    assert "attention 0." in text or "attention 1.000" in text
    hot = view.locator(".av-label.av-hot")
    assert sorted(hot.evaluate_all("els => els.map((e) => e.dataset.axis + e.dataset.index)")) == [
        f"dest{row}",
        f"src{col}",
    ]
    shot(view, screenshots, "hover")
    # a future cell is masked
    view.get_by_test_id("heatmap").hover(position={"x": (n - 0.5) * cell, "y": 0.5 * cell})
    assert "masked" in tooltip.text_content()
    view.get_by_test_id("status").hover()  # off the heatmap
    tooltip.wait_for(state="hidden", timeout=5_000)


def wait_for_status(view: Any, start: str) -> None:
    view.page.wait_for_function(
        """start => {
            const root = document.querySelector('[data-testid="attention-view"]');
            const s = root.querySelector('[data-testid="status"]');
            return root.dataset.busy === "false" && s.textContent.startsWith(start);
        }""",
        arg=start,
        timeout=RECOMPUTE_TIMEOUT_MS,
    )


def choose_scale(view: Any, scale: str) -> None:
    view.get_by_test_id("scale").select_option(scale)
    view.page.wait_for_function(
        """scale => {
            const root = document.querySelector('[data-testid="attention-view"]');
            return root.dataset.scale === scale && root.dataset.busy === "false";
        }""",
        arg=scale,
        timeout=RECOMPUTE_TIMEOUT_MS,
    )


def test_a_sink_head_is_named_and_shown_without_its_sink(view, screenshots):
    """Layer 18 head 8 puts >99.9% of its attention on the first token: the widget says so, and
    'without first token' shows where the rest goes, on a labelled 0-1 scale (the old contrast
    switch painted this head as a solid dark block)."""
    view.get_by_test_id("layer").select_option("18")
    wait_for_status(view, "layer 18 ·")
    view.get_by_test_id("thumb-8").click()
    note = view.get_by_test_id("sink-note")
    note.wait_for(state="visible", timeout=10_000)
    assert "Head 8 puts >99.9% of its attention on the first token" in note.text_content()
    weights = heatmap_pixels(view)
    shot(view, screenshots, "sink_head_weights")
    choose_scale(view, "off_first")
    assert heatmap_pixels(view) != weights
    legend = view.locator(".av-legend").first.text_content()
    assert "without the first token (rows rescaled)" in legend and legend.count("1") >= 1
    assert "each row shows where the remaining" in note.text_content()
    # the picture is not one solid block: its pixels take many colours
    colours = view.get_by_test_id("heatmap").evaluate(
        """c => { const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                  const seen = new Set(); for (let i = 0; i < d.length; i += 4) seen.add(d[i] * 65536 + d[i+1] * 256 + d[i+2]);
                  return seen.size; }"""
    )
    assert colours > 10
    # hovering the first token's column says it is left out
    heatmap = view.get_by_test_id("heatmap")
    box = heatmap.bounding_box()
    cols = heatmap.evaluate("c => c.width")
    heatmap.hover(position={"x": 0.5 * box["width"] / cols, "y": box["height"] - 2})
    assert "left out of this scale" in view.get_by_test_id("tooltip").text_content()
    shot(view, screenshots, "sink_head_without_first_token")
    choose_scale(view, "log")
    assert "log scale" in view.locator(".av-legend").first.text_content()
    shot(view, screenshots, "sink_head_log")
    choose_scale(view, "weights")
    view.get_by_test_id("thumb-4").click()
    note.wait_for(state="hidden", timeout=10_000)


def test_shift_enter_types_a_new_line_and_does_not_run_the_cell(view):
    """JupyterLab runs the cell on Shift+Enter; inside the widget's prompt box it is a new line."""
    view.evaluate("root => { root.__marker = 'still here'; }")
    box = view.get_by_test_id("prompt")
    box.click()
    box.press("End")
    box.press("Shift+Enter")
    box.type("second line")
    view.page.wait_for_timeout(1_000)  # a cell run would replace the output within this time
    assert view.evaluate("root => root.__marker") == "still here"
    assert box.input_value().endswith("\nsecond line")
    assert view.page.locator(".jp-InputArea-prompt", has_text="*").count() == 0
    box.fill(PROMPT)  # leave the box as the kernel has it (nothing submitted)


def test_layer_selector_recomputes(view, tiny_tokenizer):
    before = heatmap_pixels(view)
    view.get_by_test_id("layer").select_option("5")
    view.page.wait_for_function(
        """() => {
            const s = document.querySelector('[data-testid="attention-view"] [data-testid="status"]');
            return s && s.textContent.startsWith("layer 5 ·");
        }""",
        timeout=RECOMPUTE_TIMEOUT_MS,
    )
    wait_for_tokens(view.page, n_tokens(tiny_tokenizer, PROMPT))
    assert heatmap_pixels(view) != before


def test_typing_a_prompt_recomputes(view, tiny_tokenizer, screenshots):
    # record every busy state the widget goes through, however short
    view.evaluate(
        """root => {
            window.__busySeen = [];
            new MutationObserver(() => window.__busySeen.push(root.dataset.busy))
                .observe(root, { attributes: true, attributeFilter: ["data-busy"] });
        }"""
    )
    submit_prompt(view, NEW_PROMPT)
    n = n_tokens(tiny_tokenizer, NEW_PROMPT)
    wait_for_tokens(view.page, n)
    assert "".join(label_titles(view)) == "<|endoftext|>" + NEW_PROMPT
    assert labels(view, "dest").count() == n
    assert view.get_by_test_id("heatmap").evaluate("c => c.width") == n
    assert "true" in view.page.evaluate("window.__busySeen")  # "computing…" was shown
    assert view.get_by_test_id("status").text_content() == f"layer 5 · head 4 · {n} tokens"
    shot(view, screenshots, "new_prompt")


def test_xss_prompt_renders_as_text(view, tiny_tokenizer, screenshots):
    submit_prompt(view, XSS)
    wait_for_tokens(view.page, n_tokens(tiny_tokenizer, XSS))
    view.page.wait_for_timeout(500)  # an injected <img src=x> would have failed to load by now
    assert "".join(label_titles(view)) == "<|endoftext|>" + XSS
    assert any("<" in t for t in labels(view, "src").all_text_contents())
    assert view.locator("img").count() == 0
    assert view.page.locator('img[src="x"]').count() == 0
    assert view.get_by_test_id("prompt").input_value() == XSS
    assert view.page.dialogs == []
    shot(view, screenshots, "xss_prompt")


def test_empty_prompt_shows_the_error_and_keeps_the_picture(view, tiny_tokenizer, screenshots):
    n = n_tokens(tiny_tokenizer, XSS)
    before = heatmap_pixels(view)
    submit_prompt(view, "")
    error = view.get_by_test_id("error")
    error.wait_for(state="visible", timeout=RECOMPUTE_TIMEOUT_MS)
    assert "empty" in error.text_content()
    assert "from the last input that worked" in error.text_content()
    color = error.evaluate("e => getComputedStyle(e).color")
    assert color.startswith("rgb(") and int(color[4:].split(",")[0]) > 100  # red text
    assert labels(view, "src").count() == n and heatmap_pixels(view) == before
    shot(view, screenshots, "empty_prompt_error")
    # a good prompt clears the error
    submit_prompt(view, PROMPT)
    wait_for_tokens(view.page, n_tokens(tiny_tokenizer, PROMPT))
    error.wait_for(state="hidden", timeout=RECOMPUTE_TIMEOUT_MS)


def test_long_prompt_is_shown_in_blocks(view, tiny_tokenizer, screenshots):
    text = " ".join(f"word{i}" for i in range(300))  # about 900 tokens
    n = n_tokens(tiny_tokenizer, text)
    factor = -(-n // 512)
    side = -(-n // factor)
    submit_prompt(view, text)
    view.page.wait_for_function(
        """side => {
            const c = document.querySelector('[data-testid="attention-view"] [data-testid="heatmap"]');
            return c && c.width === side;
        }""",
        arg=side,
        timeout=RECOMPUTE_TIMEOUT_MS,
    )
    status = view.get_by_test_id("status").text_content()
    assert f"{n} tokens" in status and f"{factor}×{factor} blocks" in status
    assert view.get_by_test_id("thumb-8").locator("canvas").evaluate("c => c.width") == side
    # labels are thinned out to stay readable, and still sit within the heatmap's width
    count = labels(view, "src").count()
    assert 10 < count < side
    box = view.get_by_test_id("heatmap").bounding_box()
    assert box["width"] <= 480 + 2  # plus its 1px border
    shot(view, screenshots, "long_prompt")
    # a click on a block zooms into a window of the prompt at full resolution, without the model
    heatmap = view.get_by_test_id("heatmap")
    heatmap.scroll_into_view_if_needed()
    box = heatmap.bounding_box()
    cell = box["width"] / side
    heatmap.click(position={"x": (side // 2 - 3.5) * cell, "y": (side // 2 + 0.5) * cell})
    view.page.wait_for_function(
        """() => document.querySelector('[data-testid="attention-view"] [data-testid="heatmap"]')
            .width === 512""",
        timeout=RECOMPUTE_TIMEOUT_MS,
    )
    status = view.get_by_test_id("status").text_content()
    assert "showing tokens" in status and "blocks" not in status
    first = labels(view, "src").first.get_attribute("title")
    start = int(first.split(":")[0])
    assert 0 < start < n - 512 and first == f"{start}: {label_token(tiny_tokenizer, text, start)}"
    shot(view, screenshots, "long_prompt_zoomed")
    view.get_by_test_id("unzoom").click()
    view.page.wait_for_function(
        """side => document.querySelector('[data-testid="attention-view"] [data-testid="heatmap"]')
            .width === side""",
        arg=side,
        timeout=RECOMPUTE_TIMEOUT_MS,
    )
    assert not view.get_by_test_id("unzoom").is_visible()
    submit_prompt(view, PROMPT)
    wait_for_tokens(view.page, n_tokens(tiny_tokenizer, PROMPT))


def test_multiline_prompt_keeps_its_newlines(view, tiny_tokenizer):
    text = "def f(x):\n    return x\n"
    submit_prompt(view, text)
    wait_for_tokens(view.page, n_tokens(tiny_tokenizer, text))
    assert "".join(label_titles(view)) == "<|endoftext|>" + text
    assert view.get_by_test_id("prompt").input_value() == text
    # pressing Enter again on the same text sends nothing: the kernel already has it
    view.get_by_test_id("prompt").press("End")
    view.get_by_test_id("prompt").press("Enter")
    assert view.get_attribute("data-busy") == "false"


def test_every_token_is_labelled_up_to_128_tokens(view, tiny_tokenizer, screenshots):
    """Tutorial 01's 52-token prompt used to lose every second label; up to 128 tokens every
    token keeps its label (cells stay >= 9 px, the panel scrolls), readable and not overlapping."""
    text = "the cat sat on the mat and the dog ran " * 12
    n = n_tokens(tiny_tokenizer, text)
    assert 100 < n <= 128
    submit_prompt(view, text)
    wait_for_tokens(view.page, n)
    assert labels(view, "dest").count() == n
    boxes = labels(view, "src").evaluate_all(
        "els => els.map((e) => [e.getBoundingClientRect().left, parseFloat(getComputedStyle(e).fontSize)])"
    )
    lefts = sorted(b[0] for b in boxes)
    assert min(b - a for a, b in itertools.pairwise(lefts)) >= 8.9
    assert min(b[1] for b in boxes) >= 9
    shot(view, screenshots, "labels_128")


def test_a_dense_axis_labels_the_hovered_row_and_column(view, tiny_tokenizer):
    text = " ".join(f"w{i}" for i in range(90))  # ~270 tokens: every k-th label
    n = n_tokens(tiny_tokenizer, text)
    submit_prompt(view, text)
    view.page.wait_for_function(
        """n => document.querySelector('[data-testid="attention-view"] [data-testid="heatmap"]')
            .width === n""",
        arg=n,
        timeout=RECOMPUTE_TIMEOUT_MS,
    )
    assert labels(view, "src").count() < n
    heatmap = view.get_by_test_id("heatmap")
    box = heatmap.bounding_box()
    cell = box["width"] / n
    row, col = 101, 51  # neither is a labelled one (labels sit on multiples of the stride)
    heatmap.hover(position={"x": (col + 0.5) * cell, "y": (row + 0.5) * cell})
    src = view.get_by_test_id("heatmap-hover-src")
    dest = view.get_by_test_id("heatmap-hover-dest")
    assert src.is_visible() and dest.is_visible()
    assert src.text_content().startswith(f"{col}: ")
    assert dest.text_content().startswith(f"{row}: ")


def test_the_token_view_shades_the_prompt_by_the_picked_tokens_attention(view, tiny_tokenizer):
    submit_prompt(view, PROMPT)
    n = n_tokens(tiny_tokenizer, PROMPT)
    wait_for_tokens(view.page, n)
    tokens = view.get_by_test_id("token")
    assert tokens.count() == n
    assert "".join(tokens.all_text_contents()[1:]) == PROMPT
    tokens.nth(5).click()
    about = view.get_by_test_id("token-text-about").text_content()
    assert "token 5" in about
    shaded = tokens.evaluate_all("els => els.map((e) => e.style.background !== '')")
    assert shaded[:6] == [True] * 6 and not any(shaded[6:])  # later tokens: masked
    view.get_by_test_id("token-direction").select_option("to")
    shaded = tokens.evaluate_all("els => els.map((e) => e.style.background !== '')")
    assert not any(shaded[:5]) and all(shaded[5:])  # only later tokens attend to it


def test_no_dialogs_and_no_page_errors_from_the_widget(view):
    assert view.page.dialogs == []
    ours = [e for e in view.page.attnviz_errors if "attention" in e.lower() or "attnviz" in e]
    assert ours == []
