"""FeatureAttribution and PairExplorer's edge features in a real JupyterLab and browser:
tutorial 04 is run (it trains a small z SAE and opens the widget on an induction feature), with a
few cells appended for the test (a PairExplorer linked to the widget, an export, a widget on the
shipped SAEs of layers 2, 16 and 18). The widgets are then driven: tokens, features, the DFA
adding up to the pre-activation shown, hover, the edge's contributions against the DFA cells,
errors, an XSS prompt, the export opened offline, the layer switch with the examples found by a
request with progress, and a real 2048-token prompt typed into the prompt box."""

from __future__ import annotations

import time
from typing import Any

import nbformat
import pytest

from tests.browser.conftest import TUTORIALS, notebook_finished
from tests.browser.lab import open_and_run
from tests.browser.test_export import offline_page  # noqa: F401  (a fixture)
from tests.browser.test_qk_explorers import XSS, n_tokens, submit

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
    # The shipped SAEs (layers 2, 16, 18), 8 held-out contexts for the examples, opened on the
    # top feature at the last token; and a real 2048-token prompt (held-out pydocs text on one
    # line, as a text box holds it) left in a file for the long-prompt test to type in.
    """from pathlib import Path

from attnviz.dictionaries.pretrained import held_out_contexts

multi = FeatureAttribution(model, PROMPT, layer=2, examples_from=held_out_contexts(model, 8))
last = len(multi.tokens) - 1
multi.select(last, multi.select(last)["rows"][0]["feature"])
ids = [i for i in held_out_contexts(model, 24).reshape(-1).tolist()
       if i != model.spec.bos_token_id]
k = LONG_TOKENS - 1
for _ in range(8):  # decoding and encoding again may merge or split a token at the cut
    LONG = " ".join(model.tokenizer.decode(ids[:k]).split())
    got = model.to_tokens(LONG).shape[1]
    if got == LONG_TOKENS:
        break
    k += LONG_TOKENS - got
assert got == LONG_TOKENS, got
Path("long_prompt.txt").write_text(LONG)
multi""",
]
LONG_TOKENS = 2048


@pytest.fixture(scope="module")
def widgets(lab, page, screenshots) -> dict[str, Any]:
    nb = nbformat.read(TUTORIAL, as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in EXTRA]
    nb.cells[-1].source = f"LONG_TOKENS = {LONG_TOKENS}\n" + nb.cells[-1].source
    nbformat.write(nb, lab.root / TUTORIAL.name)
    errors = open_and_run(lab, page, TUTORIAL.name)
    notebook_finished(page)
    roots = page.locator('[data-testid="feature-attribution"]')
    roots.first.wait_for(timeout=TIMEOUT_MS)
    assert roots.count() == 3, f"page errors: {errors}\n{lab.log_tail()}"
    page.screenshot(path=str(screenshots / "tutorial_04.png"), full_page=True)
    page.attnviz_errors = errors
    return {"fa": roots.nth(0), "pe": page.get_by_test_id("pair-explorer"), "linked": roots.nth(1),
            "multi": roots.nth(2), "lab": lab}  # fmt: skip


def settle(root: Any, count: int | None = None) -> None:
    """Wait until this widget is idle (and shows `count` tokens). The page holds several
    FeatureAttribution widgets, so the wait is on this one's element, not the first by test id."""
    root.page.wait_for_function(
        """([r, n]) => r.dataset.busy === "false" && (n === null || r.dataset.nTokens === String(n))""",
        arg=[root.element_handle(), count],
        timeout=TIMEOUT_MS,
    )


def value(root: Any, testid: str) -> float:
    return float(root.get_by_test_id(testid).get_attribute("data-value"))


def wait_text(root: Any, testid: str, text: str, timeout_ms: int = TIMEOUT_MS) -> None:
    root.get_by_test_id(testid).filter(has_text=text).first.wait_for(timeout=timeout_ms)


def listed(root: Any) -> list[tuple[int, float]]:
    """(feature, activation) of each row of the features table."""
    rows = root.locator('[data-testid="feature-row"]').evaluate_all(
        "rs => rs.map((r) => [Number(r.dataset.feature), Number(r.dataset.activation)])"
    )
    return [(int(f), a) for f, a in rows]


def assert_adds_up(root: Any) -> None:
    """The DFA shown: cells + remainder = the SAE's pre-activation; heads sum to the cells."""
    cells, remainder = value(root, "cell-sum"), value(root, "remainder")
    assert cells + remainder == pytest.approx(value(root, "pre-activation"), abs=1e-3)
    heads = root.locator('[data-testid="head-total"]').evaluate_all(
        "els => els.map((e) => Number(e.dataset.value))"
    )
    assert len(heads) == 9 and sum(heads) == pytest.approx(cells, abs=1e-3)


def choose_layer(root: Any, layer: int) -> None:
    root.get_by_test_id("layer").select_option(str(layer))
    wait_text(root, "status", f"layer {layer} ·")
    settle(root)


def click_feature(root: Any, index: int = 0) -> int:
    """Click the features table's row `index`; waits for its DFA. Returns the feature."""
    button = root.locator('button[data-testid^="feature-"]').nth(index)
    feature = int(button.get_attribute("data-testid").split("-")[1])
    dest = root.get_by_test_id("features-title").text_content().split()[1]
    button.click()
    wait_text(root, "dfa-title", f"feature {feature} at destination {dest} ")
    settle(root)
    return feature


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


