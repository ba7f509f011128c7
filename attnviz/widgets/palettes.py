"""Colours of the figures a widget exports, and a colour-blind-safe set of them for reports.

"default" is what the widgets draw: a cream-to-plum sequential scale for weights, blue-white-red
for differences, and the Okabe-Ito series colours. "colorblind" keeps every figure readable with
any of the common colour-vision deficiencies and in greyscale: cividis (Nuñez, Anderton and
Renslow 2018, built to look the same to deuteranopes) for weights, blue-white-orange for
differences (the two ends Okabe and Ito 2008 keep apart for every deficiency), and series told
apart by line dash and marker symbol as well as by colour.

>>> view.save_figure("view.pdf", palette="colorblind")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["PALETTES", "check_palette", "recolour"]

CIVIDIS = "Cividis"
BLUE_ORANGE = [[0.0, "rgb(0,114,178)"], [0.5, "rgb(247,247,247)"], [1.0, "rgb(213,94,0)"]]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "cross", "star"]

PALETTES = ("default", "colorblind")


def check_palette(palette: str) -> str:
    if palette not in PALETTES:
        raise ValueError(f"unknown palette {palette!r}: choose one of {', '.join(PALETTES)}")
    return palette


def _is_diverging(trace: Any) -> bool:
    """A heatmap centred on zero (a difference, a signed contribution)."""
    if trace.zmid is not None:
        return float(trace.zmid) == 0.0
    return trace.zmin is not None and trace.zmax is not None and trace.zmin == -trace.zmax


def recolour(figure: Any, palette: str = "default") -> Any:
    """The plotly figure in `palette` (changed in place and returned); "default" leaves it be."""
    if check_palette(palette) == "default":
        return figure
    series = 0
    for trace in figure.data:
        if trace.type == "heatmap":
            diverging = _is_diverging(trace)
            # cividis runs dark to light; the widgets' weights run light (0) to dark (1).
            trace.update(colorscale=BLUE_ORANGE if diverging else CIVIDIS,
                         reversescale=not diverging)  # fmt: skip
        elif trace.type == "scatter" and trace.fill is None:
            mode = trace.mode or "lines+markers"
            if "lines" in mode:
                trace.update(line_dash=DASHES[series % len(DASHES)])
            if "markers" in mode:
                trace.update(marker_symbol=SYMBOLS[series % len(SYMBOLS)])
            series += 1
        elif trace.type == "bar":
            trace.update(marker_pattern_shape=["", "/", ".", "x", "-", "+"][series % 6])
            series += 1
    return figure
