"""QK dictionaries in the training loop (step 1 of Sharkey et al. 2024, QK transcoders).

A transcoder pair reads whole contexts (resid_normed, q, k), the true pattern is rebuilt from q
and k, and the loss is w1 KL(true || q^k^) + w2 KL(true || q^k) + w3 KL(true || qk^) per query
row plus an L0.5 sparsity penalty. The L2 baseline (`qk_sae`) reconstructs q and k themselves
(normalised MSE). Both start with b_pre at the input mean and b_out at the mean q / k.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from attnviz.analysis.metrics import mean_row_kl
from attnviz.data.store import ActivationStore
from attnviz.dictionaries.qk import QKConfig, QKDictionary
from attnviz.dictionaries.sparse_coder import SparseCoder
from attnviz.errors import StoreMismatchError
from attnviz.models.attention import attention_scores
from attnviz.models.rotary import Rotary
from attnviz.training.config import QKTrainConfig
from attnviz.training.loop import CoderTerms, Objective, StepOutput, Trainer


def log_pattern(q_rot: Tensor, k_rot: Tensor, attn_scale: float) -> Tensor:
    """log softmax of causally masked scores: [b, heads, dest, src], -inf where masked."""
    return attention_scores(q_rot, k_rot, attn_scale).log_softmax(dim=-1)


def pattern_kl(true_logp: Tensor, recon_logp: Tensor) -> Tensor:
    """Mean over query rows of KL(true || recon), row 0 left out (it can only attend to itself),
    from log patterns; differentiable (see analysis.metrics.mean_row_kl)."""
    return mean_row_kl(true_logp, recon_logp, log=True).mean()


def sparsity_penalty(f: Tensor, coder: SparseCoder, eps: float = 1e-6) -> Tensor:
    """sum_i sqrt(f_i * |W_dec,i| + eps) per token, averaged over tokens (an L0.5-style penalty:
    it punishes many small activations more than L1 does)."""
    norms = coder.W_dec.norm(dim=-1)
    return torch.sqrt(f * norms + eps).sum(-1).mean() - f.shape[-1] * eps**0.5


def _normalised_mse(target: Tensor, recon: Tensor) -> Tensor:
    centred = target - target.mean(dim=tuple(range(target.ndim - 1)), keepdim=True)
    return (target - recon).pow(2).sum() / centred.pow(2).sum().clamp_min(1e-8)


class QKObjective(Objective):
    def __init__(self, qk: QKDictionary, rotary: Rotary | None, cfg: QKTrainConfig):
        self.dictionary = self.qk = qk
        self.rotary, self.cfg = rotary, cfg
        self.fields = ("resid_normed", "q", "k") if qk.is_transcoder else ("q", "k")

    def coders(self) -> dict[str, SparseCoder]:
        return {"q": self.qk.query, "k": self.qk.key}

    @torch.no_grad()
    def initialise(self, store: ActivationStore, chunks: list[int]) -> None:
        """b_pre at the input mean and b_out at the mean true q / k (Sharkey et al. 2024)."""
        sums: dict[str, Tensor] = {}
        count = 0
        for batch in store.batches(64, self.fields, shuffle=False, chunks=chunks[:4]):
            for f in self.fields:
                x = batch[f].float().flatten(1) if f != "resid_normed" else batch[f].float()
                sums[f] = sums.get(f, 0) + x.sum(0)
            count += batch[self.fields[0]].shape[0]
        device = self.qk.device
        means = {f: (s / count).to(device) for f, s in sums.items()}
        reads = "resid_normed" if self.qk.is_transcoder else None
        self.qk.query.b_pre.copy_(means[reads or "q"])
        self.qk.key.b_pre.copy_(means[reads or "k"])
        self.qk.query.b_out.copy_(means["q"])
        self.qk.key.b_out.copy_(means["k"])

    def _rot(self, x: Tensor) -> Tensor:
        return x if self.rotary is None else self.rotary.apply(x)

    def step_output(self, batch: dict[str, Tensor], sparsity_scale: float) -> StepOutput:
        qk, cfg = self.qk, self.cfg
        x, q, k = batch.get("resid_normed"), batch["q"], batch["k"]
        q_hat, k_hat, f_q, f_k = qk(resid_normed=x, q=q, k=k)
        stats: dict[str, float] = {}
        if qk.is_transcoder:
            scale = qk.cfg.attn_scale
            with torch.no_grad():
                q_rot, k_rot = self._rot(q), self._rot(k)
                true_logp = log_pattern(q_rot, k_rot, scale)
            qh_rot, kh_rot = self._rot(q_hat), self._rot(k_hat)
            kl_both = pattern_kl(true_logp, log_pattern(qh_rot, kh_rot, scale))
            kl_q = pattern_kl(true_logp, log_pattern(qh_rot, k_rot, scale))
            kl_k = pattern_kl(true_logp, log_pattern(q_rot, kh_rot, scale))
            w = cfg.kl_weights
            fit = w[0] * kl_both + w[1] * kl_q + w[2] * kl_k
            stats["kl"] = kl_both.item()
        else:
            fit = _normalised_mse(q, q_hat) + _normalised_mse(k, k_hat)
            stats["mse"] = fit.item()
        # A TopK side has its L0 by construction: no penalty on it.
        sparse = sum(
            (sparsity_penalty(f, coder) for f, coder in ((f_q, qk.query), (f_k, qk.key))
             if coder.k is None),
            torch.zeros((), device=f_q.device),
        )  # fmt: skip
        loss = fit + cfg.sparsity * sparsity_scale * sparse
        flat = lambda t: t.flatten(0, -2)  # noqa: E731  [b, pos, d] -> [tokens, d]
        terms = {
            "q": CoderTerms(flat(f_q.detach()), flat(qk.coder_input(x, q)),
                            flat(q.flatten(-2) - q_hat.flatten(-2))),
            "k": CoderTerms(flat(f_k.detach()), flat(qk.coder_input(x, k)),
                            flat(k.flatten(-2) - k_hat.flatten(-2))),
        }  # fmt: skip
        return StepOutput(loss, stats, terms)

    def progress(self, stats: dict[str, float]) -> dict[str, str]:
        return {"kl": f"{stats['kl']:.3f}"} if "kl" in stats else {}


class QKTrainer(Trainer):
    """The loop with a QK objective: `QKTrainer(store, rotary, cfg, out_dir).run()`."""

    def __init__(
        self,
        store: ActivationStore,
        rotary: Rotary | None,
        cfg: QKTrainConfig,
        out_dir: str | Path,
        device: torch.device | str | None = None,
    ):
        spec = SimpleNamespace(**store.spec)
        needed = ("resid_normed", "q", "k") if cfg.architecture == "qk_transcoder" else ("q", "k")
        missing = [f for f in needed if f not in store.fields]
        if missing:
            raise StoreMismatchError(
                f"the store at {store.path} lacks {missing} (it has {list(store.fields)}): "
                f"collect again with --fields {','.join(needed)}"
            )
        if spec.positional == "rotary" and rotary is None:
            raise ValueError(f"{spec.name} uses rotary positions: pass the layer's rotary tables")
        qk_cfg = QKConfig.for_model(
            spec, store.layer, cfg.d_hidden_q, cfg.d_hidden_k, architecture=cfg.architecture,
            k_q=cfg.k_q or None, k_k=cfg.k_k or None,
            training=cfg.to_dict() | {"store": str(store.path), "corpus": store.corpus},
        )  # fmt: skip
        torch.manual_seed(cfg.seed)
        qk = QKDictionary(qk_cfg, seed=cfg.seed)
        super().__init__(
            QKObjective(qk, rotary, cfg), store, cfg, out_dir, device,
            desc=f"{cfg.architecture} L{store.layer}",
        )  # fmt: skip
        self.qk = qk
        self.qk_cfg = qk_cfg
        if rotary is not None:  # the tables follow the dictionary onto its device
            self.objective.rotary = rotary.to(self.device)  # type: ignore[attr-defined]


def train_qk(
    store: ActivationStore,
    rotary: Rotary | None,
    cfg: QKTrainConfig,
    out_dir: str | Path,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> QKDictionary:
    return QKTrainer(store, rotary, cfg, out_dir, device).run(progress=progress)  # type: ignore[return-value]
