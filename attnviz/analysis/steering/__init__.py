"""Steering: vectors added to the residual stream or to heads' outputs (vectors), what they do to rollouts and to
held-out text (metrics), and coefficient sweeps with their Pareto frontier (sweep)."""

from attnviz.analysis.steering.metrics import (
    WEDDING_WORDS,
    damage,
    distinct_n,
    success_rate,
    word_matcher,
    zlib_ratio,
)
from attnviz.analysis.steering.sweep import Sweep, frontier, rollouts, sweep
from attnviz.analysis.steering.vectors import (
    SteeringVector,
    actadd,
    feature_direction,
    from_tensor,
    mean_difference,
    padding_features,
    project_out,
    residual_norm,
    z_direction,
)

__all__ = [
    "WEDDING_WORDS",
    "SteeringVector",
    "Sweep",
    "actadd",
    "damage",
    "distinct_n",
    "feature_direction",
    "from_tensor",
    "frontier",
    "mean_difference",
    "padding_features",
    "project_out",
    "residual_norm",
    "rollouts",
    "success_rate",
    "sweep",
    "word_matcher",
    "z_direction",
    "zlib_ratio",
]
