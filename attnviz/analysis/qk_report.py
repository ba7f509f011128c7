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

from attnviz.dictionaries.pair_table import PairTable

if TYPE_CHECKING:
    from attnviz.dictionaries.qk import QKDictionary
    from attnviz.models.adapter import ModelAdapter

from attnviz.analysis.qk_metrics import (
    MaskedPatternFn,
    PatternMean,
    VarianceExplained,
    ce_recovered,
    density_histogram,
    kl_rows,
    kl_summary,
    live_features,
    patched_losses,
    uniform_causal_pattern,
)
from attnviz.data.contexts import token_batch

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
    density_q / density_k: each feature's firing density [d_hidden] (kept out of to_dict)."""

    per_head: pd.DataFrame
    per_layer: dict[str, Any]
    density_q: Tensor = field(repr=False)
    density_k: Tensor = field(repr=False)

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
        }


def evaluate_qk(
    adapter: ModelAdapter,
    qk: QKDictionary,
    token_batches: Iterable[Tensor | Mapping[str, Tensor]],
    pairs: PairTable | None = None,
    masked_pattern_fn: MaskedPatternFn | None = None,
    density_bins: int | Sequence[float] = 20,
) -> QKReport:
    """Evaluate a QK dictionary on the contexts in `token_batches` (tensors [b, n] or
    ActivationStore batch dicts with "tokens"; the batches are read into memory once, as token
    ids only, since two passes are made).

    Pass 1 averages the layer's true pattern over the contexts (the mean-ablation pattern, one
    float64 [heads, n, n] sum per context length). Pass 2 runs the layer and the dictionary on
    each batch and patches the layer's heads with the transcoder's pattern
    (adapter.pattern_from_qk(q_hat, k_hat)), the masked feature-pair map's pattern (when `pairs`
    or `masked_pattern_fn` is given, or the dictionary has its own `qk.pairs`; `masked_pattern_fn(qk, f_q, f_k, pairs, rotary)` defaults
    to attnviz.analysis.qk_pairs.pattern_from_features), the uniform causal pattern and the mean
    pattern.

    per_layer keys: model, architecture, layer, n_contexts, n_tokens, n_predictions, d_hidden_q,
    d_hidden_k, l0_q, l0_k, live_q, live_k, density_hist_q, density_hist_k, var_explained_q,
    var_explained_k, kl_mean, kl_p99, kl_max, ce_clean, ce_recon, ce_uniform, ce_mean_ablation,
    ce_recovered_uniform, ce_recovered_mean, logit_kl_recon, logit_kl_uniform,
    logit_kl_mean_ablation, pairs_kept, pairs_fraction_masked, and with the masked map:
    masked_kl_mean, masked_kl_p99, masked_kl_max, ce_masked, masked_ce_recovered_uniform,
    masked_ce_recovered_mean, logit_kl_masked (None where not evaluated). Row KLs include the
    first destination (always 0). The mean pattern is taken over the same contexts it ablates."""
    layer = qk.cfg.layer
    qk.check_compatible(adapter.spec)
    adapter.check_layer(layer)
    batches = [token_batch(b) for b in token_batches]
    if not batches:
        raise ValueError("evaluate_qk needs at least one batch of tokens")
    if pairs is None and masked_pattern_fn is None:
        pairs = qk.pairs  # a trained dictionary carries its own pair table
    use_masked = pairs is not None or masked_pattern_fn is not None
    if use_masked and masked_pattern_fn is None:
        from attnviz.analysis.qk_pairs import pattern_from_features

        masked_pattern_fn = pattern_from_features
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
    active_q = active_k = 0
    counts_q = torch.zeros(qk.cfg.d_hidden_q, dtype=torch.float64)
    counts_k = torch.zeros(qk.cfg.d_hidden_k, dtype=torch.float64)
    ve_q, ve_k = VarianceExplained(), VarianceExplained()
    ce_sums: dict[str, float] = {}
    kl_sums: dict[str, float] = {}
    n_tokens = n_predictions = n_contexts = 0
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
            if use_masked:
                assert masked_pattern_fn is not None
                rotary = adapter.rotary(layer, n)
                rotary = rotary.to(device) if rotary is not None else None
                masked = masked_pattern_fn(qk, f_q, f_k, pairs_here, rotary)
                masked = masked.to(adapter.device, torch.float32)
                candidates["masked"] = masked
                kl_masked.append(
                    kl_rows(acts.pattern, masked).transpose(0, 1).reshape(heads, -1).cpu()
                )

        active_q += int((f_q != 0).sum())
        active_k += int((f_k != 0).sum())
        counts_q += (f_q != 0).reshape(-1, f_q.shape[-1]).sum(0).double().cpu()
        counts_k += (f_k != 0).reshape(-1, f_k.shape[-1]).sum(0).double().cpu()
        ve_q.add(acts.q, q_hat)
        ve_k.add(acts.k, k_hat)

        losses = patched_losses(adapter, tokens, layer, candidates)
        w = losses["n_predictions"]
        for name, value in losses["ce"].items():
            ce_sums[name] = ce_sums.get(name, 0.0) + value * w
        for name, value in losses["logit_kl"].items():
            kl_sums[name] = kl_sums.get(name, 0.0) + value * w
        n_tokens += b * n
        n_predictions += w
        n_contexts += b

    ce = {name: s / n_predictions for name, s in ce_sums.items()}
    logit_kl = {name: s / n_predictions for name, s in kl_sums.items()}
    density_q, density_k = counts_q / n_tokens, counts_k / n_tokens

    per_head = kl_summary(torch.cat(kl_recon, 1)).rename(
        columns={c: f"kl_{c}" for c in ("mean", "p90", "p99", "max")}
    )
    all_recon = torch.cat(kl_recon, 1).double()
    per_layer: dict[str, Any] = {
        "model": qk.cfg.model,
        "architecture": qk.cfg.architecture,
        "layer": layer,
        "n_contexts": n_contexts,
        "n_tokens": n_tokens,
        "n_predictions": n_predictions,
        "d_hidden_q": qk.cfg.d_hidden_q,
        "d_hidden_k": qk.cfg.d_hidden_k,
        "l0_q": active_q / n_tokens,
        "l0_k": active_k / n_tokens,
        "live_q": live_features(density_q),
        "live_k": live_features(density_k),
        "density_hist_q": density_histogram(density_q, density_bins),
        "density_hist_k": density_histogram(density_k, density_bins),
        "var_explained_q": ve_q.value(),
        "var_explained_k": ve_k.value(),
        "kl_mean": float(all_recon.mean()),
        "kl_p99": float(np.quantile(all_recon.numpy(), 0.99)),
        "kl_max": float(all_recon.max()),
        "ce_clean": ce["clean"],
        "ce_recon": ce["recon"],
        "ce_uniform": ce["uniform"],
        "ce_mean_ablation": ce["mean_ablation"],
        "ce_recovered_uniform": ce_recovered(ce["clean"], ce["recon"], ce["uniform"]),
        "ce_recovered_mean": ce_recovered(ce["clean"], ce["recon"], ce["mean_ablation"]),
        "logit_kl_recon": logit_kl["recon"],
        "logit_kl_uniform": logit_kl["uniform"],
        "logit_kl_mean_ablation": logit_kl["mean_ablation"],
        "pairs_kept": pairs.nnz if pairs is not None else None,
        "pairs_fraction_masked": 1.0 - pairs.fraction_kept if pairs is not None else None,
        "masked_kl_mean": None,
        "masked_kl_p99": None,
        "masked_kl_max": None,
        "ce_masked": None,
        "masked_ce_recovered_uniform": None,
        "masked_ce_recovered_mean": None,
        "logit_kl_masked": None,
    }
    if use_masked:
        all_masked = torch.cat(kl_masked, 1)
        masked_head = kl_summary(all_masked)
        for c in ("mean", "p90", "p99", "max"):
            per_head[f"masked_kl_{c}"] = masked_head[c].to_numpy()
        m = all_masked.double()
        per_layer.update(
            {
                "masked_kl_mean": float(m.mean()),
                "masked_kl_p99": float(np.quantile(m.numpy(), 0.99)),
                "masked_kl_max": float(m.max()),
                "ce_masked": ce["masked"],
                "masked_ce_recovered_uniform": ce_recovered(
                    ce["clean"], ce["masked"], ce["uniform"]
                ),
                "masked_ce_recovered_mean": ce_recovered(
                    ce["clean"], ce["masked"], ce["mean_ablation"]
                ),
                "logit_kl_masked": logit_kl["masked"],
            }
        )
    per_head.insert(0, "layer", layer)
    return QKReport(per_head, per_layer, density_q, density_k)