def test_switching_layer_lists_that_layers_features_and_still_adds_up(widgets, screenshots):
    root = widgets["multi"]
    settle(root)
    dest = int(root.get_attribute("data-n-tokens")) - 1
    assert root.get_by_test_id("layer").evaluate("s => [...s.options].map((o) => o.value)") == [
        "2",
        "16",
        "18",
    ]
    at2 = listed(root)
    assert len(at2) > 0 and "hook_z of layer 2" in root.get_by_test_id("dictionary").text_content()
    assert_adds_up(root)
    assert root.locator('[data-testid="feature-panel"][data-layer="2"]').count() == 1
    # every text the progress line shows while the examples are searched for
    root.evaluate(
        """root => {
            window.__faProgress = [];
            const line = root.querySelector('[data-testid="progress-text"]');
            new MutationObserver(() => window.__faProgress.push(line.textContent))
                .observe(line, { childList: true, characterData: true, subtree: true });
        }"""
    )
    choose_layer(root, 16)
    wait_text(root, "features-title", f"destination {dest} ")  # the clicked token stays
    at16 = listed(root)
    assert len(at16) > 0 and at16 != at2
    assert "hook_z of layer 16" in root.get_by_test_id("dictionary").text_content()
    assert root.get_by_test_id("dfa-heatmap").count() == 0  # feature ids are the SAE's own
    feature = click_feature(root)
    assert feature == at16[0][0]
    assert_adds_up(root)
    assert value(root, "pre-activation") == pytest.approx(
        at16[0][1], abs=1e-3
    )  # it fires: pre = act
    # the examples: a request with progress, answered into the feature panel
    panel = root.locator(
        f'[data-testid="feature-panel"][data-layer="16"][data-feature="{feature}"]'
    )
    panel.wait_for(timeout=180_000)
    assert "of 1,016 held-out tokens" in panel.get_by_test_id("density").text_content()  # 8 x 127
    progress = root.page.evaluate("window.__faProgress")  # 8 contexts: 2 forward passes of 4
    assert "max-activating examples · 2/2 · held-out contexts through the model" in progress, (
        progress
    )
    assert not root.get_by_test_id("progress-box").is_visible()
    root.screenshot(path=str(screenshots / "feature_attribution_layer16.png"))
    # and back: layer 2's features at the same token, the same numbers
    choose_layer(root, 2)
    wait_text(root, "features-title", f"destination {dest} ")
    assert listed(root) == at2


def test_a_2048_token_prompt_renders_and_stays_interactive(widgets, screenshots):
    root = widgets["multi"]
    text = (widgets["lab"].root / "long_prompt.txt").read_text()
    start = time.monotonic()
    submit(root, text)
    settle(root, LONG_TOKENS)
    shown = time.monotonic() - start
    assert root.get_by_test_id("token").count() == LONG_TOKENS
    last = root.locator(f'[data-testid="token"][data-index="{LONG_TOKENS - 1}"]')
    clicked = time.monotonic()
    last.click()
    wait_text(root, "features-title", f"destination {LONG_TOKENS - 1} ")
    settle(root)
    features = time.monotonic() - clicked
    clicked = time.monotonic()
    feature = click_feature(root)
    dfa = time.monotonic() - clicked
    print(
        f"\n2048-token prompt: Enter to tokens drawn {shown:.2f} s; token click to features "
        f"{features:.2f} s; feature click to DFA heatmap {dfa:.2f} s"
    )
    canvas = root.get_by_test_id("dfa-heatmap")
    assert canvas.get_attribute("data-cols") == "512"  # 2048 sources summed in blocks of 4
    assert "blocks of 4" in root.get_by_test_id("dfa-scale").text_content()
    assert_adds_up(root)
    # hover: a block of four sources, with their summed contribution
    b = canvas.bounding_box()
    canvas.hover(position={"x": 300.5 * b["width"] / 512, "y": 4.5 * b["height"] / 9})
    tip = root.get_by_test_id("tooltip")
    tip.wait_for(state="visible", timeout=5_000)
    assert (tip.get_attribute("data-head"), tip.get_attribute("data-source")) == ("4", "1200")
    assert tip.text_content().split("\n")[1].startswith("sources 1200–1203: ")
    root.get_by_test_id("status").hover()
    # the sources are shaded by their total: every token up to the destination has one
    shaded = root.locator('[data-testid="token"]').evaluate_all(
        "els => els.filter((e) => e.dataset.contribution !== '').length"
    )
    assert shaded == LONG_TOKENS
    root.screenshot(path=str(screenshots / "feature_attribution_2048.png"))
    # another token: the same feature's DFA there
    root.locator('[data-testid="token"][data-index="1000"]').click()
    wait_text(root, "dfa-title", f"feature {feature} at destination 1000 ")
    settle(root)
    assert canvas.get_attribute("data-cols") == "501"  # 1001 sources in blocks of 2
    assert_adds_up(root)


def test_no_page_errors(widgets):
    page = widgets["fa"].page
    assert [e for e in page.attnviz_errors if "attnviz" in e or "feature" in e.lower()] == []
