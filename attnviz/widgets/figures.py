"""Plotly figures of what the widgets show, for reports (`to_png`) and for anyone who wants to
restyle them: the selected head's patterns side by side, with token labels."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from attnviz.widgets.arrays import decode_array

__all__ = ["pattern_figure", "tick_labels"]

# The widgets' colour scales: sequential for weights, diverging (blue below, red above) for
# differences.
SEQUENTIAL = [
    [0.0, "rgb(251,247,239)"],
    [0.3, "rgb(243,194,96)"],
    [0.65, "rgb(203,88,62)"],
    [1.0, "rgb(58,24,80)"],
]
DIVERGING = [[0.0, "rgb(33,102,172)"], [0.5, "rgb(247,247,247)"], [1.0, "rgb(178,24,43)"]]
MAX_TICKS = 48


def tick_labels(
    tokens: Sequence[str], n_cells: int, factor: int = 1, offset: int = 0
) -> tuple[list[int], list[str]]:
    """Positions and text of axis labels: at most MAX_TICKS, token text escaped (plotly reads
    a little HTML in labels), newlines shown as ↵; pooled cells named by their first token;
    in a window starting at token `offset`, labels carry the tokens' positions in the prompt."""
    stride = max(1, -(-n_cells // MAX_TICKS))
    values, texts = [], []
    for i in range(0, n_cells, stride):
        start = offset + i * factor
        token = tokens[start] if start < len(tokens) else ""
        shown = token.replace("\n", "↵").replace("\t", "⇥")
        shown = shown if len(shown) <= 14 else f"{shown[:13]}…"
        numbered = factor > 1 or stride > 1 or offset > 0
        label = f"{start}: {shown}" if numbered else shown or "∅"
        values.append(i)
        texts.append(html.escape(label))
    return values, texts


SCALE_TITLES = {
    "weights": "attention",
    "off_first": "attention without<br>the first token<br>(rows rescaled)",
    "log": "log10 attention",
}


def pattern_figure(
    tokens: Sequence[str],
    panels: Mapping[str, Mapping[str, Any]],
    head: int,
    factor: int = 1,
    title: str = "",
    signed: Sequence[str] = (),
    scale: str = "weights",
    offset: int = 0,
    marked: Sequence[int] = (),
) -> Any:
    """One heatmap per panel (name -> wire dict of a [heads, n, n] pattern) for `head`, side by
    side; panels named in `signed` use a diverging scale centred on 0, the others the widget's
    colour `scale` (weights 0-1, without the first token 0-1, or log10 -4-0). The panels may
    be a window starting at token `offset`; `marked` = (row, column) outlines that cell."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(panels)
    # one colour bar per kind of panel: the last weights panel's, then the last signed panel's
    bars = {max((n for n in names if n not in signed), key=names.index, default=None): 1.02,
            max((n for n in names if n in signed), key=names.index, default=None): 1.1}  # fmt: skip
    fig = make_subplots(
        rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.06,
        shared_yaxes=True,
    )  # fmt: skip
    for col, name in enumerate(names, start=1):
        z = decode_array(dict(panels[name]))[head].astype(np.float64)
        if name in signed:
            bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
            colours: dict[str, Any] = dict(colorscale=DIVERGING, zmin=-bound, zmax=bound or 1.0)
        else:
            low = -4.0 if scale == "log" else 0.0
            colours = dict(colorscale=SEQUENTIAL, zmin=low, zmax=0.0 if scale == "log" else 1.0)
        label = "difference" if name in signed else SCALE_TITLES.get(scale, "attention")
        bar = dict(thickness=12, title=label, x=bars.get(name, 1.02))
        heatmap = go.Heatmap(
            z=z, showscale=name in bars, hoverongaps=False, colorbar=bar, **colours,
        )  # fmt: skip
        fig.add_trace(heatmap, row=1, col=col)
        values, texts = tick_labels(tokens, z.shape[1], factor, offset)
        fig.update_xaxes(tickvals=values, ticktext=texts, tickangle=-90, row=1, col=col)
        fig.update_yaxes(tickvals=values, ticktext=texts, autorange="reversed", row=1, col=col)
        if len(marked) == 2:
            q, k = marked
            fig.add_shape(type="rect", x0=k - 0.5, x1=k + 0.5, y0=q - 0.5, y1=q + 0.5,
                          line=dict(color="rgb(0,158,115)", width=2), row=1, col=col)  # fmt: skip
    size = 360 if len(names) > 1 else 560
    fig.update_layout(
        title=html.escape(title), width=size * len(names) + 160 + 80 * bool(signed),
        height=size + 200, plot_bgcolor="rgb(222,227,235)",
        margin=dict(l=120, b=120, t=70, r=40 + 80 * bool(signed)),
    )  # fmt: skip
    return fig
