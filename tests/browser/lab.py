"""A JupyterLab server on localhost for the browser tests and the widget benchmark.

``running_lab(base)`` starts ``jupyter lab`` (random free port, a random token, its own root,
config, settings, workspace and runtime folders under ``base``, ``--no-browser``), waits until its
REST API answers and stops it at the end: kernels and the server through the REST API, then by
process id if it is still running.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

SERVER_START_S = 90

# JupyterLab user settings: no news or update toasts over the notebook; widget state saved with
# the notebook (as users turn on to share notebooks whose widgets render without a kernel).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
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

    def save_and_end_kernels(self, page: Any, name: str) -> set[str]:
        """Save the open notebook with its widget state (Ctrl+S, waiting until the file holds
        it), then end every session, so the widgets must re-render without a kernel. Returns the
        ids of the kernels that were running."""
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while "widgets" not in json.loads((self.root / name).read_text())["metadata"]:
            assert time.monotonic() < deadline, "the notebook was not saved with its widget state"
            time.sleep(0.5)
        ran = {k["id"] for k in self.api("GET", "/api/kernels") or []}
        for session in self.api("GET", "/api/sessions") or []:
            self.api("DELETE", f"/api/sessions/{session['id']}")
        return ran

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def stop_lab(lab: Lab) -> None:
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


@contextmanager
def running_lab(base: Path) -> Iterator[Lab]:
    """A JupyterLab server whose files live under `base` (RuntimeError if it does not start)."""
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
                raise RuntimeError(
                    f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}"
                )
            try:
                server.api("GET", "/api/status", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"jupyter lab did not answer in {SERVER_START_S} s:\n{server.log_tail()}"
                    ) from None
                time.sleep(0.5)
        yield server
    finally:
        stop_lab(server)


def run_all(page: Any, timeout_ms: int = 90_000) -> None:
    """In an open notebook page (JupyterLab or Notebook 7): "Run All Cells" from the Run menu,
    taking the default kernel should a dialog ask for one."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.locator(".lm-MenuBar-item", has_text="Run").first.click(timeout=timeout_ms)
    page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").click()
    with contextlib.suppress(PlaywrightTimeout):
        page.locator(".jp-Dialog .jp-mod-accept").click(timeout=3_000)


def open_and_run(lab: Lab, page: Any, notebook: Path | str) -> list[str]:
    """Open a notebook in JupyterLab (a file is copied into the server's root first; a name must
    already be there), wait until its kernel is idle, and run all cells. Returns the list page
    errors are collected into from now on."""
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
    run_all(page)
    return errors
