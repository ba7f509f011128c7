"""HeadLoadingExplorer in a real JupyterLab and browser, on the embedded model's shipped hook_z
SAE at layer 2: the sweep runs as a request with a progress bar on first display, the k slider
re-clusters, the log-log plot's points are the cluster sizes listed, clicks go cluster ->
features -> feature panel (examples, density, DFA), hostile token text stays text, errors show
in the widget, and the export opens offline."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from tests.browser.conftest import notebook_finished
from tests.browser.lab import open_and_run
from tests.browser.test_export import offline_page  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "head_loadings.ipynb"
TIMEOUT_MS = 120_000
CELLS = [
    """import torch, attnviz
from attnviz.analysis.sae_examples import SAEFeatureActivations
from attnviz.dictionaries.pretrained import SAE_TRAINED_CONTEXTS, held_out_contexts, load_pretrained
from attnviz.widgets.head_loadings import HeadLoadingExplorer

model = attnviz.load_model()
sae = load_pretrained(model.spec.name, "z-sae-L2")
XSS = "<img src=x onerror=alert(1)><script>alert(2)</script> & "
tokens = torch.cat([model.to_tokens(XSS * 40)[:, :128],
                    held_out_contexts(model, 11, SAE_TRAINED_CONTEXTS)])
lib = SAEFeatureActivations(model, sae, tokens)
# the feature that fires most on the hostile context, beyond anything it does elsewhere
margin = [float(c[0].max() - c[1:].max()) for c in map(lib.column, range(sae.cfg.d_sae))]
XSS_FEATURE = max(range(sae.cfg.d_sae), key=margin.__getitem__)
exported = HeadLoadingExplorer(sae, density=lib.density(), ks=range(4, 7))
exported.analyse()
exported.cluster = 1
print("exported", exported.to_html("head_loadings.html").name, "xss feature", XSS_FEATURE)""",
    """view = HeadLoadingExplorer(sae, model, ks=range(2, 9), examples_from=lib, feature=XSS_FEATURE)
view""",
    'HeadLoadingExplorer("resid-sae-L16", model)',
    "HeadLoadingExplorer(sae, k=5000, ks=range(2, 5))",
]


def idle(root: Any) -> None:
    """Wait until the widget has no request or trait write outstanding."""
    root.page.wait_for_function("r => r.dataset.busy === 'false' && r.dataset.calls === '0'",
                                arg=root.element_handle(), timeout=TIMEOUT_MS)  # fmt: skip


@pytest.fixture(scope="module")
def widgets(lab, page, screenshots) -> dict[str, Any]:
    lab.write_notebook(NOTEBOOK, CELLS)
    errors = open_and_run(lab, page, NOTEBOOK)
    roots = page.locator('[data-testid="head-loadings"]')
    try:
        roots.first.wait_for(timeout=240_000)
        # the sweep: a request with a progress bar, on first display
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid="head-loadings"]')].some((r) =>
                r.querySelector('[data-testid="progress-text"]').textContent.startsWith("k-means sweep"))""",
            timeout=TIMEOUT_MS,
        )
        for i in (0, 2):
            page.wait_for_function("r => r.dataset.analysed === 'true'",
                                   arg=roots.nth(i).element_handle(), timeout=240_000)  # fmt: skip
        notebook_finished(page)
    except Exception:
        page.screenshot(path=str(screenshots / "head_loadings_never_appeared.png"), full_page=True)
        raise AssertionError(f"page errors: {errors}\n{lab.log_tail()}") from None
    out = page.locator(".jp-OutputArea-output", has_text="xss feature").first.text_content()
    view = roots.nth(0)
    idle(view)
    page.attnviz_errors = errors
    return {"view": view, "resid": roots.nth(1), "bad_k": roots.nth(2), "lab": lab,
            "xss_feature": int(re.search(r"xss feature (\d+)", out).group(1))}  # fmt: skip


def tip(root: Any) -> Any:
    """The widget's own tooltip (each chart has one too)."""
    return root.locator(':scope > [data-testid="tooltip"]')


def listed_sizes(root: Any) -> list[int]:
    return root.locator('[data-testid="cluster-row"]').evaluate_all(
        "rows => rows.map((r) => Number(r.dataset.size))"
    )


