"""The request protocol (attnviz/widgets/requests.py + widgets/shared/requests.js) in a real
JupyterLab and a real browser, through RequestProbe: a request answered (binary array
included), one that errors, progress moving the bar, a cancel that stops the job in the kernel,
one reply per request id; and the shared chart drawn live and in an exported file."""

from __future__ import annotations

import json
from typing import Any

import pytest

from attnviz.widgets.charts import chart_spec
from attnviz.widgets.probe import RequestProbe
from tests.browser.conftest import notebook_finished
from tests.browser.lab import open_and_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "requests_probe.ipynb"
CELLS = ["from attnviz.widgets.probe import RequestProbe\nprobe = RequestProbe()\nprobe"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def probe(lab, page, screenshots) -> Any:
    lab.write_notebook(NOTEBOOK, CELLS)
    errors = open_and_run(lab, page, NOTEBOOK)
    root = page.get_by_test_id("request-probe")
    try:
        root.wait_for(timeout=120_000)
        notebook_finished(page)
    except Exception:
        page.screenshot(path=str(screenshots / "request_probe_never_appeared.png"))
        raise AssertionError(f"no request probe; page errors: {errors}\n{lab.log_tail()}") from None
    root.errors = errors
    return root


def ask(root: Any, button: str) -> Any:
    """Click a request button; the reply row it adds, once the reply is in."""
    n = root.get_by_test_id("reply").count()
    root.get_by_test_id(f"ask-{button}").click()
    row = root.get_by_test_id("reply").nth(n)
    row.wait_for(timeout=10_000)
    root.page.wait_for_function("r => r.dataset.status !== 'pending'", arg=row.element_handle(),
                                timeout=TIMEOUT_MS)  # fmt: skip
    return row


def messages(root: Any) -> dict[str, Any]:
    return json.loads(root.get_attribute("data-messages") or "{}")


def test_a_request_is_answered_with_its_array(probe):
    row = ask(probe, "echo")
    assert row.get_attribute("data-status") == "answer"
    assert row.get_attribute("data-array") == "0,1,2,3,4"  # float32 bytes, back as numbers
    assert "<b>not bold</b>" in row.text_content() and row.locator("b").count() == 0
    assert probe.get_by_test_id("error").is_hidden()


def test_errors_are_shown_in_the_widget(probe):
    row = ask(probe, "fail")
    assert row.get_attribute("data-status") == "error"
    error = probe.get_by_test_id("error")
    assert error.is_visible() and error.text_content() == "probe failure: as asked"
    row = ask(probe, "crash")
    assert "ValueError: an unexpected bug" in error.text_content()
    row = ask(probe, "unknown")
    assert "'no_such_method'" in error.text_content() and "echo" in error.text_content()
    ask(probe, "echo")  # the next request clears the message
    assert error.is_hidden()


def test_progress_moves_the_bar_and_cancel_stops_the_job_in_the_kernel(probe, screenshots):
    page = probe.page
    page.evaluate(
        """() => {
            const bar = document.querySelector('[data-testid="request-probe"] [data-testid="progress"]');
            window.__barValues = [];
            new MutationObserver(() => window.__barValues.push(bar.value))
                .observe(bar, { attributes: true, attributeFilter: ["value"] });
        }"""
    )
    n = probe.get_by_test_id("reply").count()
    probe.get_by_test_id("ask-slow").click()
    page.wait_for_function("() => new Set(window.__barValues).size >= 4", timeout=TIMEOUT_MS)
    assert probe.get_by_test_id("progress-box").is_visible()
    assert "slow job" in probe.get_by_test_id("progress-text").text_content()
    probe.screenshot(path=str(screenshots / "request_probe_progress.png"))
    probe.get_by_test_id("cancel").click()
    row = probe.get_by_test_id("reply").nth(n)
    page.wait_for_function("r => r.dataset.status !== 'pending'", arg=row.element_handle(),
                           timeout=TIMEOUT_MS)  # fmt: skip
    assert row.get_attribute("data-status") == "cancelled"
    values = page.evaluate("window.__barValues")
    assert values == sorted(values) and 0 < max(values) < 40
    page.wait_for_function("r => r.dataset.cancelledJobs !== ''", arg=probe.element_handle(),
                           timeout=TIMEOUT_MS)  # fmt: skip
    steps = int(probe.get_attribute("data-steps-run"))
    page.wait_for_timeout(1_500)  # a job still running would take 15 more steps meanwhile
    assert int(probe.get_attribute("data-steps-run")) == steps < 40
    assert probe.get_by_test_id("progress-box").is_hidden()
    (slow_id,) = probe.get_attribute("data-cancelled-jobs").split(",")
    assert messages(probe)[slow_id]["kinds"] == ["cancelled"]
    assert messages(probe)[slow_id]["progress"] >= 4


def test_each_request_gets_exactly_one_reply(probe):
    ask(probe, "echo")
    counts = messages(probe)
    rows = probe.get_by_test_id("reply").count()
    assert len(counts) == rows  # every request reached the kernel, none twice
    assert all(c["final"] == 1 for c in counts.values()), counts


def test_a_chart_answer_is_drawn_with_every_point(probe, screenshots):
    row = ask(probe, "chart")
    assert row.get_attribute("data-status") == "answer"
    chart = probe.get_by_test_id("chart")
    chart.wait_for(timeout=TIMEOUT_MS)
    assert chart.get_attribute("data-points") == "12"
    assert chart.get_by_test_id("chart-point").count() == 12
    assert chart.get_by_test_id("chart-frontier").count() == 1
    assert chart.locator('[data-frontier="true"]').count() >= 2
    chart.get_by_test_id("chart-point").nth(5).hover()
    tip = chart.get_by_test_id("tooltip")
    tip.wait_for(state="visible", timeout=5_000)
    assert "x: 5" in tip.text_content()
    chart.screenshot(path=str(screenshots / "request_probe_chart.png"))
    assert probe.errors == []


def test_an_exported_chart_draws_offline_and_requests_say_they_need_a_kernel(browser, tmp_path):
    x = [1, 3, 10, 30, 100, 300]
    spec = chart_spec("bar", [{"name": "density", "x": x, "y": [5, 40, 9, 0.5, 2, 1]},
                              {"name": "other", "x": x, "y": [1, 2, 3, 4, 5, 6]}],
                      log_x=True, log_y=True, x_title="L0", y_title="count")  # fmt: skip
    path = RequestProbe(chart=spec).to_html(tmp_path / "probe.html")
    context = browser.new_context(offline=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(path.as_uri())
        root = page.get_by_test_id("request-probe")
        root.wait_for(timeout=20_000)
        chart = root.get_by_test_id("chart")
        assert chart.get_attribute("data-kind") == "bar"
        assert chart.get_by_test_id("chart-point").count() == 12
        assert chart.get_by_test_id("chart-legend").text_content() == "densityother"
        root.get_by_test_id("ask-echo").click()
        row = root.get_by_test_id("reply").first
        page.wait_for_function("r => r.dataset.status === 'error'", arg=row.element_handle())
        assert "needs the notebook's kernel" in root.get_by_test_id("error").text_content()
        assert problems == []
    finally:
        context.close()
