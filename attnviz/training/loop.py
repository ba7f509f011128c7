"""One training loop for every dictionary architecture.

The loop owns what all of them share: Adam with warm-up, unit-norm decoders, firing trackers and
the dead-feature remedies (resampling, rescaled ghost grads, the negative pre-activation penalty,
AuxK), periodic evaluation on held-out data, checkpoints that resume to bit-identical weights,
a progress bar with live metrics, and several processes through torchrun. What differs per
architecture (which activations it reads, its initialisation, its fitting loss and sparsity
penalty) is an `Objective`, in a small module of its own (`training/qk.py`, ...).
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from attnviz.analysis.metrics import density_histogram
from attnviz.data.store import ActivationStore
from attnviz.device import release_memory
from attnviz.dictionaries.base import Dictionary
from attnviz.dictionaries.io import save_dictionary
from attnviz.dictionaries.sparse_coder import SparseCoder
from attnviz.errors import CheckpointMismatchError
from attnviz.training import distributed as dist
from attnviz.training.config import LoopConfig
from attnviz.training.dead_features import (
    FiringTracker,
    auxk_loss,
    ghost_loss,
    negative_pre_penalty,
    resample,
)

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.jsonl"


@dataclass
class CoderTerms:
    """What the loop needs of one sparse coder in a step, flattened over tokens."""

    f: Tensor
    """Feature activations [tokens, d_hidden] (detached)."""
    x: Tensor
    """The coder's input [tokens, d_in]."""
    residual: Tensor
    """Target minus reconstruction [tokens, d_out] (what the live features leave unexplained)."""


@dataclass
class StepOutput:
    loss: Tensor
    """The objective's loss (fit + sparsity), a scalar with gradient."""
    stats: dict[str, float]
    """Numbers to log ("kl", "mse", ...)."""
    terms: dict[str, CoderTerms]
    """One entry per coder, by the names `Objective.coders` uses."""


class Objective(ABC):
    """What one architecture brings to the loop."""

    dictionary: Dictionary
    fields: tuple[str, ...]
    """The activation-store fields a batch must hold."""

    @abstractmethod
    def coders(self) -> dict[str, SparseCoder]:
        """The dictionary's sparse coders by short name (e.g. {"q": ..., "k": ...})."""

    def initialise(self, store: ActivationStore, chunks: list[int]) -> None:  # noqa: B027
        """Set data-dependent initial values (e.g. biases at the data means); default none."""

    @abstractmethod
    def step_output(self, batch: dict[str, Tensor], sparsity_scale: float) -> StepOutput:
        """The loss of a batch; `sparsity_scale` in [0, 1] is the warm-up of the penalty."""

    def progress(self, stats: dict[str, float]) -> dict[str, str]:
        """Extra fields for the progress bar."""
        return {}


