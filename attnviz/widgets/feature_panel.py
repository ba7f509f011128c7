"""A feature's max-activating contexts and firing density as the widgets' feature panel
(widgets/shared/feature_panel.js) draws them, for QK features and SAE features alike."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from torch import Tensor

from attnviz.analysis.metrics import density_histogram


def examples_payload(examples: pd.DataFrame) -> list[dict]:
    """Max-activating contexts (analysis.feature_examples' frame) as the front-end draws them."""
    shown = []
    for ex in examples.to_dict(orient="records"):
        before, after = ex["before"], ex["after"]
        shown.append(
            {
                "context": int(ex["context"]),
                "position": int(ex["position"]),
                "activation": float(ex["activation"]),
                "tokens": [t for t, _ in before] + [ex["token"]] + [t for t, _ in after],
                "acts": [round(float(a), 4) for _, a in [*before, (0, ex["activation"]), *after]],
                "center": len(before),
            }
        )
    return shown


def density_payload(density: Tensor, feature: int) -> dict[str, Any]:
    """Where one feature's firing density sits among the live features' (quarter decades)."""
    d = float(density[feature])
    live = density[density > 0]
    lo = min(-1, math.floor(math.log10(float(live.min())))) if live.numel() else -4
    edges = [lo + 0.25 * i for i in range(4 * -lo + 1)]
    hist = density_histogram(density, edges)
    return {
        "density": d,
        "log10_density": math.log10(d) if d > 0 else None,
        "histogram": {
            "edges": [round(float(e), 3) for e in edges],
            "counts": hist["counts"] if live.numel() else [],
        },
        "dead": hist["never_fired"],
    }