def test_the_sweep_draws_heatmap_curves_sizes_and_map(widgets, screenshots):
    root = widgets["view"]
    assert (
        root.get_by_test_id("progress-box").is_hidden() and root.get_by_test_id("error").is_hidden()
    )
    n, k = int(root.get_attribute("data-n-features")), int(root.get_attribute("data-k"))
    assert n > 100 and 4 <= k <= 8
    heat = root.get_by_test_id("loadings-heatmap")
    assert heat.get_attribute("data-rows") == "9" and heat.get_attribute("data-features") == str(n)
    assert int(heat.get_attribute("data-cols")) == min(n, 640)
    sizes = listed_sizes(root)
    assert len(sizes) == k and sum(sizes) == n and sizes == sorted(sizes, reverse=True)
    assert root.locator('[data-testid^="band-"]').count() == sum(s > 0 for s in sizes)
    for name in ("inertia", "silhouette"):  # ks 2..8, loadings and null, and the chosen k
        assert root.get_by_test_id(f"chart-{name}").get_attribute("data-points") == str(7 + 7 + 2)
    assert "silhouette" in root.get_by_test_id("fit").text_content()
    assert root.get_by_test_id("map").evaluate("c => c.dataset.painted !== undefined")
    assert f"k = {k}" in root.get_by_test_id("status").text_content()
    root.screenshot(path=str(screenshots / "head_loadings.png"))


def test_the_log_log_points_are_the_cluster_sizes_listed(widgets):
    root = widgets["view"]
    marks = root.get_by_test_id("chart-sizes").locator(
        'g[data-series="0"] [data-testid="chart-point"]'
    )
    drawn = marks.evaluate_all(
        "ms => ms.map((m) => [Number(m.dataset.index), Number(m.dataset.size), Number(m.getAttribute('cx')), Number(m.getAttribute('cy'))])"
    )
    sizes = listed_sizes(root)
    assert [d[1] for d in sorted(drawn)] == [s for s in sizes if s > 0]
    # where they are drawn: x linear in log(rank), y linear in log(size)
    for axis, value in ((2, lambda d: math.log10(d[0] + 1)), (3, lambda d: math.log10(d[1]))):
        (a, pa), (b, pb) = [(value(d), d[axis]) for d in (drawn[0], drawn[-1])]
        if a == b:
            continue
        for d in drawn:
            assert d[axis] == pytest.approx(pa + (value(d) - a) * (pb - pa) / (b - a), abs=0.6)
    marks.nth(1).hover()
    tip = root.get_by_test_id("chart-sizes").get_by_test_id("tooltip")
    tip.wait_for(state="visible", timeout=5_000)
    assert f"features: {sizes[1]}" in tip.text_content() and "cluster 1:" in tip.text_content()
    root.get_by_test_id("status").hover()


def test_hover_names_feature_head_and_loading(widgets):
    root = widgets["view"]
    heat = root.get_by_test_id("loadings-heatmap")
    box = heat.bounding_box()
    heat.hover(position={"x": box["width"] * 0.3, "y": box["height"] * 4.5 / 9})
    shown = tip(root)
    shown.wait_for(state="visible", timeout=5_000)
    lines = shown.text_content().split("\n")
    assert re.fullmatch(r"feature F\d+ · cluster \d+", lines[0]) and lines[1] == "head L2 H4"
    assert lines[2].startswith("loading 0.") and shown.get_attribute("data-head") == "4"
    root.get_by_test_id("status").hover()


def test_hostile_tokens_render_as_text(widgets, screenshots):
    root, f = widgets["view"], widgets["xss_feature"]
    panel = root.get_by_test_id("feature-panel")
    assert panel.get_attribute("data-feature") == str(f)
    text = panel.locator('[data-testid="example"]').first.text_content()
    assert "<img" in text and "src" in text and "alert" in text
    assert root.page.locator('img[src="x"]').count() == 0 and root.page.dialogs == []
    assert root.locator("script").count() == 0
    assert panel.get_by_test_id("dfa-heatmap").get_attribute("data-rows") == "9"
    assert panel.get_by_test_id("density").is_visible()
    panel.screenshot(path=str(screenshots / "head_loadings_feature.png"))


def test_the_k_slider_reclusters(widgets):
    root = widgets["view"]
    before = listed_sizes(root)
    target = 6 if len(before) != 6 else 5
    root.get_by_test_id("k-slider").fill(str(target))
    root.page.wait_for_function(f"r => r.dataset.k === '{target}'", arg=root.element_handle(),
                                timeout=TIMEOUT_MS)  # fmt: skip
    idle(root)
    sizes = listed_sizes(root)
    assert len(sizes) == target and sum(sizes) == sum(before) and sizes != before
    assert root.get_by_test_id("k-value").text_content() == str(target)
    assert root.get_by_test_id("fit").text_content().startswith(f"k = {target}:")
    drawn = root.get_by_test_id("chart-sizes").locator(
        'g[data-series="0"] [data-testid="chart-point"]'
    )
    assert drawn.count() == sum(s > 0 for s in sizes)
    # the feature shown stays, and its cluster at the new k is the one selected
    title = root.get_by_test_id("feature-title").text_content()
    assert f"cluster {root.get_attribute('data-cluster')}" in title


