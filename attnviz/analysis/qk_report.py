"""`evaluate_qk`: a QK dictionary measured on a model and a few batches of contexts, gathered into
a `QKReport` (the numbers results tables, the demo and widgets show)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.metrics import (
    CERecovered,
    FiringCounts,
    VarianceExplained,
    ce_recovered,
    density_table,
    kl_rows,
    kl_summary,
    live_features,
)
from attnviz.analysis.qk import masked_and_bias_scores
from attnviz.analysis.qk_metrics import PatternMean, patched_losses, uniform_causal_pattern
from attnviz.data.contexts import token_batch
from attnviz.device import release_memory

if TYPE_CHECKING:
    from attnviz.dictionaries.pair_table import PairTable
    from attnviz.dictionaries.qk import QKDictionary
    from attnviz.models.adapter import ModelAdapter

# ---- the whole evaluation --------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return [_json_safe(r) for r in value.to_dict(orient="records")]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, Tensor):
        return _json_safe(value.tolist())
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


@dataclass
class QKReport:
    """What `evaluate_qk` measured for one dictionary on one layer.

    per_head: one row per query head (kl_mean / kl_p90 / kl_p99 / kl_max of the transcoder's
    pattern, and masked_kl_* of the masked feature-pair map when it was evaluated).
    per_layer: the scalars (see `evaluate_qk`) plus density_hist_q / density_hist_k DataFrames.
    ce_recovered: the full `metrics.CERecovered` of each comparison ("recon_vs_uniform",
    "recon_vs_mean", and with the masked map "masked_vs_uniform", "masked_vs_mean").
    density_q / density_k: each feature's firing density [d_hidden] (kept out of to_dict)."""

    per_head: pd.DataFrame
    per_layer: dict[str, Any]
    density_q: Tensor = field(repr=False)
    density_k: Tensor = field(repr=False)
    ce_recovered: dict[str, CERecovered] = field(default_factory=dict, repr=False)

    def table(self) -> pd.DataFrame:
        """One row of the scalar metrics, for a results table (concat reports to compare)."""
        scalars = {
            k: v
            for k, v in self.per_layer.items()
            if v is None or isinstance(v, (bool, int, float, str, np.integer, np.floating))
        }
        return pd.DataFrame([scalars])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN and infinities become None; DataFrames become lists of records)."""
        return {
            "per_head": _json_safe(self.per_head),
            "per_layer": _json_safe(self.per_layer),
            "ce_recovered": _json_safe({k: v.to_dict() for k, v in self.ce_recovered.items()}),
        }


def _ce_scalars(prefix: str, result: CERecovered) -> dict[str, Any]:
    """A comparison's ratio, its interval and warning as per_layer scalars."""
    low, high = result.ratio_interval
    return {prefix: result.ratio, f"{prefix}_lo": low, f"{prefix}_hi": high,
            f"{prefix}_warning": result.warning}  # fmt: skip


@torch.no_grad()
def qk_feature_density(
    adapter: ModelAdapter,
    dictionaries: Sequence[QKDictionary],
    token_batches: Iterable[Tensor | Mapping[str, Tensor]],
) -> tuple[list[tuple[Tensor, Tensor]], int]:
    """Each query and key feature's firing density over the tokens of `token_batches`, for
    dictionaries of one layer: the layer runs once per batch for all of them and nothing is
    patched, which makes the 100,000+ tokens that tell a dead feature (< 1 in 100,000) from a
    rare one affordable. Returns [(density_q, density_k)] in the dictionaries' order and the
    number of tokens."""
    layers = {qk.cfg.layer for qk in dictionaries}
    if len(layers) != 1:
        raise ValueError(f"qk_feature_density reads one layer at a time, got layers {layers}")
    layer = layers.pop()
    fields = tuple(dict.fromkeys(f for qk in dictionaries for f in qk.input_fields))
    counts = [(FiringCounts(), FiringCounts()) for _ in dictionaries]
    for batch in token_batches:
        acts = adapter.attention(token_batch(batch), layer, fields)
        for qk, (firing_q, firing_k) in zip(dictionaries, counts, strict=True):
            f_q, f_k = qk.encode(**qk.inputs(acts))
            firing_q.add(f_q)
            firing_k.add(f_k)
    return [(q.density(), k.density()) for q, k in counts], counts[0][0].n_tokens


