"""The held-out tokens of an ITOExplorer: each dictionary's inputs there, its codes by method and
target L0 (through :func:`attnviz.analysis.ito.compare.codes`), one FVU point of the Pareto with
a bootstrap interval over contexts, and the ITO-vs-encoder agreement. Everything is computed
once and kept: the kernel's thread (slider, clicks) and a request's worker (sweeps) share it."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attnviz.analysis.ito.compare import agreement, codes, site_inputs
from attnviz.analysis.metrics import fvu
from attnviz.dictionaries.sae import SAE
from attnviz.models.adapter import ModelAdapter
from attnviz.models.locks import model_lock

__all__ = ["CHUNK_TOKENS", "HeldInputs", "HeldOut", "fvu_interval"]

HELD_OUT_CONTEXTS = 8
"""Held-out contexts (pretrained.held_out_contexts: documents no shipped SAE saw) by default."""
CHUNK_TOKENS = 256
"""Tokens coded at once (bounds the pursuit's memory on long inputs)."""
CACHED_CODES = 6
"""ITO codes kept ((dictionary, method, L0) each) for scatters and agreement."""
N_RESAMPLES = 1000
"""Bootstrap draws over contexts for the FVU intervals (as metrics.ce_recovered's)."""
CONFIDENCE = 0.95
"""Coverage of the FVU intervals."""


@dataclass
class HeldInputs:
    """A dictionary's inputs over the held-out tokens (BOS left out, as compare.site_inputs reads
    them), its encoder's codes, and per-context sums from which a resample's FVU follows."""

    x: Tensor
    """[tokens, d_in] on the SAE's device, float32."""
    encoder: Tensor
    """[tokens, d_sae] on the CPU."""
    context: Tensor
    """[tokens] the context each token is from."""
    s1: Tensor
    """[contexts, d_in] sum of x per context (float64)."""
    s2: Tensor
    """[contexts] sum of ||x||^2 per context."""
    n: Tensor
    """[contexts] tokens per context."""

    @classmethod
    def of(cls, x: Tensor, encoder: Tensor, n_contexts: int) -> HeldInputs:
        context = torch.arange(x.shape[0]) // max(1, x.shape[0] // max(1, n_contexts))
        xd = x.detach().double().cpu()
        s1 = torch.zeros(n_contexts, x.shape[1], dtype=torch.float64).index_add_(0, context, xd)
        s2 = torch.zeros(n_contexts, dtype=torch.float64).index_add_(0, context, xd.pow(2).sum(-1))
        n = torch.bincount(context, minlength=n_contexts).double()
        return cls(x, encoder, context, s1, s2, n)


def fvu_interval(held: HeldInputs, sq_err: Tensor, seed: int = 0, n_resamples: int = N_RESAMPLES,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:  # fmt: skip
    """Percentile bootstrap interval over contexts of the pooled FVU (metrics.fvu: squared error
    over the variance around the resample's own mean), given each token's squared error
    [tokens]: n_contexts contexts drawn with replacement, n_resamples times (a seeded
    torch.Generator). (NaN, NaN) from a single context, which gives no interval."""
    k = held.n.shape[0]
    if k < 2:
        return math.nan, math.nan
    err = torch.zeros(k, dtype=torch.float64).index_add_(0, held.context, sq_err.double().cpu())
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, k, (n_resamples, k), generator=g)
    w = torch.zeros(n_resamples, k, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(n_resamples, k, dtype=torch.float64)
    )  # how often each context is drawn
    n, s1 = w @ held.n, w @ held.s1
    var = w @ held.s2 - s1.pow(2).sum(-1) / n
    f = torch.where(var > 0, (w @ err) / var, math.nan)
    tail = (1 - confidence) / 2
    lo, hi = torch.nanquantile(f, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return lo, hi


def chunked_codes(sae: SAE, x: Tensor, method: str, l0: int | None, G: Tensor | None) -> Tensor:
    """compare.codes over x in chunks of CHUNK_TOKENS, on the CPU (each token's code is its own,
    so chunks change nothing but the memory)."""
    return torch.cat([codes(sae, x[i : i + CHUNK_TOKENS], method, l0, G=G).cpu()
                      for i in range(0, x.shape[0], CHUNK_TOKENS)])  # fmt: skip


class HeldOut:
    """Held-out contexts [n, ctx] and what each dictionary does on them. A dictionary is named
    by the widget; its random baseline ("<name>:random") reads the inputs of "<name>"."""

    def __init__(self, model: ModelAdapter, contexts: Tensor | None, seed: int = 0) -> None:
        self._model, self._contexts, self._seed = model, contexts, seed
        # _lock guards the dicts; _forward lets one thread run a dictionary's forward pass.
        self._lock, self._forward = threading.RLock(), threading.Lock()
        self._inputs: dict[str, HeldInputs] = {}
        self._codes: OrderedDict[tuple[str, str, int], Tensor] = OrderedDict()
        self._fvu: dict[tuple[str, str, int | None], dict[str, Any]] = {}
        self._agreement: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._labels: list[str] | None = None

    def contexts(self) -> Tensor:
        """The held-out contexts (default: HELD_OUT_CONTEXTS after the shipped SAEs' text)."""
        with self._lock:
            if self._contexts is None:
                from attnviz.dictionaries.pretrained import SAE_TRAINED_CONTEXTS, held_out_contexts

                self._contexts = held_out_contexts(self._model, HELD_OUT_CONTEXTS,
                                                   SAE_TRAINED_CONTEXTS)  # fmt: skip
            return self._contexts

    def inputs(self, name: str, sae: SAE) -> HeldInputs:
        """A dictionary's held-out inputs, encoder codes and per-context sums (one forward pass)."""
        name = name.removesuffix(":random")
        with self._forward:
            if name not in self._inputs:
                with model_lock(self._model):
                    x = site_inputs(self._model, sae, self.contexts()).detach()
                x = x.to(sae.W_dec).float()
                enc = chunked_codes(sae, x, "encoder", None, None)
                self._inputs[name] = HeldInputs.of(x, enc, int(self.contexts().shape[0]))
            return self._inputs[name]

    def codes(self, name: str, sae: SAE, method: str, l0: int, G: Tensor | None) -> Tensor:
        """A dictionary's codes [tokens, d_sae] by `method` at target `l0` (the last few kept)."""
        key = (name, method, l0)
        with self._lock:
            if key in self._codes:
                self._codes.move_to_end(key)
                return self._codes[key]
        f = chunked_codes(sae, self.inputs(name, sae).x, method, l0, G)
        with self._lock:
            self._codes[key] = f
            while len(self._codes) > CACHED_CODES:
                self._codes.popitem(last=False)
        return f

    def fvu_point(self, name: str, sae: SAE, method: str, l0: int | None,
                  G: Tensor | None = None) -> dict[str, Any]:  # fmt: skip
        """One point of the Pareto: {dictionary, method, target_l0, l0 (true mean), fvu, fvu_lo,
        fvu_hi} (metrics.fvu and its bootstrap interval over contexts); cached."""
        key = (name, method, l0)
        with self._lock:
            if key in self._fvu:
                return self._fvu[key]
        held = self.inputs(name, sae)
        if method == "encoder":
            f = held.encoder
        else:
            assert l0 is not None
            f = self.codes(name, sae, method, l0, G)
        with torch.no_grad():
            recon = sae.decode(f.to(sae.W_dec))
        lo, hi = fvu_interval(held, (held.x - recon).pow(2).sum(-1), seed=self._seed)
        row = {"dictionary": name, "method": method, "target_l0": l0,
               "l0": float((f != 0).sum(-1).float().mean()),
               "fvu": float(fvu(held.x, recon, vector_ndim=1)), "fvu_lo": lo, "fvu_hi": hi}  # fmt: skip
        with self._lock:
            self._fvu[key] = row
        return row

    def has_fvu(self, name: str, method: str, l0: int | None) -> bool:
        with self._lock:
            return (name, method, l0) in self._fvu

    def agreement(self, name: str, sae: SAE, method: str, l0: int) -> dict[str, Any]:
        """compare.agreement of a dictionary over the held-out tokens; cached."""
        key = (name, method, l0)
        with self._lock:
            found = self._agreement.get(key)
        if found is None:
            found = agreement(sae, self.inputs(name, sae).x, l0, method)
            with self._lock:
                self._agreement[key] = found
        return found

    def token_labels(self) -> list[str]:
        """'context c, position p: token' for every held-out token (BOS left out)."""
        if self._labels is None:
            ids = self.contexts()[:, 1:]
            strs = self._model.to_str_tokens(ids.reshape(-1))
            n = ids.shape[1]
            self._labels = [f"context {i // n}, position {i % n + 1}: {t!r}"
                            for i, t in enumerate(strs)]  # fmt: skip
        return self._labels
