"""Run by tests/test_binder.py with the Binder environment's own python: execute one notebook in
that environment's `python3` kernel, in WORKDIR, and save it with its outputs to OUT (also when a
cell fails: the test reads the errors from OUT).

usage: python run_notebook.py NOTEBOOK OUT WORKDIR"""

from __future__ import annotations

import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main(src: str, out: str, workdir: str) -> int:
    nb = nbformat.read(src, as_version=4)
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": workdir}}
    )
    try:
        client.execute()
    except CellExecutionError as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        nbformat.write(nb, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
