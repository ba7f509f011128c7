"""Real-browser fixtures: a JupyterLab server on localhost and Debian's chromium via Playwright.

``lab`` is a JupyterLab server on localhost (tests/browser/lab.py) in a temp dir; tests put
notebooks into ``lab.root``. ``page`` is a Playwright page in a
fresh browser context; every JavaScript dialog (alert, confirm, prompt) it meets is dismissed
and recorded in ``page.dialogs``. Everything is stopped at the end of the session: kernels
and the server through the server's REST API, then by process id if it is still running.

Debian's chromium is installed by ``make test`` (the ``browser`` target); Playwright's own
browser download does not work here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.lab import Lab, running_lab

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    try:
        with running_lab(tmp_path_factory.mktemp("jupyterlab")) as server:
            yield server
    except RuntimeError as err:  # the server did not start
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    # A missing browser fails the run: a skipped browser test proves nothing.
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh context (1400 x 1000); `page.dialogs` lists every JS dialog seen."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.dialogs = dialogs
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS


def wait_for_widget(page: Any, lab: Lab, testid: str, screenshots: Path, errors: list[str],
                    timeout_ms: int = 300_000) -> Any:  # fmt: skip
    """The widget `testid` once it has drawn its token labels; fails with the page errors, the
    server log and a screenshot if it never does."""
    root = page.get_by_test_id(testid)
    try:
        root.locator('[data-testid="token-label"]').first.wait_for(timeout=timeout_ms)
    except Exception:
        page.screenshot(path=str(screenshots / f"{testid}_never_appeared.png"))
        raise AssertionError(
            f"no {testid} after running the notebook; page errors: {errors}\n"
            f"server log:\n{lab.log_tail()}"
        ) from None
    return root


def notebook_finished(page: Any, timeout_ms: int = 600_000) -> None:
    """Wait until no cell is queued or running (JupyterLab marks them with [*])."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')];
            return prompts.length > 0 && prompts.every((p) => !p.textContent.includes('*'));
        }""",
        timeout=timeout_ms,
    )
