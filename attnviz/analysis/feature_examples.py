"""What a QK dictionary's feature responds to: its max-activating contexts, with the tokens
around each one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from attnviz.dictionaries.sparse_coder import SparseCoder

if TYPE_CHECKING:
    from attnviz.dictionaries.qk import QKDictionary
    from attnviz.models.adapter import ModelAdapter


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