PAIRS_SHARE_MIN_GAP = 0.005
"""Nats per row: below this gap between the bias-only KL and the transcoder's, the pairs' share
of it is a ratio of noise and comes with a warning."""


def _pairs_share(bias_kl: float, masked_kl: float, recon_kl: float) -> dict[str, Any]:
    """How much of the way from the bias terms alone (no pair kept) to the full transcoder the
    kept pairs go, in mean row KL: (bias - masked) / (bias - transcoder). A masked map whose KL is
    close to the transcoder's may owe most of it to the bias terms; this says how much."""
    gap = bias_kl - recon_kl
    warning = None
    if gap < PAIRS_SHARE_MIN_GAP:
        warning = (
            f"the bias terms alone come {gap:+.4f} nats/row from the transcoder's KL (a gap "
            f"under {PAIRS_SHARE_MIN_GAP}): the pairs' share is a ratio of noise"
        )
    share = (bias_kl - masked_kl) / gap if gap != 0 else float("nan")
    return {"bias_kl_mean": bias_kl, "pairs_share_of_kl_reduction": share,
            "pairs_share_warning": warning}  # fmt: skip


def _interval_scalars(name: str, value: float, interval: tuple[float, float]) -> dict[str, Any]:
    return {name: value, f"{name}_lo": interval[0], f"{name}_hi": interval[1]}


