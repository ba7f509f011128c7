"""Where tensors live and in what precision."""

from __future__ import annotations

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}


def default_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU (MPS is opt-in: some attention ops differ there)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    return default_device() if device is None else torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}: use one of {', '.join(sorted(set(_DTYPES)))}"
        ) from None


def release_memory() -> None:
    """Give memory freed by a large job back to the system. glibc keeps freed tensors' memory
    in its heap when they were allocated below its (self-raising) mmap threshold, so a notebook
    that trained a mask would otherwise stay ~1 GB bigger than it needs (Binder allows 2 GB)."""
    import contextlib
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): no trim
        ctypes.CDLL(name).malloc_trim(0)
