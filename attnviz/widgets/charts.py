"""Small charts for the widgets (line, scatter, Pareto frontier, bars; any axis on a log scale)
from one JSON spec that the browser draws (``widgets/shared/charts.js``: live, and in exported
HTML) and that :func:`chart_figure` turns into a plotly figure (``to_png``)::

    {"kind": "line" | "scatter" | "pareto" | "bar",
     "title": str,
     "x": {"title": str, "log": bool}, "y": {"title": str, "log": bool},
     "series": [{"name": str, "x": numbers, "y": numbers,
                 "error": numbers (optional, symmetric y error bars),
                 "lo": numbers, "hi": numbers (optional, an interval band around y),
                 "labels": [str] (optional, one hover line per point),
                 "mode": "lines" | "markers" (optional: a line chart's series without
                         markers, or without a line), "color": "#rrggbb" (optional: instead
                         of the palette's), "dash": bool (a dashed line),
                 "behind": bool (drawn under the other series: a reference whose points
                         must not cover the ones a user clicks)}],
     "frontier": {"x": "min" | "max", "y": "min" | "max"}}   # pareto: which way is better

"numbers" are wire arrays (:mod:`attnviz.widgets.arrays`, float32: bytes, not JSON) or plain
lists. Points that cannot be drawn (NaN, or <= 0 on a log axis) are left out, in both renderers.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from attnviz.analysis.pareto import Better, pareto_frontier
from attnviz.widgets.arrays import decode_array, encode_array

__all__ = ["KINDS", "chart_figure", "chart_spec", "pareto_frontier", "series_values"]

KINDS = ("line", "scatter", "pareto", "bar")
# The widgets' series colours (charts.js PALETTE): colour-blind safe (Okabe-Ito).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]


def _numbers(values: Any) -> Any:
    return encode_array(np.asarray(values, dtype=np.float32), "float32")


def chart_spec(
    kind: str,
    series: Sequence[Mapping[str, Any]],
    *,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    log_x: bool = False,
    log_y: bool = False,
    frontier: tuple[Better, Better] = ("min", "max"),
) -> dict[str, Any]:
    """A chart spec; each series is {"name", "x", "y", optional "error", "lo", "hi", "labels",
    "mode", "color", "dash", "behind"}, with arrays (numpy, torch, lists; None as NaN) sent as
    float32 wire arrays."""
    if kind not in KINDS:
        raise ValueError(f"unknown chart kind {kind!r}: use one of {', '.join(KINDS)}")
    out_series = []
    for i, s in enumerate(series):
        x, y = np.asarray(s["x"], dtype=np.float64), np.asarray(s["y"], dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(
                f"series {i} ({s.get('name', '')!r}): x and y must be 1-D and of one length, "
                f"got shapes {x.shape} and {y.shape}"
            )
        item: dict[str, Any] = {"name": str(s.get("name", f"series {i}")),
                                "x": _numbers(x), "y": _numbers(y)}  # fmt: skip
        for key in ("error", "lo", "hi"):
            if s.get(key) is not None:
                v = s[key]
                item[key] = _numbers([np.nan if e is None else e for e in v]
                                     if isinstance(v, (list, tuple)) else v)  # fmt: skip
        for key in ("mode", "color", "dash", "behind"):
            if s.get(key) is not None:
                item[key] = s[key]
        if s.get("labels") is not None:
            labels = [str(t) for t in s["labels"]]
            if len(labels) != len(x):
                raise ValueError(f"series {i}: {len(labels)} labels for {len(x)} points")
            item["labels"] = labels
        out_series.append(item)
    return {
        "kind": kind,
        "title": title,
        "x": {"title": x_title, "log": bool(log_x)},
        "y": {"title": y_title, "log": bool(log_y)},
        "series": out_series,
        "frontier": {"x": frontier[0], "y": frontier[1]},
    }


def series_values(values: Any) -> np.ndarray:
    """A spec's numbers (wire array or list) as float64."""
    if isinstance(values, Mapping):
        return decode_array(dict(values)).astype(np.float64).ravel()
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _drawable(x: np.ndarray, y: np.ndarray, log_x: bool, log_y: bool) -> np.ndarray:
    ok = np.isfinite(x) & np.isfinite(y)
    if log_x:
        ok &= x > 0
    if log_y:
        ok &= y > 0
    return ok


def chart_figure(spec: Mapping[str, Any]) -> Any:
    """The plotly figure of a chart spec (what ``to_png`` renders)."""
    import plotly.graph_objects as go

    kind = spec.get("kind", "line")
    log_x, log_y = bool(spec.get("x", {}).get("log")), bool(spec.get("y", {}).get("log"))
    fig = go.Figure()
    for i, s in enumerate(spec.get("series", [])):
        color = s.get("color") or PALETTE[i % len(PALETTE)]
        x, y = series_values(s["x"]), series_values(s["y"])
        ok = _drawable(x, y, log_x, log_y)
        err = series_values(s["error"])[ok] if s.get("error") is not None else None
        labels = [
            html.escape(t) for t, keep in zip(s.get("labels") or [], ok, strict=False) if keep
        ] or None
        name = html.escape(str(s.get("name", "")))
        error_y = None if err is None else dict(type="data", array=err, visible=True)
        if kind == "bar":
            trace: Any = go.Bar(x=x[ok], y=y[ok], name=name, marker_color=color, error_y=error_y,
                                hovertext=labels)  # fmt: skip
        else:
            mode = s.get("mode") or ("lines+markers" if kind == "line" else "markers")
            if s.get("lo") is not None and s.get("hi") is not None and ok.sum() > 1:
                lo, hi = series_values(s["lo"])[ok], series_values(s["hi"])[ok]
                fig.add_trace(go.Scatter(
                    x=np.concatenate([x[ok], x[ok][::-1]]), y=np.concatenate([hi, lo[::-1]]),
                    fill="toself", line=dict(width=0), fillcolor=color, opacity=0.15,
                    hoverinfo="skip", showlegend=False,
                ))  # fmt: skip
            trace = go.Scatter(x=x[ok], y=y[ok], mode=mode, name=name, hovertext=labels,
                               marker=dict(color=color, size=7), error_y=error_y,
                               line=dict(color=color, dash="dash" if s.get("dash") else None))  # fmt: skip
        fig.add_trace(trace)
        if kind == "pareto":
            f = spec.get("frontier", {})
            idx = pareto_frontier(x[ok], y[ok], f.get("x", "min"), f.get("y", "max"))
            fig.add_trace(go.Scatter(
                x=x[ok][idx], y=y[ok][idx], mode="lines", line=dict(color=color, shape="hv"),
                name=f"{name} frontier", hoverinfo="skip",
            ))  # fmt: skip
    fig.update_xaxes(type="log" if log_x else "linear",
                     title=html.escape(spec.get("x", {}).get("title", "")))  # fmt: skip
    fig.update_yaxes(type="log" if log_y else "linear",
                     title=html.escape(spec.get("y", {}).get("title", "")))  # fmt: skip
    fig.update_layout(title=html.escape(spec.get("title", "")), width=640, height=420,
                      plot_bgcolor="white", margin=dict(l=70, r=30, t=60, b=60))  # fmt: skip
    return fig
