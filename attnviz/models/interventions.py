"""Interventions: plain descriptions of a change to the forward pass that each adapter turns into
its own hooks, so both backends apply them the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor


@dataclass
class ReplacePattern:
    """Use `pattern` [batch len(heads) dest src] for the chosen heads of a layer."""

    layer: int
    heads: Sequence[int]
    pattern: Tensor


@dataclass
class AddToResidual:
    """Add `vector` [d_model] (or [batch, d_model]: one per sequence, e.g. a coefficient each) to
    the residual stream before `layer` at `positions` (None = all; slice(i, None) = from i on).
    Positions count from the sequence's first token, also on a cached generation step that runs
    only the newest token (see ModelAdapter.forward_cached)."""

    layer: int
    vector: Tensor
    positions: Sequence[int] | slice | None = None


@dataclass
class AddToZ:
    """Add `vector` [n_heads * d_head] (or [batch, n_heads * d_head]) to a layer's hook_z, the
    heads' outputs before W_O, at `positions` (as AddToResidual). Zero blocks leave their heads
    alone, so a vector with some heads' blocks set steers through those heads only; with every
    block set it equals adding its W_O image to the attention output."""

    layer: int
    vector: Tensor
    positions: Sequence[int] | slice | None = None


@dataclass
class Splice:
    """Replace the activation at a site with `module(activation)` (e.g. an SAE's reconstruction).

    Sites: resid_pre / attn_out / resid_post [batch pos d_model]; z [batch pos n_heads*d_head]
    (heads concatenated, as hook_z dictionaries read it)."""

    layer: int
    site: str
    module: Callable[[Tensor], Tensor]


Intervention = ReplacePattern | AddToResidual | AddToZ | Splice
Additive = AddToResidual | AddToZ
"""What a KV-cached generation step can hold (ModelAdapter.forward_cached)."""
