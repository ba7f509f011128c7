"""Head-loading vectors: how much of each SAE feature lives on each attention head (Anthropic's
attention update, 2025, which describes value-SAE features this way).

A feature's decoder row, at a site that splits into heads, is a block per head; its loading on a
head is the norm of that block. `raw` keeps the norms (comparable across features: a feature with
a small decoder block everywhere has small loadings); `normalised` divides each row by its sum, so
rows are distributions over heads (what k-means clusters: the *shape* of the loading, not its size).

- z SAEs (hook_z) split by query head;
- v SAEs split by key/value head. Under grouped-query attention one value head is read by several
  query heads, so a v loading says which value head carries the feature, not which query head moves
  it; `query_head_usage` measures how much each query head actually reads the feature (its
  attention to the positions where the feature fires) and `expand_to_query_heads` splits each
  value head's loading over its query heads in those proportions;
- SAEs over several layers split by (layer, head), layer-major.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.sae_check import site_activations
from attnviz.data.contexts import token_batch
from attnviz.dictionaries.sae import SAE

__all__ = [
    "HeadLoadings",
    "cross_layer_summary",
    "expand_to_query_heads",
    "head_loadings",
    "layer_shares",
    "query_head_usage",
]


@dataclass
class HeadLoadings:
    """Per-feature decoder norms per head, and what the heads are."""

    raw: Tensor
    """[d_sae, n_groups] norm of each feature's decoder block per head (float32)."""
    layers: list[int]
    """[n_groups] the layer of each column."""
    heads: list[int]
    """[n_groups] the head of each column within its layer (a query head, or a kv head for v)."""
    kind: str
    """"query" (z SAEs, or v loadings expanded to query heads) or "kv" (v SAEs)."""
    group_size: int = 1
    """Query heads that read each kv head (1 for query-head columns)."""

    @property
    def normalised(self) -> Tensor:
        """[d_sae, n_groups] rows divided by their sum (all-zero rows stay zero)."""
        return self.raw / self.raw.sum(-1, keepdim=True).clamp_min(1e-12)

    @property
    def labels(self) -> list[str]:
        """Column names: "L17 H3" for query heads, "L17 KV1 (H3-5)" for kv heads."""
        out = []
        for layer, head in zip(self.layers, self.heads, strict=True):
            if self.kind == "kv":
                lo = head * self.group_size
                reads = f" (H{lo}-{lo + self.group_size - 1})" if self.group_size > 1 else ""
                out.append(f"L{layer} KV{head}{reads}")
            else:
                out.append(f"L{layer} H{head}")
        return out

    @property
    def note(self) -> str:
        """One line saying what the columns are, for figure captions."""
        if self.kind == "kv" and self.group_size > 1:
            return (
                f"value heads (grouped-query attention: each is read by {self.group_size} query "
                "heads); expand_to_query_heads splits them by attention"
            )
        return "value heads" if self.kind == "kv" else "query heads"

    def frame(self, normalised: bool = True) -> pd.DataFrame:
        """Features x heads as a DataFrame (columns = labels)."""
        data = (self.normalised if normalised else self.raw).numpy()
        return pd.DataFrame(data, columns=self.labels).rename_axis("feature")


def head_loadings(sae: SAE, group_size: int | None = None) -> HeadLoadings:
    """The head-loading vectors of an SAE whose site splits into heads (z or v). group_size: query
    heads per kv head for a v SAE whose config does not say (one loaded from SAELens)."""
    c = sae.cfg
    if c.site not in ("z", "v") or not c.n_heads:
        raise ValueError(
            f"head loadings need an SAE at a site that splits into heads (z or v); this one "
            f"reads {c.site}: its decoder has no per-head blocks"
        )
    raw = sae.dec_heads.detach().float().norm(dim=-1).reshape(c.d_sae, -1).cpu()
    layers = [layer for layer in c.layers for _ in range(c.n_heads)]
    heads = [h for _ in c.layers for h in range(c.n_heads)]
    if c.site == "z":
        return HeadLoadings(raw, layers, heads, "query")
    return HeadLoadings(raw, layers, heads, "kv", int(group_size or c.group_size or 1))


