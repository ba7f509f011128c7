"""What a QK dictionary's feature responds to: its max-activating contexts, with the tokens
around each one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from attnviz.data.contexts import token_batch
from attnviz.dictionaries.sparse_coder import SparseCoder

if TYPE_CHECKING:
    from attnviz.dictionaries.qk import QKDictionary
    from attnviz.models.adapter import ModelAdapter


def _feature_column(coder: SparseCoder, x: Tensor, feature: int) -> Tensor:
    """One feature's activation [...] without computing the others (for a plain SparseCoder; a
    TopK one needs every feature to know whether this one is among the k largest)."""
    plain = type(coder).encode is SparseCoder.encode and type(coder).pre_activation is (
        SparseCoder.pre_activation
    )
    if plain and coder.k is None:
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
    device, dtype = qk.device, qk.dtype

    best_act = torch.empty(0)
    best_ctx = torch.empty(0, dtype=torch.long)
    best_pos = torch.empty(0, dtype=torch.long)
    kept: dict[int, tuple[Tensor, Tensor]] = {}  # context -> (tokens [n], activations [n])
    offset = 0
    for item in token_batches:
        tokens = token_batch(item)
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

    contexts_of = {c: (adapter.to_str_tokens(t), a.tolist()) for c, (t, a) in kept.items()}
    return _example_frame(best_act, best_ctx, best_pos, contexts_of, window, feature, side, layer)


def _example_frame(
    best_act: Tensor, best_ctx: Tensor, best_pos: Tensor,
    contexts_of: Mapping[int, tuple[list[str], list[float]]], window: int,
    feature: int, side: str, layer: int,
) -> pd.DataFrame:  # fmt: skip
    """The examples table from the top activations and their contexts (token strings and the
    feature's activation at every position)."""
    # Strongest first; ties broken by context then position, so the order is reproducible.
    order = sorted(
        range(best_act.numel()),
        key=lambda i: (-float(best_act[i]), int(best_ctx[i]), int(best_pos[i])),
    )
    rows: list[dict[str, Any]] = []
    for i in order:
        act = float(best_act[i])
        if not act > 0:
            continue
        ctx, pos = int(best_ctx[i]), int(best_pos[i])
        words, values = contexts_of[ctx]
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


class FeatureActivations:
    """Both coders' activations over a fixed set of contexts, computed once, so that any feature's
    max-activating examples and density come back without running the model again (what a widget
    needs when a reader clicks feature after feature).

    tokens: [contexts, n] token ids. Activations are kept as float16 on the CPU
    (contexts x n x (d_q + d_k) x 2 bytes: 16 MiB for 32 x 128 tokens and 2 x 1024 features)."""

    def __init__(
        self, adapter: ModelAdapter, qk: QKDictionary, tokens: Tensor, batch_size: int = 8
    ) -> None:
        tokens = token_batch(tokens)
        if tokens.numel() == 0:
            raise ValueError("FeatureActivations needs at least one context of tokens")
        self.adapter, self.qk, self.tokens = adapter, qk, tokens
        self.layer = qk.cfg.layer
        f_q, f_k = [], []
        for start in range(0, tokens.shape[0], batch_size):
            batch = tokens[start : start + batch_size]
            acts = adapter.attention(batch, self.layer, qk.input_fields)
            with torch.no_grad():
                a, b = qk.encode(**qk.inputs(acts))
            f_q.append(a.half().cpu())
            f_k.append(b.half().cpu())
        self._acts = {"q": torch.cat(f_q), "k": torch.cat(f_k)}
        self._strings: dict[int, list[str]] = {}

    def activations(self, side: str) -> Tensor:
        """[contexts, n, d_hidden] of the query ("q") or key ("k") coder."""
        if side not in self._acts:
            raise ValueError(
                f"side must be 'q' (query features) or 'k' (key features), got {side!r}"
            )
        return self._acts[side]

    def density(self, side: str) -> Tensor:
        """Each feature's firing frequency over all tokens [d_hidden] (float64)."""
        f = self.activations(side)
        return (f > 0).reshape(-1, f.shape[-1]).double().mean(0)

    def examples(self, side: str, feature: int, k: int = 10, window: int = 8) -> pd.DataFrame:
        """Like max_activating_examples, from the stored activations."""
        f = self.activations(side)
        if not 0 <= feature < f.shape[-1]:
            raise ValueError(
                f"feature {feature} is out of range: the {side} side has features 0-{f.shape[-1] - 1}"
            )
        if k < 1 or window < 0:
            raise ValueError("k must be >= 1 and window >= 0")
        column = f[..., feature].float()  # [contexts, n]
        n = column.shape[1]
        top = column.reshape(-1).topk(min(k, column.numel()))
        ctx, pos = top.indices // n, top.indices % n
        contexts_of = {}
        for c in ctx.unique().tolist():
            if c not in self._strings:
                self._strings[c] = self.adapter.to_str_tokens(self.tokens[c])
            contexts_of[c] = (self._strings[c], column[c].tolist())
        return _example_frame(top.values, ctx, pos, contexts_of, window, feature, side, self.layer)
