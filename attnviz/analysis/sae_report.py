"""How good an SAE is on held-out text: L0, FVU, dead and dense features with the density
histogram, CE recovered when its reconstruction is spliced in (against zero- and mean-ablation
of the site, Kissane et al. 2024), and each feature's decoder norm per head.

Position 0 (BOS) is left out everywhere, as in training: its activations are outliers, and the
splices leave it as the model computed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.metrics import (
    CERecovered,
    FiringCounts,
    VarianceExplained,
    ce_recovered,
    density_histogram,
)
from attnviz.analysis.sae_check import site_activations
from attnviz.data.contexts import token_batch
from attnviz.dictionaries.sae import SAE
from attnviz.models.adapter import SPLICE_SITES
from attnviz.models.interventions import Splice

DENSE = 0.1
"""A feature active on more than this fraction of tokens counts as dense."""
DEAD = 1e-5
"""A feature active on fewer than this fraction of tokens (1 in 100,000) counts as dead."""


def head_attribution(sae: SAE, squared: bool = False) -> Tensor:
    """Each feature's decoder norm per head, normalised to sum to 1 over heads:
    share[f, h] = ||W_dec[f, block h]|| / sum_h' ||W_dec[f, block h']||  (squared norms with
    `squared`, which then sum to the feature's squared norm before normalising).
    [d_sae, n_heads], or [d_sae, n_layers * n_heads] for a multi-layer SAE (layer-major)."""
    norms = sae.dec_heads.detach().float().norm(dim=-1).flatten(1)
    if squared:
        norms = norms.pow(2)
    return norms / norms.sum(-1, keepdim=True).clamp_min(1e-12)


def _keep_bos(fn):
    """A Splice module that changes positions 1.. and leaves position 0 as it was."""

    def splice(x: Tensor) -> Tensor:
        return torch.cat([x[:, :1], fn(x[:, 1:])], dim=1)

    return splice


@dataclass
class SAEReport:
    """What `evaluate_sae` measured."""

    l0: float
    fvu: float
    """Relative to the mean of the held-out activations (not to zero)."""
    density: Tensor
    """[d_sae] fraction of held-out tokens each feature is active on."""
    n_tokens: int
    ce: dict[str, CERecovered] = field(default_factory=dict)
    """"zero" and "mean": CE recovered against that ablation of the site."""

    @property
    def dead_fraction(self) -> float:
        return float((self.density < DEAD).float().mean())

    @property
    def dense_fraction(self) -> float:
        return float((self.density > DENSE).float().mean())

    def density_histogram(self) -> dict[str, Any]:
        return density_histogram(self.density)

    def summary(self) -> dict[str, Any]:
        """One flat row of numbers (ratios beside their losses, intervals and warnings)."""
        row: dict[str, Any] = {
            "l0": self.l0, "fvu": self.fvu, "dead": self.dead_fraction,
            "dense": self.dense_fraction, "tokens": self.n_tokens,
        }  # fmt: skip
        for name, ce in self.ce.items():
            row |= {
                f"ce_recovered_{name}": ce.ratio,
                f"ce_recovered_{name}_lo": ce.ratio_interval[0],
                f"ce_recovered_{name}_hi": ce.ratio_interval[1],
                f"ablation_damage_{name}": ce.ablation_damage,
                f"ce_{name}_warning": ce.warning,
            }
        if self.ce:
            first = next(iter(self.ce.values()))
            row |= {
                "loss_clean": first.clean,
                "loss_patched": first.patched,
                "loss_increase": first.loss_increase,
                "loss_increase_lo": first.loss_increase_interval[0],
                "loss_increase_hi": first.loss_increase_interval[1],
            }
        return row

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([self.summary()])


@torch.no_grad()
def evaluate_sae(
    model: Any,
    sae: SAE,
    token_batches: Iterable[Tensor],
    ce: bool = True,
    seed: int = 0,
) -> SAEReport:
    """Evaluate `sae` on held-out contexts (token batches [b, n], BOS first).

    With `ce`, every batch also runs the model three more times with the site spliced: the SAE's
    reconstruction, zeros, and the mean activation over all held-out tokens (computed in a first
    pass). Losses are per context (mean nats per predicted token) for the bootstrap."""
    batches = [token_batch(b) for b in token_batches]
    counts = FiringCounts()
    explained = VarianceExplained(vector_ndim=1)
    total = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    n = 0
    for tokens in batches:
        x = site_activations(model, sae, tokens)[:, 1:].to(sae.W_enc)
        f = sae.encode(x)
        counts.add(f)
        explained.add(x, sae.decode(f))
        total += x.double().sum((0, 1)).cpu()
        n += x.shape[0] * x.shape[1]
    report = SAEReport(
        l0=counts.l0(), fvu=explained.fvu(), density=counts.density().float(), n_tokens=n
    )
    if not ce:
        return report
    if len(sae.cfg.layers) != 1:
        raise NotImplementedError("CE recovered for an SAE over several layers is not built yet")
    layer, site = sae.cfg.layer, sae.cfg.site
    if site not in SPLICE_SITES:
        raise NotImplementedError(
            f"CE recovered splices the SAE into the model; {site} cannot be spliced yet "
            f"(sites: {', '.join(SPLICE_SITES)}). Use ce=False for the other figures."
        )
    mean = (total / n).float()
    # Splice hands hook_z over as [b, pos, n_heads * d_head], the layout the SAE reads.
    splices = {
        "patched": _keep_bos(lambda x: sae.reconstruct(x.to(sae.W_enc)).to(x.dtype)),
        "zero": _keep_bos(torch.zeros_like),
        "mean": _keep_bos(lambda x: mean.to(x).expand_as(x)),
    }
    losses: dict[str, list[Tensor]] = {k: [] for k in ("clean", *splices)}
    for tokens in batches:
        losses["clean"].append(model.loss(tokens).mean(-1).cpu())
        for name, fn in splices.items():
            losses[name].append(model.loss(tokens, [Splice(layer, site, fn)]).mean(-1).cpu())
    per_context = {k: torch.cat(v) for k, v in losses.items()}
    for ablation in ("zero", "mean"):
        report.ce[ablation] = ce_recovered(
            per_context["clean"], per_context["patched"], per_context[ablation], seed=seed
        )
    return report
