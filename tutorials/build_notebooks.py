"""Write the tutorial notebooks from their cell sources in tutorials/cells/ (one module each) (outputs are left empty: `make test`
executes every notebook, and Binder users run them live).

    .venv/bin/python tutorials/build_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from cells import (
    attention_output_saes,
    attention_patterns,
    head_loadings,
    ito,
    qk_from_scratch,
    qk_pairs,
    steering,
)
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent


def build(cells: list[tuple[str, str]], path: Path) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells
    ]
    # Stable cell ids, so rebuilding a notebook changes only the cells whose text changed.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{path.stem[:40]}-{i:02d}"
    nbformat.write(nb, path)


def main() -> None:
    build(attention_patterns.CELLS, HERE / "01_attention_patterns.ipynb")
    build(qk_pairs.CELLS, HERE / "02_qk_pairs.ipynb")
    build(qk_from_scratch.CELLS, HERE / "03_qk_transcoders_from_scratch.ipynb")
    build(attention_output_saes.CELLS, HERE / "04_attention_output_saes.ipynb")
    build(head_loadings.CELLS, HERE / "05_head_loadings.ipynb")
    build(ito.CELLS, HERE / "06_inference_time_optimisation.ipynb")
    build(steering.CELLS, HERE / "07_steering.ipynb")


if __name__ == "__main__":
    main()
