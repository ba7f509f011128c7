"""Several processes, one training run (PyTorch distributed, as started by `torchrun`).

Every process reads the same global batch and trains on its own slice of it; gradients are
averaged across processes before each step (what DistributedDataParallel does), firing counts are
summed, and resampling sees the whole global batch. With losses that are means over tokens, N
processes then follow the same trajectory as one process with the same global batch, up to the
order of float additions. Rescaled ghost grads normalise by their shard's residual, so with them
the runs agree only approximately.

Nothing here does anything in a single process: the same loop runs unchanged on one CPU, one
GPU or many.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def init_from_env(device: torch.device | str | None = None) -> bool:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1): gloo on
    CPUs, nccl on GPUs. Returns whether this is a multi-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = (
            torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        )
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def shard(batch: dict[str, Tensor], n: int | None = None) -> dict[str, Tensor]:
    """This process's slice of a global batch (split along the first dimension)."""
    size = world_size()
    if size == 1:
        return batch
    total = n if n is not None else next(iter(batch.values())).shape[0]
    if total % size:
        raise ValueError(
            f"a global batch of {total} contexts does not split evenly over {size} processes: "
            f"choose a batch size divisible by {size}"
        )
    per = total // size
    start = rank() * per
    return {k: v[start : start + per] for k, v in batch.items()}


def average_gradients(params) -> None:
    """Mean of each parameter's gradient over processes, in place."""
    size = world_size()
    if size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(size)


def sum_(x: Tensor) -> Tensor:
    """Sum of x over processes (a new tensor; x itself is untouched)."""
    if world_size() == 1:
        return x
    out = x.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def mean_scalar(value: float) -> float:
    if world_size() == 1:
        return value
    return float(sum_(torch.tensor([value], dtype=torch.float64))[0]) / world_size()


def gather(x: Tensor) -> Tensor:
    """Concatenation over processes along dim 0, in rank order (the global batch's order)."""
    size = world_size()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
