"""Real-browser fixtures: a JupyterLab server on localhost and Debian's chromium via Playwright.

``lab`` starts ``jupyter lab`` (random free port, a random token, its own root, config,
settings, workspace and runtime folders in a temp dir, ``--no-browser``) and waits until its
REST API answers; tests put notebooks into ``lab.root``. ``page`` is a Playwright page in a
fresh browser context; every JavaScript dialog (alert, confirm, prompt) it meets is dismissed
and recorded in ``page.dialogs``. Everything is stopped at the end of the session: kernels
and the server through the server's REST API, then by process id if it is still running.

Debian's chromium is installed by ``make test`` (the ``browser`` target); Playwright's own
browser download does not work here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

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
SERVER_START_S = 90

# JupyterLab user settings: no news or update toasts over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str  # http://127.0.0.1:<port>
    token: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]
    _opened: list[str] = field(default_factory=list)

    def api(self, method: str, path: str, timeout: float = 10) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method in ("POST", "DELETE") else None,
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        """Write a notebook of code cells (python3 kernel) into the server's root."""
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        }
        path = self.root / name
        nbformat.write(nb, path)
        return path

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _stop(lab: Lab) -> None:
    proc = lab.process
    if proc.poll() is None:
        try:
            for kernel in lab.api("GET", "/api/kernels") or []:
                lab.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=20)
            lab.api("POST", "/api/shutdown")
        except (OSError, urllib.error.URLError, ValueError):
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    root.mkdir()
    for rel, values in LAB_SETTINGS.items():
        path = base / "settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTER_DATA_DIR": str(base / "data"),  # the notebook-signing key goes here, not ~
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "IPYTHONDIR": str(base / "ipython"),
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    token = secrets.token_hex(16)
    log = base / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # offline: no PyPI look-ups
        "--ServerApp.terminals_enabled=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers and this machine run as root
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, log=log, process=proc)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("GET", "/api/status", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"jupyter lab did not answer in {SERVER_START_S} s:\n{server.log_tail()}"
                    )
                time.sleep(0.5)
        yield server
    finally:
        _stop(server)


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


def run_all_cells(lab: Lab, page: Any, notebook: Path | str, screenshots: Path) -> list[str]:
    """Open a notebook in JupyterLab (a file is copied into the server's root first; a name must
    already be there), wait for its kernel, and "Run All Cells". Returns the list page errors are
    collected into from now on."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    name = notebook
    if isinstance(notebook, Path):
        shutil.copy(notebook, lab.root / notebook.name)
        name = notebook.name
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(lab.notebook_url(str(name)))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=90_000)
    # Run only once the kernel is up: earlier, JupyterLab asks which kernel to start.
    page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for(timeout=90_000)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").click()
    with contextlib.suppress(PlaywrightTimeout):  # should it ask all the same, take its kernel
        page.locator(".jp-Dialog .jp-mod-accept").click(timeout=3_000)
    return errors


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
