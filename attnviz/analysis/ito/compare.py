"""An SAE's encoder against inference-time optimisation on its decoder: the FVU / CE-recovered
Pareto over target L0, a random dictionary of the same shape as the floor, and where ITO and the
encoder agree (GDM progress update #1, 2024: they agree on strong activations, barely on weak).

Codes, by method name:
- "encoder": the SAE as trained (one point, at its own L0);
- "topk": the encoder's activations with all but the k largest per token set to zero;
- "mp", "omp", "gp": the pursuits of ito.pursuit on the decoder (positive by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attnviz.analysis.ito.pursuit import METHODS, gram, pursue
from attnviz.analysis.metrics import ce_recovered, fvu
from attnviz.analysis.sae_check import site_activations
from attnviz.data.contexts import token_batch
from attnviz.dictionaries.sae import SAE
from attnviz.models.adapter import SPLICE_SITES
from attnviz.models.interventions import Splice

__all__ = [
    "ALL_METHODS",
    "agreement",
    "ce_pareto",
    "codes",
    "fvu_pareto",
    "random_like",
    "site_inputs",
]

ALL_METHODS = ("encoder", "topk", *METHODS)


def random_like(sae: SAE, seed: int = 0) -> SAE:
    """An SAE of the same shape whose decoder rows are random unit directions (the baseline a
    dictionary has to beat); its encoder is the decoder's transpose, its b_dec the SAE's."""
    out = SAE(sae.cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = torch.randn(sae.cfg.d_sae, sae.cfg.d_in, generator=g)
        out.coder.W_dec.copy_(torch.nn.functional.normalize(rows, dim=-1))
        out.coder.W_enc.copy_(out.coder.W_dec.T)
        out.coder.b_out.copy_(sae.b_dec.detach().float().cpu())
        out.coder.b_enc.zero_()
    return out.to(sae.W_dec.device)


@torch.no_grad()
def codes(
    sae: SAE, x: Tensor, method: str, l0: int | None = None, positive: bool = True,
    G: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Feature activations [tokens, d_sae] of x [tokens, d_in] by `method` at target `l0`."""
    x = sae.flatten_input(x).reshape(-1, sae.cfg.d_in).to(sae.W_dec)
    if method == "encoder":
        return sae.encode(x).float()
    if l0 is None:
        raise ValueError(f"method {method!r} needs a target l0")
    if method == "topk":
        f = sae.encode(x).float()
        top = f.topk(min(l0, f.shape[-1]), dim=-1)
        return torch.zeros_like(f).scatter(-1, top.indices, top.values)
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose one of {', '.join(ALL_METHODS)}")
    return pursue(
        x, sae.W_dec.detach(), l0, method=method, positive=positive, bias=sae.b_dec.detach(), G=G
    ).code


