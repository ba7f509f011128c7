"""Binder: binder/ builds the environment repo2docker would build, and every tutorial runs in it,
offline, within the time tutorials/README.md states (x3) and Binder's memory.

The first run builds the environment (a few minutes; `.venv/binder-env/`), later runs reuse it
until binder/, pyproject.toml, constraints.txt or the widget sources change. Run alone with
`.venv/bin/python -m pytest -q -s tests/test_binder.py` to see the build and the measured table.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import binder_env, binder_run

TUTORIALS = sorted((binder_env.ROOT / "tutorials").glob("*.ipynb"))


def test_there_are_tutorials():
    assert TUTORIALS, "no notebooks in tutorials/"


def test_postbuild_can_run_on_binder():
    problems = binder_env.postbuild_problems()
    assert not problems, "binder/postBuild would fail on mybinder.org; it " + "\n  ".join(problems)


def test_apt_packages_are_installed():
    missing = binder_env.missing_apt_packages()
    assert not missing, (
        f"binder/apt.txt lists {', '.join(missing)}, not installed on this machine, so the "
        "tutorials cannot run as on Binder: as root, `apt-get install -y " + " ".join(missing) + "`"
    )


def test_every_tutorial_has_a_time_limit():
    stated = binder_run.readme_times()
    assert {p.stem for p in TUTORIALS} <= stated.keys(), (
        f"tutorials/README.md's table gives no run time for "
        f"{sorted({p.stem for p in TUTORIALS} - stated.keys())}: add their rows"
    )


@pytest.fixture(scope="session")
def binder():
    t0 = time.perf_counter()
    env = binder_env.build_env()
    ready = time.perf_counter() - t0
    how = "reused" if env.reused else "built"
    print(f"\nBinder environment {how} in {ready:.0f} s (cold build {env.build_seconds:.0f} s)")
    runs: list[binder_run.TutorialRun] = []
    yield env, runs
    if runs:
        print("\n" + binder_run.table(env, runs))
    if {r.name for r in runs} == {p.stem for p in TUTORIALS}:  # a partial run keeps the file
        binder_run.write_results(env, runs, ready)
        print(f"written: {binder_run.RESULTS.relative_to(binder_env.ROOT)}")


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_on_binder(path: Path, binder, tmp_path):
    env, runs = binder
    out = tmp_path / path.name
    work = tmp_path / "work"  # the notebooks write activations and runs relative to it
    work.mkdir()
    run = binder_run.run_tutorial(env, env.repo / "tutorials" / path.name, out, work)
    runs.append(run)
    assert run.kernel_cmd and run.kernel_cmd[0].startswith(str(env.venv)), (
        f"{path.stem} did not run in the Binder environment's kernel ({run.kernel_cmd}): check "
        f"{env.venv}/share/jupyter/kernels/python3"
    )
    errors, silent = binder_run.notebook_problems(out)
    assert not errors, f"{path.stem} failed on Binder:\n" + "\n".join(errors) + "\n" + run.stderr
    assert run.returncode == 0, f"{path.stem}: the runner exited {run.returncode}\n{run.stderr}"
    # Every code cell produced something a reader can see (no silent no-ops).
    assert not silent, f"{path.stem}: {silent} code cells printed nothing"
    assert run.seconds <= run.limit_s, (
        f"{path.stem} took {run.seconds:.0f} s, over its {run.limit_s:.0f} s limit (3x "
        "tutorials/README.md's time): make it faster, or measure again and update the README"
    )
    assert run.peak_pss_mib > 0, (
        f"{path.stem}: the kernel's memory could not be read (/proc/PID/smaps_rollup), so the "
        "memory limit was not checked: run where /proc shows this user's processes in full"
    )
    # PSS: what the pod's memory limit charges (RSS counts chromium's shared pages once per
    # chromium process); the table prints both.
    assert run.peak_pss_mib <= binder_run.MEMORY_LIMIT_MIB, (
        f"{path.stem} peaked at {run.peak_pss_mib:.0f} MiB (PSS of the kernel and its children), "
        f"over the {binder_run.MEMORY_LIMIT_MIB} MiB a kernel has on Binder (2 GiB per user)"
    )
