"""One prompt through a QK dictionary: the layer's true pattern beside its two reconstructions
(the transcoders' q̂·k̂, and the masked feature-pair map), what the widgets show.

>>> rec = reconstruct(model, qk, model.to_tokens("The cat sat on the mat"))  # doctest: +SKIP
>>> rec.kl_transcoder       # mean KL(true || reconstruction) per head, in nats  # doctest: +SKIP
>>> rec.score(head=2, dest=5, src=1, kind="masked")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.metrics import mean_row_kl
from attnviz.analysis.qk import decompose_score, masked_and_bias_scores, masked_scores
from attnviz.models.rotary import Rotary

if TYPE_CHECKING:
    from attnviz.dictionaries.pair_table import PairTable
    from attnviz.dictionaries.qk import QKDictionary
    from attnviz.models.adapter import ModelAdapter

__all__ = ["Reconstruction", "ReconstructionKind", "complete", "reconstruct"]

ReconstructionKind = Literal["transcoder", "masked"]


@dataclass
class Reconstruction:
    """The true and reconstructed patterns [heads, n, n] of one prompt at one layer (float32, CPU),
    with the feature activations [n, d_q] and [n, d_k] they came from."""

    qk: QKDictionary = field(repr=False)
    layer: int
    tokens: Tensor  # [n] token ids
    true: Tensor = field(repr=False)
    transcoder: Tensor = field(repr=False)
    masked: Tensor | None = field(repr=False)  # None when the dictionary has no pair table
    f_q: Tensor = field(repr=False)
    f_k: Tensor = field(repr=False)
    rotary: Rotary | None = field(repr=False)
    kl_transcoder: Tensor | None  # [heads]: metrics.mean_row_kl, rows 1.. (None until complete)
    kl_masked: Tensor | None  # [heads]
    kl_bias: Tensor | None = None  # [heads]: the map's bias terms alone (no pair kept)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())

    def pattern(self, kind: str) -> Tensor:
        """ "true", "transcoder" or "masked" (ValueError when there is no pair table)."""
        if kind == "true":
            return self.true
        if kind == "transcoder":
            return self.transcoder
        if kind == "masked":
            if self.masked is None:
                raise ValueError(
                    "this dictionary has no pair table, so there is no masked reconstruction: "
                    "train one with attnviz.training.mask.train_pair_mask"
                )
            return self.masked
        raise ValueError(f"unknown pattern {kind!r}: use 'true', 'transcoder' or 'masked'")

    def _pairs(self, kind: ReconstructionKind) -> PairTable | None:
        if kind == "transcoder":
            return None  # every pair at mask 1: exactly q̂·k̂
        self.pattern("masked")  # raises when there is no table
        return self.qk.pairs

    def _check_cell(self, head: int, dest: int, src: int) -> None:
        n, heads = self.n_tokens, self.true.shape[0]
        if not 0 <= head < heads:
            raise ValueError(f"head {head} is out of range: this layer has heads 0-{heads - 1}")
        if not (0 <= src <= dest < n):
            raise ValueError(
                f"cell (destination {dest}, source {src}) is not a causal cell of a {n}-token "
                f"prompt: need 0 <= source <= destination < {n}"
            )

    def _at(self, rows: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        device = self.qk.device
        idx = torch.tensor(rows)
        return self.f_q[idx].to(device), self.f_k[idx].to(device), idx.to(device)

    def score(self, head: int, dest: int, src: int, kind: ReconstructionKind = "masked") -> float:
        """The reconstructed attention score (before softmax) of one cell.

        Computed on its own, from the features at the two positions rotated to where they are,
        so it checks `decompose` (whose rows add up to it) rather than repeating it."""
        self._check_cell(head, dest, src)
        rows = [src] if src == dest else [src, dest]
        f_q, f_k, positions = self._at(rows)
        scores = masked_scores(
            self.qk, f_q, f_k, self._pairs(kind), self.rotary, positions,
            include_row_constants=True,
        )  # fmt: skip
        return float(scores[head, len(rows) - 1, 0])

    def decompose(
        self, head: int, dest: int, src: int, kind: ReconstructionKind = "masked", top: int = 10
    ) -> pd.DataFrame:
        """The cell's score split into its top feature pairs, the other pairs and the bias terms
        (attnviz.analysis.qk.decompose_score); the contributions add up to `score`."""
        self._check_cell(head, dest, src)
        device = self.qk.device
        rotary = self.rotary
        return decompose_score(
            self.qk, self.f_q[dest].to(device), self.f_k[src].to(device), dest, src, head,
            self._pairs(kind), rotary, top=top, include_row_constants=True,
        )  # fmt: skip


def reconstruct(adapter: ModelAdapter, qk: QKDictionary, tokens: Tensor,
                masked: bool = True) -> Reconstruction:  # fmt: skip
    """Run one prompt (token ids [n] or [1, n]) to the dictionary's layer and rebuild its pattern.

    The masked reconstruction is made when the dictionary carries a pair table (qk.pairs), unless
    `masked` is False: then it and the KLs wait for complete(rec) (a widget shows the patterns
    first).
    Raises DictionaryMismatchError when the dictionary was made for another model shape."""
    layer = qk.cfg.layer
    qk.check_compatible(adapter.spec)
    tokens = adapter.check_tokens(tokens.reshape(1, -1) if tokens.ndim == 1 else tokens)
    if tokens.shape[0] != 1:
        raise ValueError(f"reconstruct takes one prompt, got a batch of {tokens.shape[0]}")
    n = tokens.shape[1]
    acts = adapter.attention(tokens, layer, ["pattern", *qk.input_fields])
    assert acts.pattern is not None
    device = qk.device
    with torch.no_grad():
        q_hat, k_hat, f_q, f_k = qk(**qk.inputs(acts))
        transcoder = adapter.pattern_from_qk(
            q_hat.to(adapter.device, torch.float32), k_hat.to(adapter.device, torch.float32), layer
        )[0]
        rotary_here = adapter.rotary(layer, n)
        rotary_here = rotary_here.to(device) if rotary_here is not None else None
    true = acts.pattern[0].float().cpu()
    transcoder = transcoder.float().cpu()
    rec = Reconstruction(
        qk=qk,
        layer=layer,
        tokens=tokens[0].cpu(),
        true=true,
        transcoder=transcoder,
        masked=None,
        f_q=f_q[0].float().cpu(),
        f_k=f_k[0].float().cpu(),
        rotary=rotary_here,
        kl_transcoder=None,
        kl_masked=None,
    )
    return complete(rec) if masked else rec


def complete(rec: Reconstruction) -> Reconstruction:
    """Fill in what reconstruct(..., masked=False) left out: the transcoder's KL, and the masked
    feature-pair map's pattern and KL when the dictionary has a pair table, with the KL of the
    map's bias terms alone beside it (what the kept pairs improve on; no model run: the features
    are in `rec`)."""
    if rec.kl_transcoder is None:
        rec.kl_transcoder = mean_row_kl(rec.true.float(), rec.transcoder.float())
    qk = rec.qk
    if qk.pairs is None or rec.masked is not None:
        return rec
    device = qk.device
    f_q, f_k = rec.f_q.to(device), rec.f_k.to(device)
    with torch.no_grad():
        scores, bias = masked_and_bias_scores(qk, f_q, f_k, qk.pairs.to(device), rec.rotary)
    rec.masked = scores.softmax(-1).float().cpu()
    rec.kl_masked = mean_row_kl(rec.true.float(), rec.masked)
    rec.kl_bias = mean_row_kl(rec.true.float(), bias.softmax(-1).float().cpu())
    return rec