def fvu_pareto(
    saes: dict[str, SAE], x: dict[str, Tensor] | Tensor, l0s: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    methods: Sequence[str] = ("topk", "mp", "gp"), random_baseline: bool = True,
    positive: bool = True, seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """FVU (relative to the mean) against L0 for every SAE and method, on the same inputs (x, or
    x[name] per SAE when the SAEs read different sites). One "encoder" row per SAE at its own
    L0; with random_baseline, the same pursuits on random_like(sae) (dictionary "<name>:random").
    Columns: dictionary, method, target_l0, l0 (true mean), fvu."""
    rows = []
    for name, sae in saes.items():
        xs = x[name] if isinstance(x, dict) else x
        xs = sae.flatten_input(xs).reshape(-1, sae.cfg.d_in).to(sae.W_dec).float()
        dictionaries = [(name, sae)] + (
            [(f"{name}:random", random_like(sae, seed))] if random_baseline else []
        )
        for dname, d in dictionaries:
            G = gram(d.W_dec.detach())
            if dname == name:
                f = codes(d, xs, "encoder")
                rows.append(_row(dname, "encoder", None, f, d, xs))
            for method in methods:
                if method == "topk" and dname != name:
                    continue  # a random dictionary has no trained encoder to truncate
                for l0 in l0s:
                    f = codes(d, xs, method, l0, positive=positive, G=G)
                    rows.append(_row(dname, method, l0, f, d, xs))
    return pd.DataFrame(rows)


def _row(name: str, method: str, target: int | None, f: Tensor, sae: SAE, x: Tensor) -> dict:
    recon = sae.decode(f.to(sae.W_dec))
    return {
        "dictionary": name, "method": method, "target_l0": target,
        "l0": float((f != 0).sum(-1).float().mean()), "fvu": float(fvu(x, recon, vector_ndim=1)),
    }  # fmt: skip


def _keep_bos(fn):
    def splice(x: Tensor) -> Tensor:
        return torch.cat([x[:, :1], fn(x[:, 1:])], dim=1)

    return splice


@torch.no_grad()
def ce_pareto(
    model, sae: SAE, token_batches: Iterable[Tensor], l0s: Sequence[int] = (4, 16, 64),
    methods: Sequence[str] = ("topk", "gp"), random_baseline: bool = False,
    positive: bool = True, seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """CE recovered (vs zero ablation of the site, with its interval) and the absolute loss
    increase when each method's reconstruction is spliced in at the SAE's site (BOS left as it
    was), per target L0, on the same contexts. Columns: dictionary, method, target_l0, l0,
    ce_recovered, ce_lo, ce_hi, loss_increase, loss_increase_lo, loss_increase_hi, warning."""
    c = sae.cfg
    if len(c.layers) != 1 or c.site not in SPLICE_SITES:
        raise NotImplementedError(
            f"CE recovered splices one layer's {', '.join(SPLICE_SITES)}; this SAE reads {c.site} "
            f"of layers {c.layers}: use fvu_pareto"
        )
    batches = [token_batch(b) for b in token_batches]
    variants: list[tuple[str, str, int | None, SAE]] = [(c.hook_names[0], "encoder", None, sae)]
    variants += [(c.hook_names[0], m, l0, sae) for m in methods for l0 in l0s]
    if random_baseline:
        rnd = random_like(sae, seed)
        variants += [
            (f"{c.hook_names[0]}:random", m, l0, rnd) for m in methods if m != "topk" for l0 in l0s
        ]
    grams = {id(d): gram(d.W_dec.detach()) for *_, d in variants}
    clean, zero = [], []
    patched: dict[int, list[Tensor]] = {i: [] for i in range(len(variants))}
    l0_sum: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    for tokens in batches:
        clean.append(model.loss(tokens).mean(-1).cpu())
        zero.append(
            model.loss(tokens, [Splice(c.layer, c.site, _keep_bos(torch.zeros_like))])
            .mean(-1)
            .cpu()
        )
        for i, (_, method, l0, d) in enumerate(variants):

            def reconstruct(x: Tensor, d=d, method=method, l0=l0, i=i) -> Tensor:
                flat = x.reshape(-1, c.d_in)
                f = codes(d, flat, method, l0, positive=positive, G=grams[id(d)])
                l0_sum[i].append(float((f != 0).sum(-1).float().mean()))
                return d.decode(f.to(d.W_dec)).reshape(x.shape).to(x.dtype)

            loss = model.loss(tokens, [Splice(c.layer, c.site, _keep_bos(reconstruct))])
            patched[i].append(loss.mean(-1).cpu())
    clean_t, zero_t = torch.cat(clean), torch.cat(zero)
    rows = []
    for i, (name, method, l0, _) in enumerate(variants):
        ce = ce_recovered(clean_t, torch.cat(patched[i]), zero_t, seed=seed)
        rows.append(
            {"dictionary": name, "method": method, "target_l0": l0,
             "l0": float(np.mean(l0_sum[i])), "ce_recovered": ce.ratio,
             "ce_lo": ce.ratio_interval[0], "ce_hi": ce.ratio_interval[1],
             "loss_increase": ce.loss_increase, "loss_increase_lo": ce.loss_increase_interval[0],
             "loss_increase_hi": ce.loss_increase_interval[1], "warning": ce.warning}
        )  # fmt: skip
    return pd.DataFrame(rows)


@torch.no_grad()
def agreement(
    sae: SAE, x: Tensor, l0: int | None = None, method: str = "gp", threshold: float | None = None,
    positive: bool = True, eps: float = 0.0,
) -> dict[str, float | str]:  # fmt: skip
    """How far ITO at `l0` (default: the encoder's own mean L0, rounded) agrees with the encoder:
    Pearson correlation of the activations over (token, feature) pairs where either is non-zero,
    overall and split at `threshold` of the encoder's activation (default: the median of its
    non-zero activations); mean Jaccard overlap of the chosen feature sets per token. Activations
    of magnitude <= eps count as zero (float noise of an exact encoder, in tests)."""
    x = sae.flatten_input(x).reshape(-1, sae.cfg.d_in).to(sae.W_dec)
    enc = codes(sae, x, "encoder")
    if l0 is None:
        l0 = max(1, round(float((enc > 0).sum(-1).float().mean())))
    ito = codes(sae, x, method, l0, positive=positive)
    enc, ito = enc * (enc.abs() > eps), ito * (ito.abs() > eps)
    a, b = enc != 0, ito != 0
    union = a | b
    jaccard = ((a & b).sum(-1).float() / union.sum(-1).clamp_min(1).float()).mean()
    e, i = enc[union], ito[union]
    if threshold is None:
        threshold = float(enc[a].median()) if a.any() else 0.0
    strong = e >= threshold

    def corr(u: Tensor, v: Tensor) -> float:
        if u.numel() < 3 or float(u.std()) == 0 or float(v.std()) == 0:
            return float("nan")
        return float(torch.corrcoef(torch.stack([u, v]))[0, 1])

    return {
        "l0": float(l0), "method": method, "threshold": threshold,
        "corr": corr(e, i), "corr_strong": corr(e[strong], i[strong]),
        "corr_weak": corr(e[~strong], i[~strong]), "jaccard": float(jaccard),
        "pairs": int(union.sum()), "strong_pairs": int(strong.sum()),
    }  # fmt: skip


def site_inputs(model, sae: SAE, tokens: Tensor) -> Tensor:
    """The SAE's inputs over contexts, BOS left out: [tokens, d_in]."""
    x = site_activations(model, sae, token_batch(tokens))[:, 1:]
    return x.reshape(-1, sae.cfg.d_in)
