"""Step 1 of seed 000: train a query and a key encoder-decoder on the attention pattern.

Reads whole contexts from an activation store (resid_normed, q, k), rebuilds the true pattern
from q and k, and minimises w1 KL(true || q^k^) + w2 KL(true || q^k) + w3 KL(true || qk^) plus an
L0.5 sparsity penalty. Dead features are resampled and/or revived by rescaled ghost grads.
Progress shows live loss / KL / L0 / dead fraction; checkpoints make an interrupted run resume
where it stopped, with the same result as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from attnviz.data.store import ActivationStore
from attnviz.dictionaries.io import save_qk
from attnviz.dictionaries.qk import QKConfig, QKDictionary
from attnviz.errors import StoreMismatchError
from attnviz.models.rotary import Rotary
from attnviz.training.config import QKTrainConfig
from attnviz.training.dead_features import FiringTracker, resample
from attnviz.training.qk_losses import ghost_loss, log_pattern, pattern_kl, sparsity_penalty

CHECKPOINT = "checkpoint.pt"
DENSITY_BINS = [-8, -7, -6, -5, -4, -3, -2, -1, 0]


def density_histogram(density: Tensor) -> dict[str, Any]:
    """Feature counts per decade of firing density since training began, dead ones apart."""
    live = density[density > 0].float().log10().clamp_min(DENSITY_BINS[0]).cpu()
    counts = torch.histogram(live, bins=torch.tensor(DENSITY_BINS, dtype=torch.float32)).hist
    return {
        "log10_edges": DENSITY_BINS,
        "counts": [int(c) for c in counts],
        "never_fired": int((density == 0).sum()),
    }


HISTORY = "history.jsonl"


@dataclass
class TrainState:
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _normalised_mse(target: Tensor, recon: Tensor) -> Tensor:
    centred = target - target.mean(dim=tuple(range(target.ndim - 1)), keepdim=True)
    return (target - recon).pow(2).sum() / centred.pow(2).sum().clamp_min(1e-8)


class QKTrainer:
    """Trains one QK dictionary from a store; `run()` returns it and writes it to `out_dir`."""

    def __init__(
        self,
        store: ActivationStore,
        rotary: Rotary | None,
        cfg: QKTrainConfig,
        out_dir: str | Path,
        device: torch.device | str | None = None,
    ):
        self.store, self.rotary, self.cfg = store, rotary, cfg
        self.out_dir = Path(out_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        if len(store.chunks) < 2:
            raise ValueError(
                f"the store has {len(store.chunks)} chunk(s); training holds the last one out for "
                "evaluation, so collect more tokens"
            )
        self.fields = (
            ("resid_normed", "q", "k") if cfg.architecture == "qk_transcoder" else ("q", "k")
        )
        self.train_chunks = list(range(len(store.chunks) - 1))
        self.eval_chunk = len(store.chunks) - 1
        self.qk_cfg = QKConfig.for_model(
            spec, store.layer, cfg.d_hidden_q, cfg.d_hidden_k, architecture=cfg.architecture,
            training=cfg.to_dict() | {"store": str(store.path), "corpus": store.corpus},
        )  # fmt: skip
        self.attn_scale = spec.attn_scale
        torch.manual_seed(cfg.seed)
        self.qk = QKDictionary(self.qk_cfg, seed=cfg.seed).to(self.device)
        self._init_biases()
        self.optimizer = torch.optim.Adam(
            self.qk.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2)
        )
        self.trackers = {
            "q": FiringTracker(cfg.d_hidden_q, self.device),
            "k": FiringTracker(cfg.d_hidden_k, self.device),
        }
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.state = TrainState()
        tokens_per_step = cfg.batch_contexts * store.n_ctx
        self.total_steps = math.ceil(cfg.tokens / tokens_per_step)
        n_train_contexts = sum(store.chunks[i].n_contexts for i in self.train_chunks)
        self.steps_per_epoch = n_train_contexts // cfg.batch_contexts
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{n_train_contexts} training contexts cannot fill one batch of {cfg.batch_contexts}"
            )

    # ---- set-up ------------------------------------------------------------------------

    @torch.no_grad()
    def _init_biases(self) -> None:
        """b_pre at the input mean and b_out at the mean true q / k (seed 000)."""
        sums: dict[str, Tensor] = {}
        count = 0
        for batch in self.store.batches(
            64, self.fields, shuffle=False, chunks=self.train_chunks[:4]
        ):
            for f in self.fields:
                x = batch[f].float().flatten(1) if f != "resid_normed" else batch[f].float()
                sums[f] = sums.get(f, 0) + x.sum(0)
            count += batch[self.fields[0]].shape[0]
        means = {f: (s / count).to(self.device) for f, s in sums.items()}
        q_in = means["resid_normed"] if self.qk.is_transcoder else means["q"]
        k_in = means["resid_normed"] if self.qk.is_transcoder else means["k"]
        self.qk.query.b_pre.copy_(q_in)
        self.qk.key.b_pre.copy_(k_in)
        self.qk.query.b_out.copy_(means["q"])
        self.qk.key.b_out.copy_(means["k"])

    # ---- one step ----------------------------------------------------------------------

    def _rot(self, x: Tensor) -> Tensor:
        return x if self.rotary is None else self.rotary.apply(x)

    def losses(
        self, batch: dict[str, Tensor], sparsity_coef: float
    ) -> tuple[Tensor, dict[str, Any]]:
        cfg = self.cfg
        x = batch.get("resid_normed")
        q, k = batch["q"], batch["k"]
        q_hat, k_hat, f_q, f_k = self.qk(resid_normed=x, q=q, k=k)
        stats: dict[str, Any] = {"f_q": f_q.detach(), "f_k": f_k.detach()}
        if self.qk.is_transcoder:
            with torch.no_grad():
                q_rot, k_rot = self._rot(q), self._rot(k)
                true_logp = log_pattern(q_rot, k_rot, self.attn_scale)
            qh_rot, kh_rot = self._rot(q_hat), self._rot(k_hat)
            kl_both = pattern_kl(true_logp, log_pattern(qh_rot, kh_rot, self.attn_scale))
            kl_q = pattern_kl(true_logp, log_pattern(qh_rot, k_rot, self.attn_scale))
            kl_k = pattern_kl(true_logp, log_pattern(q_rot, kh_rot, self.attn_scale))
            w = cfg.kl_weights
            fit = w[0] * kl_both + w[1] * kl_q + w[2] * kl_k
            stats["kl"] = kl_both.item()
        else:
            fit = _normalised_mse(q, q_hat) + _normalised_mse(k, k_hat)
            stats["mse"] = fit.item()
        sparse = sparsity_penalty(f_q, self.qk.query) + sparsity_penalty(f_k, self.qk.key)
        loss = fit + sparsity_coef * sparse
        if cfg.ghost_grads:
            inputs = {
                "q": (self.qk.coder_input(x, q), q.flatten(-2) - q_hat.flatten(-2)),
                "k": (self.qk.coder_input(x, k), k.flatten(-2) - k_hat.flatten(-2)),
            }
            for side, coder in (("q", self.qk.query), ("k", self.qk.key)):
                dead = self.trackers[side].dead(cfg.dead_window)
                xin, residual = inputs[side]
                loss = loss + ghost_loss(
                    coder, xin.flatten(0, -2), residual.flatten(0, -2).detach(), dead
                )
        stats["loss"] = loss.item()
        stats["l0_q"] = float((f_q > 0).float().sum(-1).mean())
        stats["l0_k"] = float((f_k > 0).float().sum(-1).mean())
        return loss, stats

    def _schedule(self, step: int) -> tuple[float, float]:
        ramp = min(1.0, (step + 1) / max(self.cfg.warmup_steps, 1))
        return self.cfg.lr * ramp, self.cfg.sparsity * ramp

    def step(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        lr, sparsity_coef = self._schedule(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss, stats = self.losses(batch, sparsity_coef)
        loss.backward()
        if self.cfg.unit_norm_decoder:
            self.qk.query.remove_parallel_gradient()
            self.qk.key.remove_parallel_gradient()
        self.optimizer.step()
        if self.cfg.unit_norm_decoder:
            self.qk.query.normalise_decoder()
            self.qk.key.normalise_decoder()
        self.trackers["q"].update(stats["f_q"])
        self.trackers["k"].update(stats["f_k"])
        self.state.step += 1
        if self.cfg.resample_every and self.state.step % self.cfg.resample_every == 0:
            stats["resampled"] = self._resample(batch)
        return stats

    @torch.no_grad()
    def _resample(self, batch: dict[str, Tensor]) -> int:
        x = batch.get("resid_normed")
        q, k = batch["q"], batch["k"]
        q_hat, k_hat, _, _ = self.qk(resid_normed=x, q=q, k=k)
        total = 0
        for side, coder, xin, target, recon in (
            ("q", self.qk.query, self.qk.coder_input(x, q), q, q_hat),
            ("k", self.qk.key, self.qk.coder_input(x, k), k, k_hat),
        ):
            dead = self.trackers[side].dead(self.cfg.dead_window)
            residual = (target - recon).flatten(-2).flatten(0, -2)
            total += resample(
                coder, dead, xin.flatten(0, -2), residual, self.optimizer, self.generator
            )
            self.trackers[side].steps_since[dead] = 0  # give them a fresh window
        return total

    # ---- evaluation, checkpoints, the loop ---------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        totals: dict[str, float] = {}
        n = 0
        for batch in self._batches([self.eval_chunk], shuffle=False, seed=0):
            _, stats = self.losses(batch, self.cfg.sparsity)
            for key in ("loss", "kl", "mse", "l0_q", "l0_k"):
                if key in stats:
                    totals[key] = totals.get(key, 0.0) + stats[key]
            n += 1
        out: dict[str, Any] = {f"eval_{k}": v / max(n, 1) for k, v in totals.items()}
        for side in ("q", "k"):
            tracker = self.trackers[side]
            out[f"dead_{side}"] = float(tracker.dead(self.cfg.dead_window).float().mean())
            out[f"density_hist_{side}"] = density_histogram(tracker.density())
        return out

    def _batches(self, chunks: list[int], shuffle: bool, seed: int):
        return self.store.batches(
            self.cfg.batch_contexts, self.fields, shuffle=shuffle, seed=seed, by="context",
            device=self.device, dtype=torch.float32, drop_last=True, chunks=chunks,
        )  # fmt: skip

    def _checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def save_checkpoint(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": json.dumps(self.cfg.to_dict()),
            "store": json.dumps({"path": str(self.store.path), "layer": self.store.layer}),
            "step": self.state.step,
            "model": self.qk.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trackers": {s: t.state() for s, t in self.trackers.items()},
            "generator": self.generator.get_state(),
            "history": json.dumps(self.state.history),
        }
        tmp = self._checkpoint_path().with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self._checkpoint_path())

    def load_checkpoint(self) -> bool:
        path = self._checkpoint_path()
        if not path.is_file():
            return False
        payload = torch.load(path, map_location=self.device, weights_only=True)
        saved_cfg = json.loads(payload["config"])
        if saved_cfg != self.cfg.to_dict():
            changed = sorted(k for k in saved_cfg if saved_cfg[k] != self.cfg.to_dict().get(k))
            raise StoreMismatchError(
                f"{path} was made with other settings ({', '.join(changed)}): use another "
                "output directory, or delete the checkpoint to start again"
            )
        self.qk.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        for side, state in payload["trackers"].items():
            self.trackers[side].load(state)
        self.generator.set_state(payload["generator"])
        self.state = TrainState(step=int(payload["step"]), history=json.loads(payload["history"]))
        return True

    def run(self, progress: bool = True, stop_after: int | None = None) -> QKDictionary:
        """Train to cfg.tokens (resuming from a checkpoint in out_dir) and save the result.

        stop_after: end after that many steps of this call, as an interruption would (tests)."""
        resumed = self.load_checkpoint()
        bar = tqdm(
            total=self.total_steps, initial=self.state.step, disable=not progress,
            desc=f"{self.qk_cfg.architecture} L{self.qk_cfg.layer}", unit="step",
        )  # fmt: skip
        if resumed:
            bar.write(f"resumed from step {self.state.step} ({self._checkpoint_path()})")
        done_this_call = 0
        while self.state.step < self.total_steps:
            epoch, skip = divmod(self.state.step, self.steps_per_epoch)
            batches = self._batches(self.train_chunks, shuffle=True, seed=self.cfg.seed + epoch)
            for i, batch in enumerate(batches):
                if i < skip:
                    continue  # already trained on before the interruption
                if i >= self.steps_per_epoch or self.state.step >= self.total_steps:
                    break
                stats = self.step(batch)
                bar.update(1)
                dead = {
                    s: float(t.dead(self.cfg.dead_window).float().mean())
                    for s, t in self.trackers.items()
                }
                bar.set_postfix(
                    loss=f"{stats['loss']:.3f}",
                    **({"kl": f"{stats['kl']:.3f}"} if "kl" in stats else {}),
                    l0=f"{stats['l0_q']:.0f}/{stats['l0_k']:.0f}",
                    dead=f"{dead['q']:.0%}/{dead['k']:.0%}",
                )
                step = self.state.step
                if self.cfg.eval_every and (
                    step % self.cfg.eval_every == 0 or step == self.total_steps
                ):
                    record = {"step": step, **self.evaluate()}
                    self.state.history.append(record)
                if self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                done_this_call += 1
                if stop_after is not None and done_this_call >= stop_after:
                    self.save_checkpoint()
                    bar.close()
                    return self.qk
        bar.close()
        self.save_checkpoint()
        self._write_outputs()
        return self.qk

    def _write_outputs(self) -> None:
        for side, tracker in self.trackers.items():
            self.state.history.append(
                {"step": self.state.step, f"live_{side}": int((tracker.density() > 0).sum())}
            )
        save_qk(self.qk, self.out_dir / "dictionary")
        with open(self.out_dir / HISTORY, "w") as fh:
            for record in self.state.history:
                fh.write(json.dumps(record) + "\n")
        density = {s: t.density().cpu() for s, t in self.trackers.items()}
        torch.save(density, self.out_dir / "density.pt")


def train_qk(
    store: ActivationStore,
    rotary: Rotary | None,
    cfg: QKTrainConfig,
    out_dir: str | Path,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> QKDictionary:
    return QKTrainer(store, rotary, cfg, out_dir, device).run(progress=progress)
