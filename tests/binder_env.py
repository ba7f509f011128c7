"""The Binder environment, built here as repo2docker builds it from binder/.

repo2docker copies the repository into the user's home (REPO_DIR = HOME), installs the Python that
runtime.txt names with Jupyter in it, the Debian packages of apt.txt, then runs postBuild from the
repository's root as a non-root user. `build_env` does the same into a fresh venv of that Python,
cached under `.venv/binder-env/<key>/` and keyed on everything the build reads.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
CACHE = ROOT / ".venv" / "binder-env"
BUILD_VERSION = 2  # bump when the steps below change: the key then changes and the env is rebuilt

# repo2docker's base environment (its own environment.yml), at the versions the dev venv has.
BASE_PACKAGES = ("jupyterlab", "notebook", "jupyter_server", "ipykernel", "nbclient", "nbformat")
BASE_PACKAGES += ("ipywidgets",)

# Variables of this shell that would leak into the image's processes (the dev venv, caches).
_DROP_VARS = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "ATTNVIZ_", "XDG_", "JUPYTER", "PYTEST")
_DROP_VARS += ("IPYTHONDIR", "MPLCONFIGDIR", "HF_", "CONDA_")


class BinderBuildError(AssertionError):
    """The Binder environment could not be built (the message says which step and why)."""


@dataclass
class BinderEnv:
    root: Path
    build_seconds: float
    """The cold build's time (also when this run reused the cached environment)."""
    reused: bool
    python_version: str

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def repo(self) -> Path:
        """The repository's copy; also HOME, as on Binder (where REPO_DIR is the home folder)."""
        return self.root / "repo"

    def environ(self) -> dict[str, str]:
        """The environment postBuild and the kernels run with: the venv first on PATH, HOME the
        repository's copy, and this machine's pip and npm configuration kept although HOME moved
        (here the package registries are local mirrors; on Binder the defaults are right)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_VARS)}
        env.update(
            HOME=str(self.repo),
            PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            VIRTUAL_ENV=str(self.venv),
            # Set but empty: postBuild leaves out --index-url and pip's configuration decides.
            ATTNVIZ_TORCH_INDEX_URL="",
            # Chrome for Testing comes from Google's servers, out of reach here: the browser
            # `make test` installs stands in for postBuild's download (the one step not run).
            ATTNVIZ_CHROME="/usr/bin/chromium",
            npm_config_cache=str(Path.home() / ".npm"),  # downloads only, shared on purpose
        )
        for conf in (Path.home() / ".config/pip/pip.conf", Path.home() / ".pip/pip.conf"):
            if conf.is_file():
                env["PIP_CONFIG_FILE"] = str(conf)
                break
        if (Path.home() / ".npmrc").is_file():
            env["NPM_CONFIG_USERCONFIG"] = str(Path.home() / ".npmrc")
        return env


# ---- what binder/ asks for --------------------------------------------------------------------


def runtime_python() -> tuple[str, str]:
    """(executable, version) of the Python binder/runtime.txt names, e.g. python-3.11."""
    text = (BINDER / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-(\d+\.\d+)", text)
    if not m:
        raise BinderBuildError(
            f"binder/runtime.txt says {text!r}: repo2docker reads `python-X.Y` (e.g. python-3.11)"
        )
    version = m.group(1)
    exe = shutil.which(f"python{version}")
    if exe is None:
        raise BinderBuildError(
            f"binder/runtime.txt asks for Python {version} but no `python{version}` is on PATH: "
            f"install it (apt-get install python{version}-venv, or pyenv install {version})"
        )
    # Resolved through shims (pyenv), so the venv records the real interpreter.
    done = _run([exe, "-c", "import sys; print(sys.executable, sys.version.split()[0])"])
    real, full = done.stdout.split()
    if not full.startswith(version + "."):
        raise BinderBuildError(f"`python{version}` on PATH is Python {full}, not {version}")
    return real, full


def apt_packages() -> list[str]:
    lines = (BINDER / "apt.txt").read_text().splitlines()
    return [w for line in lines for w in line.split("#")[0].split()]


def missing_apt_packages() -> list[str]:
    """The apt.txt packages dpkg does not report installed."""
    names = apt_packages()
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Status}\n", *names],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    installed = {
        line.split("\t")[0] for line in done.stdout.splitlines() if line.endswith("\tinstalled")
    }
    return [n for n in names if n not in installed]


# Each rule: a pattern over postBuild's commands (comments stripped), and why it fails on Binder.
_POSTBUILD_RULES = (
    (r"\bsudo\b", "uses sudo: postBuild runs as the notebook user, without sudo"),
    (r"\b(apt-get|apt|dpkg|yum|snap)\s", "installs system packages: list them in binder/apt.txt"),
    (
        r"(^|[\s=>'\"])/(usr|etc|opt|var|srv|root|bin|sbin|lib|lib64|boot|mnt)(/|\s|$)",
        "touches a system folder: postBuild is not root and may write only under the repository "
        "(which is $HOME on Binder) or /tmp",
    ),
    (r"(^|\s)(cd|pushd)\s+(\.\.|~|/)", "leaves the repository: the steps run from its root"),
    (r"\bpip\s+install\b.*\s--user\b", "pip --user installs outside the image's environment"),
    (r"\bconda\s+(install|create)\b", "no conda here: runtime.txt gives a plain Python env"),
    (r"\bjupyter\s+labextension\s+install\b", "JupyterLab 4 installs extensions with pip"),
)


def postbuild_problems(path: Path | None = None) -> list[str]:
    """Why binder/postBuild could not run on mybinder.org, one message per problem found."""
    path = path or BINDER / "postBuild"
    raw = path.read_bytes()
    problems = []
    if b"\r" in raw:
        problems.append("has CRLF line endings: bash reads `\\r` as part of each command")
    text = raw.decode()
    if not text.startswith("#!"):
        problems.append("has no #! line: repo2docker executes the file directly")
    mode = (
        _run(["git", "ls-files", "-s", "--", str(path)], cwd=ROOT).stdout
        if path.is_relative_to(ROOT)
        else ""
    )
    if mode and not mode.startswith("100755"):
        problems.append("is not executable in git: `git update-index --chmod=+x binder/postBuild`")
    if not re.search(r"^\s*set\s+-\w*e", text, re.M):
        problems.append("lacks `set -e`: a failed step would still give an image, broken")
    commands = [line.split(" #")[0] for line in text.splitlines()[1:]]
    commands = [c for c in commands if c.strip() and not c.lstrip().startswith("#")]
    for pattern, why in _POSTBUILD_RULES:
        for line in commands:
            if re.search(pattern, line.replace("://", "")):  # a URL's path is not a file
                problems.append(f"{why}: {line.strip()!r}")
    return problems


# ---- the cache key and the repository's copy --------------------------------------------------


def repo_files() -> list[str]:
    """What a push would bring: the tracked files, plus new ones not ignored (as `git add .`)."""
    out = _run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT).stdout
    return sorted(f for f in set(out.split("\0")) if f and (ROOT / f).is_file())


def base_pins() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in BASE_PACKAGES]


def cache_key() -> str:
    """A hash of everything the build reads; the tutorials and the rest of attnviz's Python are
    not in it, they are copied afresh before every run (the install is editable)."""
    h = hashlib.sha256(f"{BUILD_VERSION} {base_pins()}".encode())
    inputs = ["pyproject.toml", "constraints.txt"]
    # attnviz/models: postBuild converts the embedded model with it, and the result is kept.
    inputs += [f for f in repo_files() if f.startswith(("binder/", "widgets/", "attnviz/models/"))]
    for f in sorted(set(inputs)):
        h.update(f.encode() + b"\0" + (ROOT / f).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def sync_repo(dest: Path) -> None:
    """Copy the repository's files into `dest`, over what an earlier run left there (the build's
    outputs, ignored by git, stay)."""
    for f in repo_files():
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)


# ---- the build --------------------------------------------------------------------------------


def build_env(log=print) -> BinderEnv:
    """The cached Binder environment, built first when missing or out of date. The stamp
    (`.complete`) is written last, so an interrupted build is never reused (a venv cannot be
    built elsewhere and renamed: its scripts name their own path)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest runs at once: the second waits, then reuses
        root = CACHE / cache_key()
        stamp = root / ".complete"
        if stamp.is_file():
            info = json.loads(stamp.read_text())
            env = BinderEnv(root, info["build_seconds"], True, info["python_version"])
            sync_repo(env.repo)
            return env
        for old in CACHE.iterdir():  # other keys and interrupted builds: gigabytes each
            if old.is_dir():
                shutil.rmtree(old)
        t0 = time.perf_counter()
        env = _build(root, log)
        env.build_seconds = time.perf_counter() - t0
        stamp.write_text(
            json.dumps({"build_seconds": env.build_seconds, "python_version": env.python_version})
        )
        return env


