"""Sparse autoencoders in the training loop.

Position 0 of every context (the BOS token) is left out: its activations are outliers many
times the norm of the rest, which would dominate both the error and its normaliser.

Reconstruction error is the squared error per token divided by a constant measured once at the
start (the mean squared distance of the inputs from their mean), so 1.0 means "no better than
the mean" whatever the site's scale, and the loss stays a plain mean over tokens (which keeps
several processes on the same trajectory as one).

- "standard": + sparsity * sum_i f_i |W_dec,i| (L1 on activations times decoder norms);
- "topk": the k largest pre-activations per token (Gao et al. 2024), no penalty;
- "batchtopk": the k x tokens largest pre-activations over the whole batch (Bussmann et al.
  2024); saved as "jumprelu" with, per feature, the running mean of the smallest activation
  that was kept, so inference needs no batch.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from attnviz.data.store import ActivationStore
from attnviz.dictionaries.sae import SAE, SAEConfig
from attnviz.dictionaries.sparse_coder import SparseCoder
from attnviz.errors import StoreMismatchError
from attnviz.training.config import SAETrainConfig
from attnviz.training.loop import CoderTerms, Objective, StepOutput, Trainer

THRESHOLD_MOMENTUM = 0.99
"""BatchTopK's inference threshold: exponential moving average of each step's smallest kept
activation, per feature."""


class SAEObjective(Objective):
    def __init__(self, sae: SAE, cfg: SAETrainConfig):
        self.dictionary = self.sae = sae
        self.cfg = cfg
        self.fields = (sae.cfg.site,)
        self.scale: Tensor = torch.ones(())
        self.batch_topk = cfg.architecture == "batchtopk"

    def coders(self) -> dict[str, SparseCoder]:
        return {"sae": self.sae.coder}

    @torch.no_grad()
    def initialise(self, store: ActivationStore, chunks: list[int]) -> None:
        """b_dec at the input mean; the error scale at the inputs' mean squared distance from it;
        the feature directions as `cfg.init` asks."""
        site, d_in = self.sae.cfg.site, self.sae.cfg.d_in
        subspace = self.cfg.init == "subspace"  # the only one that needs the covariance
        total = torch.zeros(d_in, dtype=torch.float64)
        sq = torch.zeros((), dtype=torch.float64)
        second = torch.zeros(d_in, d_in, dtype=torch.float64) if subspace else None
        count = 0
        for batch in store.batches(8, (site,), shuffle=False, by="context", chunks=chunks[:4]):
            x = self._tokens(batch).double()
            total += x.sum(0)
            sq += x.pow(2).sum()
            if second is not None:
                second += x.T @ x
            count += x.shape[0]
        mean = total / count
        device = self.sae.W_enc.device
        self.sae.coder.b_out.copy_(mean.float().to(device))
        variance = (sq / count - mean.pow(2).sum()).float()
        self.scale = variance.clamp_min(1e-8).to(device)
        if self.cfg.init != "random":
            directions = self.sae.W_dec.detach().cpu()
            if second is not None:
                covariance = second / count - torch.outer(mean, mean)
                directions = _into_active_subspace(
                    directions.shape[0], covariance, self.cfg.subspace_variance, self.cfg.seed
                )
            self.sae.coder.W_dec.copy_(directions.to(device))
            self.sae.coder.W_enc.copy_(directions.T.to(device))

    def _activate(self, pre: Tensor) -> Tensor:
        if not (self.batch_topk and self.sae.training):
            return self.sae.activation(pre)
        flat = pre.reshape(-1)
        keep = min(flat.numel(), int(self.cfg.k) * pre.shape[0])
        top = flat.topk(keep)
        f = torch.zeros_like(flat).scatter(0, top.indices, top.values.relu()).view_as(pre)
        self._track_threshold(f.detach())
        return f

    @torch.no_grad()
    def _track_threshold(self, f: Tensor) -> None:
        fired = f > 0
        if not fired.any():
            return
        smallest = torch.where(fired, f, torch.full_like(f, float("inf"))).amin(0)
        seen = torch.isfinite(smallest)
        t = self.sae.threshold
        first = seen & (t == 0)  # 0 = never kept yet: start the average at the first value
        t[first] = smallest[first]
        later = seen & ~first
        t[later] = THRESHOLD_MOMENTUM * t[later] + (1 - THRESHOLD_MOMENTUM) * smallest[later]

    def _tokens(self, batch: dict[str, Tensor]) -> Tensor:
        """[tokens, d_in] of a batch of contexts, position 0 left out."""
        x = batch[self.sae.cfg.site][:, 1:].float()
        return self.sae.flatten_input(x).flatten(0, -2)

    def step_output(self, batch: dict[str, Tensor], sparsity_scale: float) -> StepOutput:
        sae = self.sae
        x = self._tokens(batch)
        pre = sae.coder.pre_activation(x)
        f = self._activate(pre)
        x_hat = sae.decode(f)
        error = (x - x_hat).pow(2).sum(-1).mean() / self.scale
        loss = error
        stats = {"fvu": error.item()}
        if self.cfg.architecture == "standard":
            l1 = (f * sae.W_dec.norm(dim=-1)).sum(-1).mean()
            loss = loss + self.cfg.sparsity * sparsity_scale * l1
        return StepOutput(loss, stats, {"sae": CoderTerms(f.detach(), x, x - x_hat)})

    def progress(self, stats: dict[str, float]) -> dict[str, str]:
        return {"fvu": f"{stats['fvu']:.3f}"}


def _into_active_subspace(
    n_features: int, covariance: Tensor, variance: float, seed: int
) -> Tensor:
    """Unit rows drawn at random inside the span of the inputs' leading principal directions
    that explain `variance` of their variance (Wang et al. 2025, "Attention Layers Add Into
    Low-Dimensional Residual Subspaces": attention outputs fill ~60% of their width, and random
    directions outside it start dead)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    order = eigenvalues.flip(0).clamp_min(0)
    share = order.cumsum(0) / order.sum().clamp_min(1e-30)
    # (rounding can leave the last share a hair below 1, and a zero covariance has no share at all)
    rank = min(int((share < variance).sum()) + 1, covariance.shape[0])
    basis = eigenvectors.flip(1)[:, :rank].float()  # [d_in, rank]
    generator = torch.Generator().manual_seed(seed + 7)
    inside = torch.randn(n_features, rank, generator=generator) @ basis.T
    return inside / inside.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class SAETrainer(Trainer):
    """The loop with an SAE objective: `SAETrainer(store, cfg, out_dir).run()`."""

    def __init__(
        self,
        store: ActivationStore,
        cfg: SAETrainConfig,
        out_dir: str | Path,
        device: torch.device | str | None = None,
    ):
        if cfg.site not in store.fields:
            raise StoreMismatchError(
                f"the store at {store.path} lacks {cfg.site!r} (it has {list(store.fields)}): "
                f"collect again with --fields {cfg.site}"
            )
        spec = SimpleNamespace(**store.spec)
        architecture = "jumprelu" if cfg.architecture == "batchtopk" else cfg.architecture
        sae_cfg = SAEConfig.for_model(
            spec, cfg.site, store.layers, cfg.d_sae, architecture=architecture,
            k=cfg.k if architecture == "topk" else None,
            training=cfg.to_dict()
            | {"store": ", ".join(map(str, store.paths)), "corpus": store.corpus},
        )  # fmt: skip
        torch.manual_seed(cfg.seed)
        sae = SAE(sae_cfg, seed=cfg.seed)
        super().__init__(
            SAEObjective(sae, cfg), store, cfg, out_dir, device,
            desc=f"{cfg.architecture} SAE {cfg.site} L{'+'.join(map(str, store.layers))}",
        )  # fmt: skip
        self.sae = sae
