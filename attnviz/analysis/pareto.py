"""The Pareto frontier of points on two axes (effect against damage, FVU against L0): the points
no other point beats on both. Shared by the steering sweeps and every chart (charts.js has the
same rule)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = ["Better", "pareto_frontier"]

Better = Literal["min", "max"]


def pareto_frontier(
    x: Any, y: Any, x_better: Better = "min", y_better: Better = "max"
) -> list[int]:
    """Indices of the points no other point beats on both axes, in order of x (the same rule as
    charts.js paretoFrontier; NaN points never count)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    sx = 1.0 if x_better == "min" else -1.0
    sy = 1.0 if y_better == "max" else -1.0
    order = [i for i in np.lexsort((-sy * ys, sx * xs)) if np.isfinite(xs[i] + ys[i])]
    out: list[int] = []
    best = -np.inf
    for i in order:  # from the best x on, keep each point that improves the best y so far
        if sy * ys[i] > best:
            out.append(int(i))
            best = sy * ys[i]
    return sorted(out, key=lambda i: (xs[i], i))
