"""How good a QK dictionary is: the numbers every report, results table and widget reads.

Pure functions (tensors in, tensors / DataFrames out) plus `evaluate_qk`, which runs a model and a
dictionary over a few batches of contexts and gathers everything into a `QKReport`:

- pattern fidelity: KL(true || reconstructed) of each destination row (`kl_rows`, `kl_summary`);
  the tail (p99, max) matters as much as the mean;
- downstream loss: the next-token loss with a pattern patched into every head of the layer
  (`patched_losses`), compared with ablations (`uniform_causal_pattern`, `mean_pattern`) through
  `ce_recovered`;
- sparsity: `l0`, `feature_density`, `live_features`, `density_histogram`;
- reconstruction of q and k themselves: `variance_explained`;
- what a feature responds to: `max_activating_examples`.

Conventions: patterns are [batch, heads, dest, src] with rows summing to 1 over sources and exact
zeros above the diagonal (future sources). A feature is *active* on a token when its activation is
non-zero. Losses are in nats.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.patterns import causal_mask
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.sparse_coder import SparseCoder
from attnviz.models.adapter import ReplacePattern
from attnviz.models.rotary import Rotary

if TYPE_CHECKING:
    from attnviz.dictionaries.qk import QKDictionary
    from attnviz.models.adapter import ModelAdapter

# (qk, f_q [b n d_q], f_k [b n d_k], pairs, rotary) -> pattern [b heads n n]: the masked
# feature-pair-map reconstruction (attnviz.analysis.qk_pairs.pattern_from_features).
MaskedPatternFn = Callable[
    ["QKDictionary", Tensor, Tensor, "PairTable | None", "Rotary | None"], Tensor
]

KL_EPS = 1e-30
"""Reconstructed probabilities are clamped to at least this before their log is taken."""

CE_RECOVERED_MIN_GAP = 1e-6
"""Below this |L_ablated - L_clean| (nats), ce_recovered is undefined and reported as NaN."""


# ---- pattern fidelity ------------------------------------------------------------------------


def kl_rows(true_pattern: Tensor, recon_pattern: Tensor, eps: float = KL_EPS) -> Tensor:
    """KL(true || recon) in nats of every destination row: [..., heads, dest] from [..., dest, src].

    Entries where the true probability is 0 (masked future sources) contribute exactly 0, whatever
    the reconstruction holds there. The reconstruction is clamped to >= `eps` before the log, so a
    reconstructed probability that underflowed to 0 gives a large but finite term (a lower bound on
    the true divergence). Computed in float32 at least; tiny negative rounding is clamped to 0, so a
    reconstruction equal to the truth gives exactly 0."""
    if true_pattern.shape != recon_pattern.shape:
        raise ValueError(
            f"patterns differ in shape: true {tuple(true_pattern.shape)}, "
            f"reconstructed {tuple(recon_pattern.shape)}"
        )
    dtype = torch.promote_types(true_pattern.dtype, torch.float32)
    p = true_pattern.to(dtype)
    q = recon_pattern.to(device=p.device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    log_ratio = torch.log(p.clamp_min(tiny)) - torch.log(q.clamp_min(eps))
    terms = torch.where(p > 0, p * log_ratio, torch.zeros((), dtype=dtype, device=p.device))
    return terms.sum(-1).clamp_min(0.0)


def kl_summary(kl: Tensor, layer: int | None = None) -> pd.DataFrame:
    """One row per head of the row KLs `kl` [batch, heads, dest] (or [heads, rows]): mean, p90,
    p99 and max, in nats, over every destination row of every context (the first destination,
    which can only attend to itself, is included: its KL is always 0)."""
    if kl.ndim == 2:
        per_head = kl
    elif kl.ndim == 3:
        per_head = kl.transpose(0, 1).reshape(kl.shape[1], -1)
    else:
        raise ValueError(f"kl must be [batch, heads, dest] or [heads, rows], got {tuple(kl.shape)}")
    values = per_head.detach().double().cpu().numpy()
    if values.shape[1] == 0:
        raise ValueError("kl_summary needs at least one destination row")
    p90, p99 = np.quantile(values, [0.9, 0.99], axis=1)
    frame = pd.DataFrame(
        {
            "head": np.arange(values.shape[0]),
            "mean": values.mean(axis=1),
            "p90": p90,
            "p99": p99,
            "max": values.max(axis=1),
        }
    )
    if layer is not None:
        frame.insert(0, "layer", layer)
    return frame


# ---- ablation patterns -----------------------------------------------------------------------


def uniform_causal_pattern(
    batch: int,
    heads: int,
    n: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """[batch, heads, n, n]: each destination attends equally to itself and every earlier source.

    Returned as an expanded view of one [n, n] table (do not write into it)."""
    allowed = causal_mask(n, device=device).to(dtype)
    table = allowed / allowed.sum(-1, keepdim=True)
    return table.expand(batch, heads, n, n)


class PatternMean:
    """A running mean of patterns [batch, heads, n, n] over contexts, held as one float64 sum
    [heads, n, n] and a count (memory does not grow with the corpus)."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add(self, pattern: Tensor) -> None:
        if pattern.ndim == 3:
            pattern = pattern[None]
        if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
            raise ValueError(f"patterns must be [batch, heads, n, n], got {tuple(pattern.shape)}")
        batch_sum = pattern.detach().double().sum(0)
        if self.total is None:
            self.total = batch_sum
        elif self.total.shape != batch_sum.shape:
            raise ValueError(
                f"pattern of shape {tuple(pattern.shape[1:])} cannot join a mean over "
                f"{tuple(self.total.shape)}: average contexts of one length together"
            )
        else:
            self.total += batch_sum.to(self.total.device)
        self.count += pattern.shape[0]

    def mean(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """[heads, n, n]; every row still sums to 1."""
        if self.total is None or self.count == 0:
            raise ValueError("no patterns were added")
        return (self.total / self.count).to(dtype)


def mean_pattern(patterns: Tensor | Iterable[Tensor]) -> Tensor:
    """Each head's pattern averaged over contexts at each (dest, src): [heads, n, n].

    `patterns` is one [contexts, heads, n, n] tensor or an iterable of such batches (all of one
    length n); the average of normalised rows is normalised, so rows still sum to 1."""
    acc = PatternMean()
    for batch in [patterns] if isinstance(patterns, Tensor) else patterns:
        acc.add(batch)
    return acc.mean()


# ---- downstream loss -------------------------------------------------------------------------


def _batch_pattern(pattern: Tensor, batch: int, heads: int, n: int) -> Tensor:
    """A pattern of [heads, n, n], [1, heads, n, n] or [batch, heads, n, n] as the latter."""
    if pattern.ndim == 3:
        pattern = pattern[None]
    want = (heads, n, n)
    if pattern.ndim != 4 or tuple(pattern.shape[1:]) != want or pattern.shape[0] not in (1, batch):
        raise ValueError(
            f"pattern has shape {tuple(pattern.shape)}; expected [{batch}, {heads}, {n}, {n}] "
            f"or [{heads}, {n}, {n}]"
        )
    return pattern.expand(batch, *want)


def patched_losses(
    adapter: ModelAdapter, tokens: Tensor, layer: int, patterns: Mapping[str, Tensor]
) -> dict[str, Any]:
    """The mean next-token loss with each candidate pattern patched into ALL heads of `layer`.

    `patterns` maps a name to a pattern [batch, heads, n, n] (or [heads, n, n], used for every
    context). Returns
    ``{"n_predictions": batch * (n - 1), "ce": {"clean": L, name: L, ...},
    "logit_kl": {name: KL, ...}}`` where L is the mean cross-entropy in nats and KL is
    KL(clean || patched) of the next-token distributions, averaged over the same predicted
    positions (all but the last)."""
    if "clean" in patterns:
        raise ValueError("'clean' names the unpatched run: give the pattern another name")
    tokens = adapter.check_tokens(tokens)
    batch, n = tokens.shape
    if n < 2:
        raise ValueError("the loss needs contexts of at least two tokens")
    heads = adapter.spec.n_heads
    targets = tokens[:, 1:, None]

    clean_logprobs = adapter.run(tokens)[:, :-1].float().log_softmax(-1)
    clean_probs = clean_logprobs.exp()
    ce: dict[str, float] = {"clean": float(-clean_logprobs.gather(-1, targets).mean())}
    logit_kl: dict[str, float] = {}
    for name, pattern in patterns.items():
        full = _batch_pattern(pattern, batch, heads, n)
        patch = ReplacePattern(layer, list(range(heads)), full)
        logprobs = adapter.run(tokens, [patch])[:, :-1].float().log_softmax(-1)
        ce[name] = float(-logprobs.gather(-1, targets).mean())
        logit_kl[name] = float((clean_probs * (clean_logprobs - logprobs)).sum(-1).mean())
        del logprobs
    return {"n_predictions": batch * (n - 1), "ce": ce, "logit_kl": logit_kl}


def ce_recovered(clean: float, recon: float, ablated: float) -> float:
    """(L_ablated - L_recon) / (L_ablated - L_clean): 1 when the reconstruction loses nothing,
    0 when it is as bad as the ablation (negative when worse, above 1 when it beats the model).

    Undefined when the ablation does no damage: the ratio divides by ~0 and is unstable for small
    gaps. Returns NaN (with a warning) when |L_ablated - L_clean| < 1e-6."""
    gap = ablated - clean
    if not math.isfinite(gap) or abs(gap) < CE_RECOVERED_MIN_GAP:
        warnings.warn(
            f"ce_recovered is undefined: the ablation changes the loss by {gap:.3g} nats "
            f"(clean {clean:.6g}, ablated {ablated:.6g}); reporting NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    return (ablated - recon) / gap


# ---- sparsity --------------------------------------------------------------------------------


def _as_batches(x: Tensor | Iterable[Tensor]) -> Iterable[Tensor]:
    return [x] if isinstance(x, Tensor) else x


def l0(f: Tensor) -> float:
    """Mean number of active (non-zero) features per token of activations f [..., d_hidden]."""
    if f.ndim == 0 or f[..., 0].numel() == 0:
        raise ValueError("l0 needs activations [..., d_hidden] for at least one token")
    return float((f != 0).sum(-1).double().mean())


def feature_density(f_batches: Tensor | Iterable[Tensor]) -> Tensor:
    """The fraction of tokens each feature is active on: float64 [d_hidden], from one tensor or an
    iterable of tensors of activations [..., d_hidden]."""
    counts: Tensor | None = None
    n_tokens = 0
    for f in _as_batches(f_batches):
        active = (f.detach() != 0).reshape(-1, f.shape[-1])
        batch_counts = active.sum(0).double().cpu()
        counts = batch_counts if counts is None else counts + batch_counts
        n_tokens += active.shape[0]
    if counts is None or n_tokens == 0:
        raise ValueError("feature_density needs activations for at least one token")
    return counts / n_tokens


def live_features(density: Tensor) -> int:
    """How many features fire at least once (density > 0)."""
    return int((density > 0).sum())


def density_histogram(density: Tensor, bins: int | Sequence[float] = 20) -> pd.DataFrame:
    """A histogram of log10(density) of the live features, with dead features (density 0) counted
    in a separate first row (bin "dead", NaN edges).

    `bins` is a number of equal bins from floor(log10 of the rarest live feature) to 0, or the
    log10 bin edges themselves (give fixed edges to compare dictionaries). Live features outside
    given edges are counted in the first / last bin. Columns: bin, log10_lo, log10_hi, count,
    dead."""
    d = density.detach().double().cpu().reshape(-1)
    live = d[d > 0]
    log_d = torch.log10(live).numpy()
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError("bins must be at least 1")
        lo = math.floor(float(log_d.min())) if log_d.size else -1.0
        lo = min(lo, -1.0)
        edges = np.linspace(lo, 0.0, bins + 1)
    else:
        edges = np.asarray(list(bins), dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be at least two strictly increasing numbers")
    counts, _ = np.histogram(np.clip(log_d, edges[0], edges[-1]), bins=edges)
    rows: list[dict[str, Any]] = [
        {
            "bin": "dead",
            "log10_lo": float("nan"),
            "log10_hi": float("nan"),
            "count": int((d == 0).sum()),
            "dead": True,
        }
    ]
    for lo_edge, hi_edge, count in zip(edges[:-1], edges[1:], counts, strict=True):
        rows.append(
            {
                "bin": f"[{lo_edge:.2f}, {hi_edge:.2f})",
                "log10_lo": float(lo_edge),
                "log10_hi": float(hi_edge),
                "count": int(count),
                "dead": False,
            }
        )
    return pd.DataFrame(rows, columns=["bin", "log10_lo", "log10_hi", "count", "dead"])


# ---- reconstruction of q and k ---------------------------------------------------------------


class VarianceExplained:
    """Streaming `variance_explained`: float64 sums of squared error, of x and of x^2."""

    def __init__(self, vector_ndim: int = 2) -> None:
        self.vector_ndim = vector_ndim
        self.sq_err = 0.0
        self.sq_sum = 0.0
        self.total: Tensor | None = None
        self.n = 0

    def add(self, true: Tensor, recon: Tensor) -> None:
        if true.shape != recon.shape:
            raise ValueError(
                f"shapes differ: true {tuple(true.shape)}, reconstructed {tuple(recon.shape)}"
            )
        if true.ndim <= self.vector_ndim:
            raise ValueError(
                f"expected [tokens..., vector] with a {self.vector_ndim}-d vector per token, got "
                f"{tuple(true.shape)} (pass vector_ndim=1 for flattened [tokens, d] inputs)"
            )
        t = true.detach().double().reshape(-1, *true.shape[true.ndim - self.vector_ndim :])
        r = recon.detach().to(t).reshape(t.shape)
        self.sq_err += float((t - r).pow(2).sum())
        self.sq_sum += float(t.pow(2).sum())
        s = t.sum(0).cpu()
        self.total = s if self.total is None else self.total + s
        self.n += t.shape[0]

    def value(self) -> float:
        if self.total is None or self.n == 0:
            raise ValueError("no tokens were added")
        var = self.sq_sum - float(self.total.pow(2).sum()) / self.n
        if var <= 0:
            return float("nan")
        return 1.0 - self.sq_err / var


def variance_explained(true: Tensor, recon: Tensor, *, vector_ndim: int = 2) -> float:
    """1 - sum ||true - recon||^2 / sum ||true - mean(true)||^2 over tokens, the mean taken over
    tokens for each coordinate. The trailing `vector_ndim` dimensions make one token's vector
    (2 for q / k as [..., heads, d_head]; 1 for flattened [tokens, d]). 1 for a perfect
    reconstruction, 0 for predicting the mean; NaN when `true` does not vary."""
    if true.shape != recon.shape:
        raise ValueError(
            f"shapes differ: true {tuple(true.shape)}, reconstructed {tuple(recon.shape)}"
        )
    if true.ndim <= vector_ndim:
        raise ValueError(
            f"expected [tokens..., vector] with a {vector_ndim}-d vector per token, got "
            f"{tuple(true.shape)} (pass vector_ndim=1 for flattened [tokens, d] inputs)"
        )
    t = true.detach().double().reshape(-1, *true.shape[true.ndim - vector_ndim :])
    r = recon.detach().to(t).reshape(t.shape)
    var = float((t - t.mean(0)).pow(2).sum())
    if var <= 0:
        return float("nan")
    return 1.0 - float((t - r).pow(2).sum()) / var


# ---- running a dictionary --------------------------------------------------------------------


def _tokens_of(batch: Tensor | Mapping[str, Tensor] | Sequence[Sequence[int]]) -> Tensor:
    """Token ids [b, n] (long, on the CPU) from a tensor or an ActivationStore batch dict."""
    if isinstance(batch, Mapping):
        batch = batch["tokens"]
    tokens = torch.as_tensor(batch).long().cpu()
    if tokens.ndim == 1:
        tokens = tokens[None]
    return tokens


def _place(qk: QKDictionary) -> tuple[torch.device, torch.dtype]:
    p = next(qk.parameters())
    return p.device, p.dtype


def _input_fields(qk: QKDictionary) -> tuple[str, ...]:
    return ("resid_normed",) if qk.is_transcoder else ("q", "k")


def _feature_column(coder: SparseCoder, x: Tensor, feature: int) -> Tensor:
    """One feature's activation [...] without computing the others (for a plain SparseCoder)."""
    if type(coder).encode is SparseCoder.encode and type(coder).pre_activation is (
        SparseCoder.pre_activation
    ):
        pre = (x - coder.b_pre) @ coder.W_enc[:, feature] + coder.b_enc[feature]
        return torch.relu(pre)
    return coder.encode(x)[..., feature]


def max_activating_examples(
    adapter: ModelAdapter,
    qk: QKDictionary,
    feature: int,
    side: str,
    token_batches: Iterable[Tensor | Mapping[str, Tensor]],
    k: int = 10,
    window: int = 8,
) -> pd.DataFrame:
    """The k tokens (over all contexts) where a query (`side="q"`) or key (`side="k"`) feature is
    most active, strongest first.

    Contexts are numbered in the order the batches give them, from 0. Only positions where the
    feature fires (activation > 0) are listed, so fewer than k rows come back for a rare feature.
    Columns: rank, context, position, activation, token (its string), before and after (lists of
    (token string, activation) for up to `window` positions on each side, within the context).
    Batches may be token tensors [b, n] or ActivationStore batch dicts (their "tokens")."""
    if side not in ("q", "k"):
        raise ValueError(f"side must be 'q' (query features) or 'k' (key features), got {side!r}")
    coder = qk.query if side == "q" else qk.key
    if not 0 <= feature < coder.d_hidden:
        raise ValueError(
            f"feature {feature} is out of range: the {side} side has features 0-{coder.d_hidden - 1}"
        )
    if k < 1 or window < 0:
        raise ValueError("k must be >= 1 and window >= 0")
    layer = qk.cfg.layer
    field_name = "resid_normed" if qk.is_transcoder else side
    device, dtype = _place(qk)

    best_act = torch.empty(0)
    best_ctx = torch.empty(0, dtype=torch.long)
    best_pos = torch.empty(0, dtype=torch.long)
    kept: dict[int, tuple[Tensor, Tensor]] = {}  # context -> (tokens [n], activations [n])
    offset = 0
    for item in token_batches:
        tokens = _tokens_of(item)
        b, n = tokens.shape
        x = getattr(adapter.attention(tokens, layer, (field_name,)), field_name)
        if not qk.is_transcoder:
            x = x.flatten(-2)
        with torch.no_grad():
            acts = _feature_column(coder, x.to(device=device, dtype=dtype), feature)
        acts = acts.float().cpu()
        flat = acts.reshape(-1)
        top = flat.topk(min(k, flat.numel()))
        cand_act = torch.cat([best_act, top.values])
        cand_ctx = torch.cat([best_ctx, offset + top.indices // n])
        cand_pos = torch.cat([best_pos, top.indices % n])
        for row in (top.indices // n).unique().tolist():
            kept[offset + row] = (tokens[row], acts[row])
        choose = cand_act.topk(min(k, cand_act.numel())).indices
        best_act, best_ctx, best_pos = cand_act[choose], cand_ctx[choose], cand_pos[choose]
        needed = set(best_ctx.tolist())
        kept = {c: v for c, v in kept.items() if c in needed}
        offset += b

    # Strongest first; ties broken by context then position, so the order is reproducible.
    order = sorted(
        range(best_act.numel()),
        key=lambda i: (-float(best_act[i]), int(best_ctx[i]), int(best_pos[i])),
    )
    rows: list[dict[str, Any]] = []
    strings: dict[int, list[str]] = {}
    for i in order:
        act = float(best_act[i])
        if not act > 0:
            continue
        ctx, pos = int(best_ctx[i]), int(best_pos[i])
        ctx_tokens, ctx_acts = kept[ctx]
        if ctx not in strings:
            strings[ctx] = adapter.to_str_tokens(ctx_tokens)
        words, values = strings[ctx], ctx_acts.tolist()
        lo, hi = max(0, pos - window), min(len(words), pos + window + 1)
        rows.append(
            {
                "rank": len(rows),
                "context": ctx,
                "position": pos,
                "activation": act,
                "token": words[pos],
                "before": [(words[j], values[j]) for j in range(lo, pos)],
                "after": [(words[j], values[j]) for j in range(pos + 1, hi)],
            }
        )
    frame = pd.DataFrame(
        rows, columns=["rank", "context", "position", "activation", "token", "before", "after"]
    )
    frame.attrs.update({"feature": feature, "side": side, "layer": layer})
    return frame


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


def _rotary_on(rotary: Rotary | None, device: torch.device) -> Rotary | None:
    if rotary is None:
        return None
    return Rotary(rotary.cos.to(device), rotary.sin.to(device), rotary.adjacent_pairs)


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
    or `masked_pattern_fn` is given; `masked_pattern_fn(qk, f_q, f_k, pairs, rotary)` defaults
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
    batches = [_tokens_of(b) for b in token_batches]
    if not batches:
        raise ValueError("evaluate_qk needs at least one batch of tokens")
    use_masked = pairs is not None or masked_pattern_fn is not None
    if use_masked and masked_pattern_fn is None:
        from attnviz.analysis.qk_pairs import pattern_from_features

        masked_pattern_fn = pattern_from_features
    heads = adapter.spec.n_heads
    device, dtype = _place(qk)
    pairs_here = pairs.to(device) if pairs is not None else None

    # Pass 1: the mean pattern for each context length.
    means: dict[int, PatternMean] = {}
    for tokens in batches:
        pattern = adapter.attention(tokens, layer, ("pattern",)).pattern
        assert pattern is not None
        means.setdefault(tokens.shape[1], PatternMean()).add(pattern)
    mean_patterns = {n: m.mean().to(adapter.device) for n, m in means.items()}

    # Pass 2.
    fields = ("pattern", "q", "k", *(f for f in _input_fields(qk) if f not in ("q", "k")))
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

        def here(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device=device, dtype=dtype)

        with torch.no_grad():
            q_hat, k_hat, f_q, f_k = qk(
                resid_normed=here(acts.resid_normed), q=here(acts.q), k=here(acts.k)
            )
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
                rotary = _rotary_on(adapter.rotary(layer, n), device)
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
