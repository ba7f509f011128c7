"""SteeringLab in a real JupyterLab and browser, on the tiny config-built model with a tiny
residual SAE: the strength slider changes the generation, the sweep draws a point per strength
for each method, a click on a point lists its rollouts, hostile prompt text stays text, errors
show in the widget, and the export opens offline with its chart and rollouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.lab import open_and_run
from tests.browser.test_export import offline_page  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "steering_lab.ipynb"
TIMEOUT_MS = 90_000
XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"
RELATIVE = (0.0, 1.0, 3.0)
SETUP = f"""import sys
sys.path.insert(0, {str(REPO)!r})
import torch
import attnviz.widgets.steering as st
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.models.nnsight_adapter import NNsightAdapter
from attnviz.widgets.steering import SteeringLab
from tests.helpers import TEXT
from tests.tiny_models import smollm2_tokenizer, tiny_llama

st.SWEEP_RELATIVE = {RELATIVE!r}
model = NNsightAdapter(tiny_llama(seed=0), smollm2_tokenizer(), "tiny-llama", bos_token_id=0)
torch.manual_seed(0)
sae = SAE(SAEConfig.for_model(model.spec, "resid_pre", 1, 64))
ids = model.to_tokens(TEXT + " and then the dog ran home to sleep by the fire")
contexts = torch.cat([ids[:, :14], ids[:, 2:16], ids[:, 4:18]])"""
CELLS = [
    SETUP,
    f"lab = SteeringLab(model, sae, contexts=contexts, plus='The cat', minus='A dog', "
    f"prompt={XSS + ' The cat'!r}, words='the, cat', n_new=8, rollouts=3, positions='all')\nlab",
    "torch.manual_seed(1)\n"
    "zsae = SAE(SAEConfig.for_model(model.spec, 'z', 1, 32))\n"
    "zlab = SteeringLab(model, zsae, contexts=contexts, source='feature', feature=3, "
    "prompt='The cat', n_new=8, relative=3.0)\nzlab",
]


@pytest.fixture(scope="module")
def root(lab, page, screenshots) -> Any:
    lab.write_notebook(NOTEBOOK, CELLS)
    errors = open_and_run(lab, page, NOTEBOOK)
    widget = page.locator('[data-testid="steering-lab"]').first
    try:
        widget.wait_for(timeout=TIMEOUT_MS)
        widget.get_by_test_id("steered").wait_for(timeout=TIMEOUT_MS)
    except Exception:
        page.screenshot(path=str(screenshots / "steering_lab_never_appeared.png"))
        raise AssertionError(f"no SteeringLab; page errors: {errors}\n{lab.log_tail()}") from None
    page.attnviz_errors = errors
    return widget


def idle(root: Any) -> None:
    root.page.wait_for_function("r => r.dataset.busy === 'false' && r.dataset.calls === '0'",
                                arg=root.element_handle(), timeout=TIMEOUT_MS)  # fmt: skip


def test_the_slider_changes_the_generation(root):
    idle(root)
    assert root.get_attribute("data-generation") == "1:0"
    root.get_by_test_id("slider").evaluate(
        """s => { s.value = "3"; s.dispatchEvent(new Event("input", { bubbles: true }));
                  s.dispatchEvent(new Event("change", { bubbles: true })); }"""
    )
    root.page.wait_for_function("r => r.dataset.generation === '3:0'", arg=root.element_handle(),
                                timeout=TIMEOUT_MS)  # fmt: skip
    idle(root)
    assert root.get_by_test_id("slider-value").text_content() == "3.00"
    steered = root.get_by_test_id("steered").text_content()
    unsteered = root.get_by_test_id("unsteered").text_content()
    assert steered.startswith(XSS) and unsteered.startswith(XSS)  # the prompt, as text
    assert steered != unsteered
    hits = root.get_by_test_id("steered").locator('[data-testid="hit"]').all_text_contents()
    assert all(h.lower() in ("the", "cat") for h in hits)


def test_hostile_prompt_text_stays_text(root, screenshots):
    assert root.locator("img").count() == 0 and root.locator("script").count() == 0
    assert root.page.dialogs == []
    root.screenshot(path=str(screenshots / "steering_lab.png"))


def test_the_sweep_draws_a_point_per_strength_for_each_method(root, screenshots):
    root.get_by_test_id("sweep-run").click()
    chart = root.get_by_test_id("sweep-chart")
    chart.wait_for(timeout=TIMEOUT_MS)
    idle(root)
    legend = chart.get_by_test_id("chart-legend").text_content()
    for method in ("ActAdd", "SAE reconstruction", "padding features out"):
        assert method in legend
    for series in range(3):
        assert chart.locator(
            f'g[data-series="{series}"] [data-testid="chart-point"]'
        ).count() == len(RELATIVE)
    assert chart.locator('[data-frontier="true"]').count() >= 3
    root.screenshot(path=str(screenshots / "steering_lab_sweep.png"))


def test_a_click_on_a_point_lists_its_rollouts(root):
    chart = root.get_by_test_id("sweep-chart")
    chart.locator('g[data-series="1"] [data-index="2"]').click(force=True)
    root.page.wait_for_function("r => r.dataset.point === '1,2'", arg=root.element_handle())
    summary = root.get_by_test_id("point-summary").text_content()
    assert summary.startswith("SAE reconstruction at relative 3.00") and "P(success)" in summary
    assert "nats/token" in summary
    assert root.get_by_test_id("rollout").count() == 3


def test_a_z_sae_feature_steers_through_the_chosen_heads(root):
    z = root.page.locator('[data-testid="steering-lab"]').nth(1)
    z.get_by_test_id("steered").wait_for(timeout=TIMEOUT_MS)
    heads = z.get_by_test_id("heads")
    assert heads.is_visible() and heads.input_value() == "0"
    about = z.get_by_test_id("about")
    assert "feature 3 of z SAE at layer 1 (all heads)" in about.text_content()
    heads.select_option("1")
    root.page.wait_for_function(
        "e => /\\(heads \\d+\\)/.test(e.textContent)",
        arg=about.element_handle(),
        timeout=TIMEOUT_MS,
    )
    assert not root.get_by_test_id("heads").is_visible()  # a residual SAE has no heads to choose


def test_errors_render_in_the_widget(root):
    words = root.get_by_test_id("words")
    words.fill(" , ")
    words.press("Enter")
    words.evaluate("w => w.dispatchEvent(new Event('change', { bubbles: true }))")
    root.get_by_test_id("error").filter(has_text="word list is empty").wait_for(timeout=TIMEOUT_MS)
    assert root.get_by_test_id("steered").text_content()  # the last picture stays
    assert root.page.attnviz_errors == []


@pytest.fixture(scope="module")
def exported(tiny_llama_adapter, tmp_path_factory) -> Path:
    import torch

    import attnviz.widgets.steering as st
    from attnviz.dictionaries.sae import SAE, SAEConfig
    from attnviz.widgets.steering import SteeringLab
    from tests.helpers import TEXT

    model = tiny_llama_adapter
    torch.manual_seed(0)
    sae = SAE(SAEConfig.for_model(model.spec, "resid_pre", 1, 64))
    ids = model.to_tokens(TEXT + " and then the dog ran home")
    view = SteeringLab(model, sae, contexts=torch.cat([ids[:, :12], ids[:, 2:14]]), plus="The cat",
                       minus="A dog", prompt="The cat sat", words="the", n_new=6, rollouts=2)  # fmt: skip
    view.run_sweep(relative=(0.0, 2.0))
    assert st.SWEEP_RELATIVE  # the default stays as it was
    return view.to_html(tmp_path_factory.mktemp("steering") / "steering.html")


def test_the_export_opens_offline(offline_page, exported, screenshots):  # noqa: F811
    page = offline_page
    page.goto(exported.as_uri())
    root = page.get_by_test_id("steering-lab")
    root.wait_for(timeout=20_000)
    assert root.get_by_test_id("static-note").is_visible()
    assert root.get_by_test_id("slider").is_disabled()
    assert root.get_by_test_id("steered").text_content().startswith("The cat sat")
    chart = root.get_by_test_id("sweep-chart")
    chart.locator('g[data-series="0"] [data-index="1"]').click(force=True)  # drawn without a kernel
    assert root.get_by_test_id("rollout").count() == 2
    root.screenshot(path=str(screenshots / "export_steering_lab.png"))
    assert page.requests == [] and page.problems == [] and page.dialogs == []