def evaluate_qk(
    adapter: ModelAdapter,
    qk: QKDictionary,
    token_batches: Iterable[Tensor | Mapping[str, Tensor]],
    pairs: PairTable | None = None,
    density_bins: int | Sequence[float] = 20,
    seed: int = 0,
) -> QKReport:
    """Evaluate a QK dictionary on the contexts in `token_batches` (tensors [b, n] or
    ActivationStore batch dicts with "tokens"; the batches are read into memory once, as token
    ids only, since two passes are made).

    Pass 1 averages the layer's true pattern over the contexts (the mean-ablation pattern, one
    float64 [heads, n, n] sum per context length). Pass 2 runs the layer and the dictionary on
    each batch and patches the layer's heads with the transcoder's pattern
    (adapter.pattern_from_qk(q_hat, k_hat)), the masked feature-pair map's pattern
    (attnviz.analysis.qk.masked_and_bias_scores, when `pairs` is given or the dictionary has its
    own `qk.pairs`), the uniform causal pattern and the mean pattern. Every figure is computed
    by attnviz.analysis.metrics; CE recovered comes with bootstrap intervals over contexts
    (seeded with `seed`) and a warning when the ablation does too little damage to divide by.

    per_layer keys: model, architecture, layer, n_contexts, n_tokens, n_predictions, d_hidden_q,
    d_hidden_k, l0_q, l0_k, live_q, live_k, density_hist_q, density_hist_k, var_explained_q,
    var_explained_k, kl_mean, kl_p99, kl_max, ce_clean, ce_recon, ce_uniform, ce_mean_ablation,
    loss_increase_recon (ce_recon - ce_clean, nats/token), ablation_damage_uniform,
    ablation_damage_mean, ce_recovered_uniform, ce_recovered_mean, logit_kl_recon,
    logit_kl_uniform, logit_kl_mean_ablation, pairs_kept, pairs_fraction_masked, and with the
    masked map: masked_kl_mean, masked_kl_p99, masked_kl_max, ce_masked, loss_increase_masked,
    masked_ce_recovered_uniform, masked_ce_recovered_mean, logit_kl_masked (None where not
    evaluated). Every loss_increase_*, ablation_damage_* and *ce_recovered_* has `_lo` / `_hi`
    (the 95% interval); every *ce_recovered_* has `_warning` (None, or why not to read the
    ratio alone). Row KLs include the first destination (always 0). The mean pattern is taken
    over the same contexts it ablates."""
    layer = qk.cfg.layer
    qk.check_compatible(adapter.spec)
    adapter.check_layer(layer)
    batches = [token_batch(b) for b in token_batches]
    if not batches:
        raise ValueError("evaluate_qk needs at least one batch of tokens")
    if pairs is None:
        pairs = qk.pairs  # a trained dictionary carries its own pair table
    heads = adapter.spec.n_heads
    device = qk.device
    pairs_here = pairs.to(device) if pairs is not None else None

    # Pass 1: the mean pattern for each context length.
    means: dict[int, PatternMean] = {}
    for tokens in batches:
        pattern = adapter.attention(tokens, layer, ("pattern",)).pattern
        assert pattern is not None
        means.setdefault(tokens.shape[1], PatternMean()).add(pattern)
    mean_patterns = {n: m.mean().to(adapter.device) for n, m in means.items()}

    # Pass 2.
    fields = ("pattern", "q", "k", *(f for f in qk.input_fields if f not in ("q", "k")))
    kl_recon: list[Tensor] = []
    kl_masked: list[Tensor] = []
    kl_bias: list[Tensor] = []  # the map with no pair at all: its bias terms alone
    firing_q, firing_k = FiringCounts(), FiringCounts()
    ve_q, ve_k = VarianceExplained(), VarianceExplained()
    ce_contexts: dict[str, list[Tensor]] = {}
    predicted: list[Tensor] = []  # predicted tokens per context: the weights of mean losses
    kl_sums: dict[str, float] = {}
    n_predictions = 0
    for tokens in batches:
        b, n = tokens.shape
        acts = adapter.attention(tokens, layer, fields)
        assert acts.pattern is not None and acts.q is not None and acts.k is not None

        with torch.no_grad():
            q_hat, k_hat, f_q, f_k = qk(**qk.inputs(acts))
            recon = adapter.pattern_from_qk(
                q_hat.to(adapter.device, torch.float32), k_hat.to(adapter.device, torch.float32),
                layer,
            )  # fmt: skip
            candidates = {
                "recon": recon,
                "uniform": uniform_causal_pattern(b, heads, n, device=adapter.device),
                "mean_ablation": mean_patterns[n],
            }
            kl_recon.append(kl_rows(acts.pattern, recon).transpose(0, 1).reshape(heads, -1).cpu())
            if pairs_here is not None:
                rotary = adapter.rotary(layer, n)
                rotary = rotary.to(device) if rotary is not None else None
                masked_s, bias_s = masked_and_bias_scores(qk, f_q, f_k, pairs_here, rotary)
                masked = masked_s.softmax(-1).to(adapter.device, torch.float32)
                candidates["masked"] = masked
                kl_masked.append(
                    kl_rows(acts.pattern, masked).transpose(0, 1).reshape(heads, -1).cpu()
                )
                bias_only = bias_s.softmax(-1).to(adapter.device, torch.float32)
                kl_bias.append(
                    kl_rows(acts.pattern, bias_only).transpose(0, 1).reshape(heads, -1).cpu()
                )

        firing_q.add(f_q)
        firing_k.add(f_k)
        ve_q.add(acts.q, q_hat)
        ve_k.add(acts.k, k_hat)

        losses = patched_losses(adapter, tokens, layer, candidates)
        w = losses["n_predictions"]
        for name, per_context in losses["ce_per_context"].items():
            ce_contexts.setdefault(name, []).append(per_context)
        for name, value in losses["logit_kl"].items():
            kl_sums[name] = kl_sums.get(name, 0.0) + value * w
        predicted.append(torch.full((b,), float(n - 1), dtype=torch.float64))
        n_predictions += w

    weights = torch.cat(predicted)
    contexts = {name: torch.cat(v) for name, v in ce_contexts.items()}
    ce = {name: float((x * weights).sum() / weights.sum()) for name, x in contexts.items()}
    logit_kl = {name: s / n_predictions for name, s in kl_sums.items()}
    density_q, density_k = firing_q.density(), firing_k.density()

    def recovered(patched: str, ablated: str) -> CERecovered:
        return ce_recovered(
            contexts["clean"], contexts[patched], contexts[ablated], tokens=weights, seed=seed
        )

    comparisons = {"recon_vs_uniform": recovered("recon", "uniform"),
                   "recon_vs_mean": recovered("recon", "mean_ablation")}  # fmt: skip
    if pairs_here is not None:
        comparisons["masked_vs_uniform"] = recovered("masked", "uniform")
        comparisons["masked_vs_mean"] = recovered("masked", "mean_ablation")
    uniform, mean = comparisons["recon_vs_uniform"], comparisons["recon_vs_mean"]

    per_head = kl_summary(torch.cat(kl_recon, 1)).rename(
        columns={c: f"kl_{c}" for c in ("mean", "p90", "p99", "max")}
    )
    all_recon = torch.cat(kl_recon, 1).double()
    per_layer: dict[str, Any] = {
        "model": qk.cfg.model,
        "architecture": qk.cfg.architecture,
        "layer": layer,
        "n_contexts": int(weights.numel()),
        "n_tokens": firing_q.n_tokens,
        "n_predictions": n_predictions,
        "d_hidden_q": qk.cfg.d_hidden_q,
        "d_hidden_k": qk.cfg.d_hidden_k,
        "l0_q": firing_q.l0(),
        "l0_k": firing_k.l0(),
        "live_q": live_features(density_q),
        "live_k": live_features(density_k),
        "density_hist_q": density_table(density_q, density_bins),
        "density_hist_k": density_table(density_k, density_bins),
        "var_explained_q": ve_q.value(),
        "var_explained_k": ve_k.value(),
        "kl_mean": float(all_recon.mean()),
        "kl_p99": float(np.quantile(all_recon.numpy(), 0.99)),
        "kl_max": float(all_recon.max()),
        "ce_clean": ce["clean"],
        "ce_recon": ce["recon"],
        "ce_uniform": ce["uniform"],
        "ce_mean_ablation": ce["mean_ablation"],
        **_interval_scalars(
            "loss_increase_recon", uniform.loss_increase, uniform.loss_increase_interval
        ),
        **_interval_scalars(
            "ablation_damage_uniform", uniform.ablation_damage, uniform.ablation_damage_interval
        ),
        **_interval_scalars(
            "ablation_damage_mean", mean.ablation_damage, mean.ablation_damage_interval
        ),
        **_ce_scalars("ce_recovered_uniform", uniform),
        **_ce_scalars("ce_recovered_mean", mean),
        "logit_kl_recon": logit_kl["recon"],
        "logit_kl_uniform": logit_kl["uniform"],
        "logit_kl_mean_ablation": logit_kl["mean_ablation"],
        "pairs_kept": pairs.nnz if pairs is not None else None,
        "pairs_fraction_masked": 1.0 - pairs.fraction_kept if pairs is not None else None,
    }
    masked_keys = ["masked_kl_mean", "masked_kl_p99", "masked_kl_max", "ce_masked",
                   "bias_kl_mean", "bias_kl_p99", "pairs_share_of_kl_reduction",
                   "pairs_share_warning",
                   "loss_increase_masked", "loss_increase_masked_lo", "loss_increase_masked_hi",
                   "logit_kl_masked"]  # fmt: skip
    for prefix in ("masked_ce_recovered_uniform", "masked_ce_recovered_mean"):
        masked_keys += [prefix, f"{prefix}_lo", f"{prefix}_hi", f"{prefix}_warning"]
    per_layer.update(dict.fromkeys(masked_keys))
    if pairs_here is not None:
        all_masked = torch.cat(kl_masked, 1)
        masked_head = kl_summary(all_masked)
        for c in ("mean", "p90", "p99", "max"):
            per_head[f"masked_kl_{c}"] = masked_head[c].to_numpy()
        m = all_masked.double()
        all_bias = torch.cat(kl_bias, 1)
        per_head["bias_kl_mean"] = kl_summary(all_bias)["mean"].to_numpy()
        bias_kl = float(all_bias.double().mean())
        vs_uniform, vs_mean = comparisons["masked_vs_uniform"], comparisons["masked_vs_mean"]
        per_layer.update(_pairs_share(bias_kl, float(m.mean()), per_layer["kl_mean"]))
        per_layer["bias_kl_p99"] = float(np.quantile(all_bias.double().numpy(), 0.99))
        per_layer.update(
            {
                "masked_kl_mean": float(m.mean()),
                "masked_kl_p99": float(np.quantile(m.numpy(), 0.99)),
                "masked_kl_max": float(m.max()),
                "ce_masked": ce["masked"],
                **_interval_scalars(
                    "loss_increase_masked",
                    vs_uniform.loss_increase,
                    vs_uniform.loss_increase_interval,
                ),
                **_ce_scalars("masked_ce_recovered_uniform", vs_uniform),
                **_ce_scalars("masked_ce_recovered_mean", vs_mean),
                "logit_kl_masked": logit_kl["masked"],
            }
        )
    per_head.insert(0, "layer", layer)
    release_memory()  # the patched forward passes' buffers
    return QKReport(per_head, per_layer, density_q, density_k, comparisons)