@dataclass
class TrainState:
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Trains `objective.dictionary` on a store; `run()` returns it and writes it to `out_dir`.

    The store's last chunk is held out for evaluation. In a torchrun job every process builds
    the same Trainer; `batch_contexts` is the global batch."""

    def __init__(
        self,
        objective: Objective,
        store: ActivationStore,
        cfg: LoopConfig,
        out_dir: str | Path,
        device: torch.device | str | None = None,
        desc: str = "train",
    ):
        self.objective, self.store, self.cfg = objective, store, cfg
        self.out_dir = Path(out_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.desc = desc
        if len(store.chunks) < 2:
            raise ValueError(
                f"the store has {len(store.chunks)} chunk(s); training holds the last one out for "
                "evaluation, so collect more tokens"
            )
        if cfg.batch_contexts % dist.world_size():
            raise ValueError(
                f"batch_contexts {cfg.batch_contexts} does not split over {dist.world_size()} "
                "processes: choose a multiple of the process count"
            )
        self.train_chunks = list(range(len(store.chunks) - 1))
        self.eval_chunk = len(store.chunks) - 1
        self.dictionary = objective.dictionary.to(self.device)
        objective.initialise(store, self.train_chunks)
        self.optimizer = torch.optim.Adam(
            self.dictionary.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2)
        )
        self.trackers = {
            name: FiringTracker(coder.d_hidden, self.device)
            for name, coder in objective.coders().items()
        }
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.state = TrainState()
        self.total_steps = math.ceil(cfg.tokens / (cfg.batch_contexts * store.n_ctx))
        n_train = sum(store.chunks[i].n_contexts for i in self.train_chunks)
        self.steps_per_epoch = n_train // cfg.batch_contexts
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{n_train} training contexts cannot fill one batch of {cfg.batch_contexts}"
            )

    # ---- one step ----------------------------------------------------------------------

    def losses(self, batch: dict[str, Tensor], sparsity_scale: float) -> tuple[Tensor, StepOutput]:
        """The objective's loss plus the loop's dead-feature terms."""
        out = self.objective.step_output(batch, sparsity_scale)
        loss = out.loss
        coders = self.objective.coders()
        for name, terms in out.terms.items():
            coder = coders[name]
            dead = self.trackers[name].dead(self.cfg.dead_window)
            if self.cfg.ghost_grads:
                loss = loss + ghost_loss(coder, terms.x, terms.residual.detach(), dead)
            if self.cfg.aux_k:
                aux = auxk_loss(coder, terms.x, terms.residual.detach(), dead, self.cfg.aux_k)
                loss = loss + self.cfg.aux_k_coef * aux
            if self.cfg.neg_pre_penalty:
                loss = loss + self.cfg.neg_pre_penalty * negative_pre_penalty(coder, terms.x)
        return loss, out

    def _schedule(self, step: int) -> tuple[float, float]:
        ramp = min(1.0, (step + 1) / max(self.cfg.warmup_steps, 1))
        return self.cfg.lr * ramp, ramp

    def step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One optimiser step on (this process's share of) a global batch."""
        lr, sparsity_scale = self._schedule(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        local = dist.shard(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss, out = self.losses(local, sparsity_scale)
        loss.backward()
        dist.average_gradients(self.dictionary.parameters())
        coders = self.objective.coders()
        if self.cfg.unit_norm_decoder:
            for coder in coders.values():
                coder.remove_parallel_gradient()
        self.optimizer.step()
        if self.cfg.unit_norm_decoder:
            for coder in coders.values():
                coder.normalise_decoder()
        stats = {k: dist.mean_scalar(v) for k, v in out.stats.items()}
        stats["loss"] = dist.mean_scalar(loss.item())
        for name, terms in out.terms.items():
            fired = dist.sum_((terms.f > 0).sum(0))
            n_tokens = terms.f.shape[0] * dist.world_size()
            stats[f"l0_{name}"] = float(fired.sum()) / n_tokens
            self.trackers[name].update_counts(fired, n_tokens)
        self.state.step += 1
        if self.cfg.resample_every and self.state.step % self.cfg.resample_every == 0:
            stats["resampled"] = self._resample(local)
        return stats

    @torch.no_grad()
    def _resample(self, local: dict[str, Tensor]) -> int:
        """Resample dead features from the whole global batch (gathered, so every process makes
        the same choice)."""
        out = self.objective.step_output(local, 1.0)
        total = 0
        for name, coder in self.objective.coders().items():
            terms = out.terms[name]
            dead = self.trackers[name].dead(self.cfg.dead_window)
            x, residual = dist.gather(terms.x), dist.gather(terms.residual)
            total += resample(coder, dead, x, residual, self.optimizer, self.generator)
            self.trackers[name].steps_since[dead] = 0  # a fresh window for the resampled
        return total

    # ---- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Mean loss terms over the held-out chunk, dead fractions, density histograms."""
        totals: dict[str, float] = {}
        n = 0
        was_training = self.dictionary.training
        self.dictionary.eval()  # inference behaviour (e.g. a BatchTopK SAE's fixed threshold)
        # Every held-out context counts, the last short batch too (a store's last chunk is often
        # smaller than one training batch).
        for batch in self._batches([self.eval_chunk], shuffle=False, seed=0, drop_last=False):
            loss, out = self.losses(batch, 1.0)
            numbers = {"loss": loss.item(), **out.stats}
            for name, terms in out.terms.items():
                numbers[f"l0_{name}"] = float((terms.f > 0).float().sum(-1).mean())
            for key, value in numbers.items():
                totals[key] = totals.get(key, 0.0) + value
            n += 1
        self.dictionary.train(was_training)
        record: dict[str, Any] = {f"eval_{k}": v / max(n, 1) for k, v in totals.items()}
        for name, tracker in self.trackers.items():
            record[f"dead_{name}"] = float(tracker.dead(self.cfg.dead_window).float().mean())
            record[f"density_hist_{name}"] = density_histogram(tracker.density())
        return record

    def _batches(
        self, chunks: list[int], shuffle: bool, seed: int, drop_last: bool = True
    ) -> Iterator[dict[str, Tensor]]:
        return self.store.batches(
            self.cfg.batch_contexts, self.objective.fields, shuffle=shuffle, seed=seed,
            by="context", device=self.device, dtype=torch.float32, drop_last=drop_last,
            chunks=chunks,
        )  # fmt: skip

    # ---- checkpoints ---------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def save_checkpoint(self) -> None:
        """Write the whole state (atomically; only the first process writes)."""
        if dist.is_main():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            payload = {
                "config": json.dumps(self.cfg.to_dict()),
                "store": json.dumps({"path": str(self.store.path), "layers": self.store.layers}),
                "step": self.state.step,
                "model": self.dictionary.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "trackers": {s: t.state() for s, t in self.trackers.items()},
                "generator": self.generator.get_state(),
                "history": json.dumps(self.state.history),
            }
            tmp = self.checkpoint_path.with_suffix(".tmp")
            torch.save(payload, tmp)
            os.replace(tmp, self.checkpoint_path)
        dist.barrier()

    def load_checkpoint(self) -> bool:
        path = self.checkpoint_path
        if not path.is_file():
            return False
        payload = torch.load(path, map_location=self.device, weights_only=True)
        saved, mine = json.loads(payload["config"]), self.cfg.to_dict()
        if saved != mine:
            changed = sorted(k for k in saved.keys() | mine.keys() if saved.get(k) != mine.get(k))
            raise CheckpointMismatchError(
                f"{path} was made with other settings ({', '.join(changed)}): use another "
                "output directory, or delete the checkpoint to start again"
            )
        self.dictionary.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        for name, state in payload["trackers"].items():
            self.trackers[name].load(state)
        self.generator.set_state(payload["generator"])
        self.state = TrainState(step=int(payload["step"]), history=json.loads(payload["history"]))
        return True

    # ---- the loop ------------------------------------------------------------------------

    def run(self, progress: bool = True, stop_after: int | None = None) -> Dictionary:
        """Train to cfg.tokens (resuming from a checkpoint in out_dir) and save the result.

        stop_after: end after that many steps of this call, as an interruption would (tests)."""
        resumed = self.load_checkpoint()
        bar = tqdm(
            total=self.total_steps, initial=self.state.step, unit="step", desc=self.desc,
            disable=not progress or not dist.is_main(),
        )  # fmt: skip
        if resumed:
            bar.write(f"resumed from step {self.state.step} ({self.checkpoint_path})")
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
                bar.set_postfix(self._postfix(stats))
                step = self.state.step
                if self.cfg.eval_every and (
                    step % self.cfg.eval_every == 0 or step == self.total_steps
                ):
                    self.state.history.append(
                        {"step": step, "train_loss": stats["loss"], **self.evaluate()}
                    )
                if self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                done_this_call += 1
                if stop_after is not None and done_this_call >= stop_after:
                    self.save_checkpoint()
                    bar.close()
                    return self.dictionary
        bar.close()
        self.save_checkpoint()
        if dist.is_main():
            self._write_outputs()
        dist.barrier()
        release_memory()  # the batches' buffers: a notebook should not keep them
        return self.dictionary

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        names = list(self.trackers)
        dead = [float(self.trackers[n].dead(self.cfg.dead_window).float().mean()) for n in names]
        return {
            "loss": f"{stats['loss']:.3f}",
            **self.objective.progress(stats),
            "l0": "/".join(f"{stats[f'l0_{n}']:.0f}" for n in names),
            "dead": "/".join(f"{d:.0%}" for d in dead),
        }

    def _write_outputs(self) -> None:
        for name, tracker in self.trackers.items():
            self.state.history.append(
                {"step": self.state.step, f"live_{name}": int((tracker.density() > 0).sum())}
            )
        save_dictionary(self.dictionary, self.out_dir / "dictionary")
        with open(self.out_dir / HISTORY, "w") as fh:
            for record in self.state.history:
                fh.write(json.dumps(record) + "\n")
        density = {name: t.density().cpu() for name, t in self.trackers.items()}
        torch.save(density, self.out_dir / "density.pt")