def test_cluster_then_feature_then_its_panel(widgets, screenshots):
    root = widgets["view"]
    root.get_by_test_id("cluster-2").click()
    panel = root.get_by_test_id("cluster-panel")
    root.page.wait_for_function("r => r.dataset.cluster === '2'", arg=root.element_handle())
    idle(root)
    assert panel.get_attribute("data-cluster") == "2"
    assert panel.get_by_test_id("cluster-title").text_content() == (
        f"cluster 2 · {listed_sizes(root)[2]} features"
    )
    assert panel.get_by_test_id("profile-bar").count() == 9
    assert panel.locator('[data-testid="cluster-token"]').count() > 0
    shares = panel.get_by_test_id("cluster-heads-bar").evaluate_all(
        "bs => bs.map((b) => Number(b.dataset.value))"
    )
    assert len(shares) == 9 and sum(shares) == pytest.approx(1, abs=1e-3)
    first = panel.get_by_test_id("cluster-features").locator("button").first
    feature = first.get_attribute("data-testid").split("-")[1]
    first.click()
    root.page.wait_for_function(
        f"r => r.dataset.feature === '{feature}'", arg=root.element_handle()
    )
    idle(root)
    fp = root.get_by_test_id("feature-panel")
    assert fp.get_attribute("data-feature") == feature
    assert fp.get_by_test_id("feature-title").text_content() == f"feature F{feature} · cluster 2"
    assert (
        fp.locator('[data-testid="example"]').count() > 0
        and fp.get_by_test_id("density").is_visible()
    )
    assert fp.get_by_test_id("dfa-heatmap").is_visible()
    root.screenshot(path=str(screenshots / "head_loadings_cluster.png"))
    # the other ways to pick a cluster: a point of the size plot, the heatmap's band, the map
    root.get_by_test_id("chart-sizes").locator('g[data-series="0"] [data-index="0"]').click()
    root.page.wait_for_function("r => r.dataset.cluster === '0'", arg=root.element_handle())
    root.get_by_test_id("band-1").click()
    root.page.wait_for_function("r => r.dataset.cluster === '1'", arg=root.element_handle())
    spot = root.get_by_test_id("map").evaluate(
        """c => { const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200) return [(i / 4) % c.width, Math.floor(i / 4 / c.width)];
            return null; }"""
    )
    where = {"x": spot[0] + 1, "y": spot[1] + 1}
    root.get_by_test_id("map").hover(position=where)
    c = tip(root).get_attribute("data-cluster")
    root.get_by_test_id("map").click(position=where)
    root.page.wait_for_function(f"r => r.dataset.cluster === '{c}'", arg=root.element_handle())
    idle(root)
    assert panel.get_attribute("data-cluster") == root.get_attribute("data-cluster")


def test_errors_render_in_the_widget(widgets):
    resid = widgets["resid"]
    error = resid.get_by_test_id("error")
    assert error.is_visible() and "does not split into heads" in error.text_content()
    assert "--site z" in error.text_content() and resid.get_attribute("data-analysed") == "false"
    bad = widgets["bad_k"]
    assert (
        "k = 5000 is out of range: choose k between 2 and 2048"
        in bad.get_by_test_id("error").text_content()
    )
    assert bad.get_attribute("data-k") == "4"  # the best silhouette instead, drawn
    notes = bad.locator('[data-testid="note"]').all_text_contents()
    assert any(n.startswith("no model given") for n in notes)
    assert bad.get_by_test_id("loadings-heatmap").get_attribute("data-features") == "2048"


def test_the_export_opens_offline(widgets, offline_page):  # noqa: F811
    page = offline_page
    page.goto((widgets["lab"].root / "head_loadings.html").as_uri())
    root = page.get_by_test_id("head-loadings")
    page.wait_for_function(
        "r => r && r.dataset.analysed === 'true'", arg=root.element_handle(timeout=20_000)
    )
    assert (
        root.get_by_test_id("static-note").is_visible()
        and root.get_by_test_id("k-slider").is_disabled()
    )
    panel = root.get_by_test_id("cluster-panel")
    assert panel.get_attribute("data-cluster") == "1"
    root.get_by_test_id("cluster-0").click()  # works without a kernel, from the data shown
    assert (
        panel.get_attribute("data-cluster") == "0"
        and panel.get_by_test_id("profile-bar").count() == 9
    )
    assert panel.get_by_test_id("cluster-features").locator("button").count() > 0
    heat = root.get_by_test_id("loadings-heatmap")
    heat.hover(position={"x": 5, "y": 5})
    assert tip(root).text_content().startswith("feature F")
    assert page.requests == [] and page.problems == [] and page.dialogs == []


def test_no_page_errors(widgets):
    page = widgets["view"].page
    assert [e for e in page.attnviz_errors if "attnviz" in e or "head" in e.lower()] == []
