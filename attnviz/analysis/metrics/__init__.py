"""Every figure a report, results table or widget shows, defined once.

Pure functions: tensors in, tensors / floats / small dataclasses out. Shapes are written the
jaxtyping way (``Float[Tensor, "*batch dest src"]``) in each docstring. Patterns are rows over
sources summing to 1 with exact zeros (or, as log-probabilities, -inf) on future sources; a
feature is *active* on a token when its activation is non-zero; losses are in nats.

- pattern fidelity: `kl_rows`, `mean_row_kl`, `kl_summary`;
- sparsity: `l0`, `feature_density` (streaming: `FiringCounts`), `live_features`,
  `density_histogram` (the trainer's per-decade dict), `density_table` (the report's DataFrame);
- reconstruction of q and k: `fvu`, `variance_explained`, streaming `VarianceExplained`;
- downstream loss: `recovered_fraction` (the bare ratio) and `ce_recovered` (the ratio with the
  losses behind it, the absolute loss increase, bootstrap intervals and a warning).

Modules: `fidelity` (KL, FVU), `sparsity`, `loss` (CE recovered); import from here.
"""

from attnviz.analysis.metrics.fidelity import (
    KL_EPS,
    VarianceExplained,
    fvu,
    kl_rows,
    kl_summary,
    mean_row_kl,
    variance_explained,
)
from attnviz.analysis.metrics.loss import (
    CE_RECOVERED_MIN_GAP,
    MAX_RATIO_WIDTH,
    MIN_ABLATION_DAMAGE,
    CERecovered,
    ce_recovered,
    recovered_fraction,
)
from attnviz.analysis.metrics.sparsity import (
    DEAD_DENSITY,
    DECADE_EDGES,
    RARE_DENSITY,
    FiringCounts,
    density_histogram,
    density_table,
    feature_density,
    l0,
    live_features,
    liveness,
)

__all__ = [
    "CE_RECOVERED_MIN_GAP",
    "DEAD_DENSITY",
    "DECADE_EDGES",
    "KL_EPS",
    "MAX_RATIO_WIDTH",
    "MIN_ABLATION_DAMAGE",
    "RARE_DENSITY",
    "CERecovered",
    "FiringCounts",
    "VarianceExplained",
    "ce_recovered",
    "density_histogram",
    "density_table",
    "feature_density",
    "fvu",
    "kl_rows",
    "kl_summary",
    "l0",
    "live_features",
    "liveness",
    "mean_row_kl",
    "recovered_fraction",
    "variance_explained",
]
