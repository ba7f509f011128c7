"""attnviz.report: one HTML file holding every kind of widget with text between them, opened from
disk in Debian chromium with the network cut off: each widget renders and answers a hover, the
bundles are inlined once, hostile text stays text, and nothing is requested."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from playwright.sync_api import expect

import attnviz
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.widgets.attention_view import AttentionView
from attnviz.widgets.feature_attribution import FeatureAttribution
from attnviz.widgets.head_loadings import HeadLoadingExplorer
from attnviz.widgets.ito import ITOExplorer
from attnviz.widgets.pair_explorer import PairExplorer
from attnviz.widgets.pattern_explorer import PatternExplorer
from attnviz.widgets.steering import SteeringLab
from tests.browser.test_export import offline_page  # noqa: F401  (a fixture)
from tests.helpers import TEXT, head_mixing_sae, make_qk

pytestmark = [pytest.mark.browser]

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"
# root test id -> what to hover: a canvas (at a fraction of its box) or the first chart point
HOVERS = {
    "attention-view": ("heatmap", (0.2, 0.9)),
    "pattern-explorer": ("panel-true", (0.2, 0.9)),
    "pair-explorer": ("heatmap", (0.2, 0.9)),
    "feature-attribution": ("dfa-heatmap", (0.5, 0.5)),
    "head-loadings": ("chart-point", None),
    "ito-explorer": ("chart-point", None),
    "steering-lab": ("chart-point", None),
}


@pytest.fixture(scope="module")
def report_file(tiny_llama_adapter, tmp_path_factory):
    model, spec = tiny_llama_adapter, tiny_llama_adapter.spec
    ids = model.to_tokens(TEXT + " and then the dog ran home to sleep by the fire")
    contexts = torch.cat([ids[:, :14], ids[:, 2:16], ids[:, 4:18]])
    z = head_mixing_sae(spec, "z", 1)
    qk = make_qk(spec)
    fa = FeatureAttribution(model, TEXT, sae=z, examples_from=contexts)
    fa.select(len(fa.tokens) - 1)
    fa.feature = fa.features["rows"][0]["feature"]
    loadings = HeadLoadingExplorer(z, density=torch.full((z.cfg.d_sae,), 1e-3), ks=range(2, 6))
    loadings.analyse()
    ito = ITOExplorer(model, {"z1": z}, TEXT, l0=4, l0s=(1, 2, 4), contexts=contexts)
    ito.run_pareto()
    torch.manual_seed(0)
    resid = SAE(SAEConfig.for_model(spec, "resid_pre", 1, 64))
    lab = SteeringLab(model, resid, contexts=contexts,
                      plus="The cat", minus="A dog", prompt="The cat sat", n_new=4, rollouts=2)  # fmt: skip
    lab.run_sweep(relative=(0.0, 2.0))
    items = [
        f"What the heads of layer 1 do. {XSS}\n\nSecond paragraph.",
        AttentionView(model, TEXT, layer=1, head=2),
        AttentionView(model, "another prompt for the same bundle", layer=0),
        PatternExplorer(model, TEXT, qk=qk),
        PairExplorer(model, TEXT, qk=qk, cell=(9, 4)),
        fa,
        "Value and output SAEs.",
        loadings,
        ito,
        lab,
    ]
    path = tmp_path_factory.mktemp("report") / "report.html"
    return attnviz.report(items, path, title=f"Layer 1 {XSS}")


def test_the_file_inlines_each_bundle_once(report_file):
    doc = report_file.read_text(encoding="utf-8")
    bundles = re.findall(r'id="attnviz-bundle-([\w]+)"', doc)
    assert sorted(bundles) == sorted(set(bundles)) and len(bundles) == 7
    assert len(re.findall(r'id="attnviz-state-\d+"', doc)) == 8
    assert doc.count('id="attnviz-host"') == 1
    assert "http://" not in doc and "https://" not in doc and "<img" not in doc


def test_every_widget_renders_and_hovers_offline(offline_page, report_file, screenshots):  # noqa: F811
    page: Any = offline_page
    page.goto(report_file.as_uri())
    # every place filled by its widget (a wait_for_function would need eval, which the CSP bars)
    expect(page.locator("[data-attnviz-item] > [data-testid]")).to_have_count(8, timeout=30_000)
    assert page.locator(".attnviz-failed").count() == 0
    assert page.title() == f"Layer 1 {XSS}" and page.locator("h1").text_content() == page.title()
    texts = page.locator(".attnviz-text p").all_text_contents()
    assert texts == [f"What the heads of layer 1 do. {XSS}", "Second paragraph.",
                     "Value and output SAEs."]  # fmt: skip
    assert page.get_by_test_id("attention-view").count() == 2
    for testid, (target, where) in HOVERS.items():
        root = page.get_by_test_id(testid).first
        root.scroll_into_view_if_needed()
        spot = root.get_by_test_id(target).first
        if where is None:
            spot.hover(force=True)
        else:
            box = spot.bounding_box()
            assert box and box["width"] > 20, f"{testid}: {target} is not drawn"
            spot.hover(position={"x": where[0] * box["width"], "y": where[1] * box["height"]})
        tip = root.get_by_test_id("tooltip").first
        tip.wait_for(state="visible", timeout=5_000)
        assert tip.text_content().strip(), f"{testid}: empty tooltip"
        page.mouse.move(0, 0)
    assert root.get_by_test_id("static-note").first.is_visible()
    page.screenshot(path=str(screenshots / "report.png"), full_page=True)
    assert page.requests == [] and page.problems == [] and page.dialogs == []
    assert page.locator('img[src="x"]').count() == 0