def _build(root: Path, log) -> BinderEnv:
    exe, version = runtime_python()
    env = BinderEnv(root, 0.0, False, version)
    root.mkdir(parents=True)
    logfile = root / "build.log"
    log(f"building the Binder environment (Python {version}) in {root}; log: {logfile}")
    sync_repo(env.repo)
    steps = [
        ("venv", [exe, "-m", "venv", str(env.venv)]),
        ("pip", [str(env.python), "-m", "pip", "install", "-q", "--upgrade", "pip"]),
        (
            "jupyter base",
            [str(env.python), "-m", "pip", "install", "-q", "-c", "constraints.txt", *base_pins()],
        ),
        (
            "kernelspec",
            [str(env.python), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
        ),
        ("postBuild", ["bash", "binder/postBuild"]),
    ]
    for name, cmd in steps:
        t0 = time.perf_counter()
        with open(logfile, "a") as out:
            out.write(f"\n### {name}: {' '.join(cmd)}\n")
            out.flush()
            done = subprocess.run(
                cmd, cwd=env.repo, env=env.environ(), stdout=out, stderr=subprocess.STDOUT
            )
        if done.returncode != 0:
            tail = "".join(logfile.read_text().splitlines(keepends=True)[-40:])
            raise BinderBuildError(
                f"the Binder build failed at {name!r} (exit {done.returncode}); the end of "
                f"{logfile}:\n{tail}"
            )
        log(f"  {name}: {time.perf_counter() - t0:.0f} s")
    return env


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise BinderBuildError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
    return done


if __name__ == "__main__":  # build (or find) the environment by hand: python -m tests.binder_env
    print(build_env().root, file=sys.stderr)
