"""Running a tutorial in the Binder environment: cut off from the network and from the Debian
documentation packages (Binder has neither), timed, with the kernel's memory polled."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import psutil

from tests.binder_env import ROOT, BinderEnv

RUNNER = ROOT / "tests" / "scripts" / "run_notebook.py"
TUTORIALS_README = ROOT / "tutorials" / "README.md"
RESULTS = ROOT / "benchmarks" / "results" / "binder.json"

# Binder's free tier: about 2 cores (like this machine) and 2 GiB for the whole pod, the Jupyter
# server's ~150 MiB included; a tutorial's kernel must stay under the rest.
MEMORY_LIMIT_MIB = 1900
# Run time: 3x the time tutorials/README.md gives (a slower or busier machine), at least a minute.
TIME_FACTOR, MIN_LIMIT_S = 3.0, 60.0
POLL_S = 0.1


@dataclass
class TutorialRun:
    name: str
    seconds: float
    peak_rss_mib: float
    kernel_peak_rss_mib: float
    """The kernel process alone, without its children (chromium for to_png, pydocs)."""
    peak_pss_mib: float
    """The tree's proportional set size: a page shared by n of its processes counts 1/n, so
    the sum is what the pod's memory limit charges (RSS counts chromium's shared pages again
    in every chromium process)."""
    peak_anon_mib: float
    """The anonymous (and shared-memory) part of the PSS at its peak: what no page cache can
    give back. The rest is mapped files (torch's libraries, the weights), counted as well."""
    limit_s: float
    returncode: int
    kernel_cmd: list[str] = field(default_factory=list)
    stderr: str = ""


def readme_times() -> dict[str, float]:
    """Each notebook's run time in seconds, from the 'run time' column of tutorials/README.md."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in TUTORIALS_README.read_text().splitlines()
        if line.startswith("|")
    ]
    header = next((r for r in rows if "run time" in r), None)
    if header is None:
        raise AssertionError("tutorials/README.md has no table with a 'run time' column")
    col, times = header.index("run time"), {}
    for row in rows:
        name = re.search(r"\d\d_\w+", " ".join(row))
        secs = re.fullmatch(r"(\d+(?:\.\d+)?) s", row[col]) if len(row) > col else None
        if name and secs:
            times[name.group(0)] = float(secs.group(1))
    return times


def time_limit(name: str) -> float:
    stated = readme_times().get(name)
    if stated is None:
        raise AssertionError(f"tutorials/README.md gives no run time for {name}: add its row")
    return max(TIME_FACTOR * stated, MIN_LIMIT_S)


def _hidden_folders() -> list[str]:
    from attnviz.data.debian_docs import SOURCES

    return sorted({s.root for s in SOURCES if Path(s.root).is_dir()})


@functools.cache
def sandbox() -> tuple[list[str], str]:
    """(command prefix, what it does): a new network namespace with only loopback (the kernel
    talks to nbclient over it) and a mount namespace where the documentation folders are empty,
    so attnviz falls back to pydocs for held-out text as on Binder. Without namespaces (unshare
    needs root or user namespaces) the prefix is empty and the text says so."""
    script = "set -e; ip link set lo up; "
    script += " ".join(f"mount -t tmpfs -o ro none {shlex.quote(d)};" for d in _hidden_folders())
    prefix = ["unshare", "--net", "--mount", *(["--map-root-user"] if os.geteuid() else [])]
    prefix += ["sh", "-c", script + ' exec "$@"', "sh"]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0
    except OSError:
        ok = False
    if ok:
        return prefix, "no network, no Debian documentation packages"
    return [], "NOT isolated (unshare unavailable): network and doc packages as on this machine"


def link_host_corpus(env: BinderEnv) -> None:
    """Unsandboxed, the kernel would see the doc packages and spend minutes building the
    debian-docs corpus: lend it this machine's built one instead."""
    from attnviz.data import debian_docs

    if not debian_docs.is_built():
        return
    link = env.repo / ".cache" / "attnviz" / "corpora" / debian_docs.CORPUS_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(debian_docs.corpus_dir())


def _kernel_tree(top: psutil.Process) -> tuple[list[psutil.Process], list[str]]:
    """The kernel and its children (kaleido's chromium, a pydocs extraction), and its command."""
    try:
        for p in top.children(recursive=True):
            cmd = p.cmdline()
            if any("ipykernel" in part for part in cmd):
                return [p, *p.children(recursive=True)], cmd
    except psutil.Error:
        pass
    return [], []


def _rollup(pid: int) -> dict[str, int]:
    """A process's /proc/PID/smaps_rollup in bytes (Rss, Pss, Pss_Anon, Pss_File, ...): one
    read, where psutil's memory_full_info walks every mapping."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[key] = int(rest.split()[0]) * 1024
    return fields


def _memory(procs: list[psutil.Process]) -> tuple[int, int, int]:
    """(RSS, PSS, anonymous and shared-memory PSS) summed over `procs`, in bytes."""
    rss = pss = anon = 0
    for p in procs:
        with contextlib.suppress(OSError):  # ended between the listing and the reading
            m = _rollup(p.pid)
            rss, pss = rss + m["Rss"], pss + m["Pss"]
            anon += m.get("Pss_Anon", 0) + m.get("Pss_Shmem", 0)
    return rss, pss, anon


def evict_page_cache(*folders: Path) -> int:
    """Drop the files under `folders` from the page cache, as a new Binder pod starts with
    none of its image cached; returns the bytes of the files advised. A library whose pages are
    all cached is mapped in large runs around each page the kernel touches (fault-around),
    so right after the build (which wrote every file) the same run showed 100-170 MiB more
    mapped-file memory than a pod's first run does."""
    os.sync()  # written pages must be clean for the advice to drop them
    total = 0
    for folder in folders:
        # os.walk skips what vanishes or cannot be read; links are not followed (a linked corpus
        # is this machine's, not the image's)
        for top, _, names in os.walk(folder):
            for name in names:
                path = Path(top) / name
                with contextlib.suppress(OSError):
                    if path.is_symlink() or not path.is_file():
                        continue
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        total += os.fstat(fd).st_size
                    finally:
                        os.close(fd)
    return total


def run_tutorial(env: BinderEnv, notebook: Path, out: Path, workdir: Path) -> TutorialRun:
    """Execute `notebook` in the Binder environment, from a page cache without the environment's
    files (a new pod's), polling the RSS and PSS summed over the kernel's process tree every
    POLL_S (RSS an upper bound: pages shared between processes count twice)."""
    prefix, _ = sandbox()
    if not prefix:
        link_host_corpus(env)
    limit = time_limit(notebook.stem)
    evict_page_cache(env.venv, env.repo)  # the repository copy holds the weights and dictionaries
    cmd = [*prefix, str(env.python), str(RUNNER), str(notebook), str(out), str(workdir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env.environ(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    top = psutil.Process(proc.pid)
    kernel_cmd: list[str] = []
    peak = kernel_peak = peak_pss = anon_at_peak = 0
    try:
        # Hung past twice its limit: stopped (below), and the time assert says so.
        while proc.poll() is None and time.perf_counter() - t0 < 2 * limit + 60:
            tree, cmd_now = _kernel_tree(top)
            kernel_cmd = kernel_cmd or cmd_now
            (rss, pss, anon), kernel_rss = _memory(tree), _memory(tree[:1])[0]
            peak, kernel_peak = max(peak, rss), max(kernel_peak, kernel_rss)
            if pss > peak_pss:
                peak_pss, anon_at_peak = pss, anon
            time.sleep(POLL_S)
    finally:  # also on Ctrl-C: no kernel outlives its test
        if proc.poll() is None:
            for p in [*top.children(recursive=True), top]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        output = proc.communicate()[0].decode(errors="replace")
    seconds = time.perf_counter() - t0
    mib = 2**20
    return TutorialRun(
        notebook.stem, seconds, peak / mib, kernel_peak / mib, peak_pss / mib, anon_at_peak / mib,
        limit, proc.returncode, kernel_cmd, output[-3000:],
    )  # fmt: skip


def notebook_problems(path: Path) -> tuple[list[str], int]:
    """(the error outputs as 'ename: evalue', how many code cells printed nothing)."""
    if not path.is_file():
        return ["the runner wrote no notebook"], 0
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, c in enumerate(code)
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    return errors, sum(1 for c in code if not c.get("outputs"))


def write_results(env: BinderEnv, runs: list[TutorialRun], env_seconds: float) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": ".venv/bin/python -m pytest -q -s tests/test_binder.py",
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "python_version": env.python_version,
                "cpu_count": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "machine": platform.platform(),
                "isolation": sandbox()[1],
                "build_seconds": round(env.build_seconds, 1),
                "build_reused": env.reused,
                "environment_ready_seconds": round(env_seconds, 1),
                "memory_limit_mib": MEMORY_LIMIT_MIB,
                "page_cache": "the environment's files evicted before each tutorial (a new pod's)",
                "tutorials": {
                    r.name: {
                        "seconds": round(r.seconds, 1),
                        "peak_rss_mib": round(r.peak_rss_mib),
                        "kernel_peak_rss_mib": round(r.kernel_peak_rss_mib),
                        "peak_pss_mib": round(r.peak_pss_mib),
                        "anonymous_at_peak_mib": round(r.peak_anon_mib),
                        "limit_s": round(r.limit_s),
                    }
                    for r in runs
                },
            },
            indent=2,
        )
        + "\n"
    )


def table(env: BinderEnv, runs: list[TutorialRun]) -> str:
    built = "cached, built" if env.reused else "built"
    lines = [
        f"Binder environment: Python {env.python_version}, {built} in {env.build_seconds:.0f} s; "
        f"{sandbox()[1]}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        f"{'tutorial':34} {'time (s)':>9} {'limit (s)':>10} {'peak RSS (MiB)':>15} "
        f"{'kernel alone':>13} {'peak PSS':>9} {'of it anon':>11}",
    ]
    lines += [
        f"{r.name:34} {r.seconds:9.1f} {r.limit_s:10.0f} {r.peak_rss_mib:15.0f} "
        f"{r.kernel_peak_rss_mib:13.0f} {r.peak_pss_mib:9.0f} {r.peak_anon_mib:11.0f}"
        for r in runs
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tests.binder_run: is the sandbox available here?
    print(sandbox()[1], file=sys.stderr)
