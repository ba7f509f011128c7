"""The ITOExplorer's charts: FVU and CE recovered against L0 per dictionary (a line per method
with its interval band, the random dictionary dashed, the encoder one point), the table of each
method against the encoder, and all of them as one plotly figure (for to_png)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnviz.widgets.charts import chart_figure, chart_spec

__all__ = [
    "ce_chart",
    "fvu_chart",
    "panels_figure",
    "records",
    "versus_encoder",
]

COLORS = {"encoder": "#000000", "topk": "#0072B2", "mp": "#D55E00", "omp": "#CC79A7",
          "gp": "#009E73"}  # fmt: skip
"""A colour per method (Okabe-Ito, colour-blind safe); a random dictionary keeps its method's."""


def num(x: Any) -> float | None:
    """A float for JSON (which has no NaN): None for NaN and infinities."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def records(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts (NaN as None, target_l0 an int or None)."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict(orient="records")
    out = []
    for r in rows:
        row = {k: num(v) if isinstance(v, (float, np.floating)) else v for k, v in r.items()}
        t = r.get("target_l0")
        row["target_l0"] = None if t is None or (isinstance(t, float) and math.isnan(t)) else int(t)
        out.append(row)
    return out


def _label(r: Mapping[str, Any], value: str, lo: str, hi: str, extra: str = "") -> str:
    target = "its own L0" if r["target_l0"] is None else f"target L0 {r['target_l0']}"
    band = "" if r[lo] is None or r[hi] is None else f" [{r[lo]:.3f}, {r[hi]:.3f}]"
    shown = "n/a" if r[value] is None else f"{r[value]:.3f}"
    return f"{r['method']} at {target}: L0 {r['l0']:.1f}, {value} {shown}{band}{extra}"


def _method_series(rows: list[dict[str, Any]], value: str, lo: str, hi: str, random: bool,
                   extra: Any = None) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "encoder"):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["l0"])
        out.append({
            "name": f"{method}, random dictionary" if random else method,
            "x": [r["l0"] for r in pts], "y": [np.nan if r[value] is None else r[value] for r in pts],
            "lo": [r[lo] for r in pts], "hi": [r[hi] for r in pts],
            "labels": [("random dictionary, " if random else "") + _label(r, value, lo, hi,
                       extra(r) if extra else "") for r in pts],
            "color": COLORS.get(method, "#56B4E9"), **({"dash": True} if random else {}),
        })  # fmt: skip
    return out


def _encoder_series(rows: list[dict[str, Any]], value: str, lo: str, hi: str,
                    extra: Any = None) -> list[dict[str, Any]]:  # fmt: skip
    enc = [r for r in rows if r["method"] == "encoder"]
    return [{"name": f"encoder (L0 {r['l0']:.1f})", "x": [r["l0"]],
             "y": [np.nan if r[value] is None else r[value]], "lo": [r[lo]], "hi": [r[hi]],
             "mode": "markers", "color": COLORS["encoder"],
             "labels": [_label(r, value, lo, hi, extra(r) if extra else "")]} for r in enc]  # fmt: skip


def fvu_chart(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """FVU against the true L0 of dictionary `name` (rows of HeldOut.fvu_point, its random
    baseline's named "<name>:random")."""
    own = [r for r in rows if r["dictionary"] == name]
    rnd = [r for r in rows if r["dictionary"] == f"{name}:random"]
    series = [*_method_series(own, "fvu", "fvu_lo", "fvu_hi", False),
              *_method_series(rnd, "fvu", "fvu_lo", "fvu_hi", True),
              *_encoder_series(own, "fvu", "fvu_lo", "fvu_hi")]  # fmt: skip
    return chart_spec("line", series, title=f"{name}: FVU against L0", x_title="L0 (features per token)",
                      y_title="FVU (lower is better)", log_x=True)  # fmt: skip


def ce_chart(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """CE recovered against the true L0 (rows of compare.ce_pareto for one dictionary), each
    point's label with the absolute loss increase and a ⚠ where the ratio is unreliable."""

    def extra(r: Mapping[str, Any]) -> str:
        inc = r["loss_increase"]
        band = ("" if r["loss_increase_lo"] is None or r["loss_increase_hi"] is None else
                f" [{r['loss_increase_lo']:+.4f}, {r['loss_increase_hi']:+.4f}]")  # fmt: skip
        shown = "n/a" if inc is None else f"{inc:+.4f}"
        warn = f" ⚠ {r['warning']}" if r.get("warning") else ""
        return f"; loss increase {shown}{band} nats/token{warn}"

    series = [*_method_series(rows, "ce_recovered", "ce_lo", "ce_hi", False, extra),
              *_encoder_series(rows, "ce_recovered", "ce_lo", "ce_hi", extra)]  # fmt: skip
    return chart_spec("line", series, title=f"{name}: CE recovered against L0",
                      x_title="L0 (features per token)",
                      y_title="CE recovered vs zero ablation (higher is better)", log_x=True)  # fmt: skip


def versus_encoder(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each method (and the random dictionary) against the encoder at the swept target L0
    nearest the encoder's own L0: FVU, the difference (absolute) and the ratio."""
    enc = next((r for r in rows if r["dictionary"] == name and r["method"] == "encoder"), None)
    targets = sorted({r["target_l0"] for r in rows if r["target_l0"] is not None})
    if enc is None or not targets or enc["fvu"] is None:
        return []
    at = min(targets, key=lambda t: (abs(math.log(t) - math.log(max(enc["l0"], 1e-9))), t))
    out = []
    for r in rows:
        if r["dictionary"] not in (name, f"{name}:random") or r["target_l0"] != at:
            continue
        if r["fvu"] is None:
            continue
        random = r["dictionary"].endswith(":random")
        out.append({
            "dictionary": name, "method": r["method"] + (", random dictionary" if random else ""),
            "target_l0": at, "l0": r["l0"], "fvu": r["fvu"], "encoder_l0": enc["l0"],
            "encoder_fvu": enc["fvu"], "difference": r["fvu"] - enc["fvu"],
            "ratio": num(r["fvu"] / enc["fvu"]) if enc["fvu"] > 0 else None,
        })  # fmt: skip
    return out


def panels_figure(panels: Sequence[Mapping[str, Any]], empty: str = "nothing to show") -> Any:
    """line_chart specs as one plotly figure, two panels a row (what to_png renders)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not panels:
        return go.Figure().update_layout(title=empty)
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows, cols, subplot_titles=[p["title"] for p in panels])
    for i, spec in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        for trace in chart_figure(spec).data:
            fig.add_trace(trace, row=row, col=col)
        for axis, update in (("x", fig.update_xaxes), ("y", fig.update_yaxes)):
            update(type="log" if spec[axis]["log"] else "linear", title=spec[axis]["title"],
                   row=row, col=col)  # fmt: skip
    return fig.update_layout(width=520 * cols, height=400 * rows, plot_bgcolor="white")