@torch.no_grad()
def query_head_usage(adapter, sae: SAE, tokens: Tensor, batch_size: int = 8) -> Tensor:
    """How much each query head reads each feature of a v SAE: U[f, l, h] = sum over contexts,
    destinations t and sources s of pattern[l, h, t, s] * act_f(s), the feature's activation at s
    weighted by head h's attention to s. [d_sae, n_layers, n_heads] (BOS sources left out: every
    head parks attention there, and BOS values are outliers)."""
    if sae.cfg.site != "v":
        raise ValueError(f"query_head_usage reads a v SAE; this one reads {sae.cfg.site}")
    tokens = token_batch(tokens)
    spec = adapter.spec
    usage = torch.zeros(sae.cfg.d_sae, len(sae.cfg.layers), spec.n_heads)
    w = sae.W_enc
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size]
        x = site_activations(adapter, sae, batch).to(device=w.device, dtype=w.dtype)
        f = sae.encode(x).float().cpu()  # [b, src, d_sae]
        f[:, 0] = 0
        for i, layer in enumerate(sae.cfg.layers):
            pattern = adapter.attention(batch, layer, ["pattern"]).pattern.float().cpu()
            received = pattern.sum(2)  # [b, heads, src]: attention each source gets, over dests
            usage[:, i] += torch.einsum("bhs,bsf->fh", received, f)
    return usage


def expand_to_query_heads(loadings: HeadLoadings, usage: Tensor) -> HeadLoadings:
    """v loadings over query heads: each kv head's loading split over the query heads that read
    it, in proportion to their usage of the feature (`query_head_usage`); a group's query-head
    loadings add up to its kv loading. Features no head reads split evenly."""
    if loadings.kind != "kv":
        raise ValueError("expand_to_query_heads takes kv-head loadings (from a v SAE)")
    g = loadings.group_size
    d_sae, n_cols = loadings.raw.shape
    n_layers = len(set(loadings.layers))
    usage = usage.reshape(d_sae, n_layers, -1, g)  # [f, layer, kv, group]
    if usage.shape[2] * n_layers != n_cols:
        raise ValueError(
            f"usage {tuple(usage.shape)} does not match {n_cols} kv-head columns of group {g}"
        )
    total = usage.sum(-1, keepdim=True)
    share = torch.where(total > 0, usage / total.clamp_min(1e-12), torch.full_like(usage, 1 / g))
    raw = (loadings.raw.reshape(d_sae, n_layers, -1, 1) * share).reshape(d_sae, -1)
    layers = [
        layer for layer in dict.fromkeys(loadings.layers) for _ in range(n_cols // n_layers * g)
    ]
    heads = [h for _ in range(n_layers) for h in range(n_cols // n_layers * g)]
    return HeadLoadings(raw, layers, heads, "query")


def layer_shares(loadings: HeadLoadings) -> pd.DataFrame:
    """Each feature's share of its (raw) loading in each layer: features x layers, rows sum to 1."""
    layers = list(dict.fromkeys(loadings.layers))
    col = torch.tensor([layers.index(layer) for layer in loadings.layers])
    per_layer = torch.zeros(loadings.raw.shape[0], len(layers)).index_add_(1, col, loadings.raw)
    share = per_layer / per_layer.sum(-1, keepdim=True).clamp_min(1e-12)
    return pd.DataFrame(share.numpy(), columns=[f"L{layer}" for layer in layers])


def cross_layer_summary(
    loadings: HeadLoadings, both_at: float = 0.2, alive: Tensor | None = None
) -> dict[str, float]:
    """For a two-layer SAE: features loading on both layers (each layer's share >= `both_at`),
    counted among the live features (`alive`, a [d_sae] bool, default all), beside the counts
    that load mostly on each layer."""
    shares = layer_shares(loadings)
    if shares.shape[1] != 2:
        raise ValueError(
            f"cross_layer_summary reads a two-layer SAE; this one has {shares.shape[1]}"
        )
    keep = alive.numpy() if alive is not None else slice(None)
    s = shares.to_numpy()[keep]
    first, second = shares.columns
    both = (s.min(1) >= both_at).sum()
    return {
        "features": int(s.shape[0]),
        "both": int(both),
        "both_fraction": float(both / max(s.shape[0], 1)),
        f"mostly_{first}": int((s[:, 0] > 1 - both_at).sum()),
        f"mostly_{second}": int((s[:, 1] > 1 - both_at).sum()),
        "threshold": both_at,
        f"median_share_{first}": float(pd.Series(s[:, 0]).median()) if s.size else float("nan"),
    }
