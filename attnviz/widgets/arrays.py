"""Compact binary transport of arrays from Python to the widgets' JavaScript.

Wire format: one dict per array, sent as a widget trait; ipywidgets ships ``data`` as a
binary buffer (no JSON, no base64) and the browser receives it as a ``DataView``::

    {"dtype": "float16" | "float32" | "uint8" | "int32" | "uint16",
     "shape": [d0, d1, ...],      # C order (last axis fastest); [] for a scalar
     "data": bytes,               # little-endian, exactly prod(shape) * itemsize bytes
     # uint8 only:
     "scale": float, "offset": float, "masked": bool}

* float16 / float32: IEEE floats; masked cells are NaN, +-inf pass through.
* uint8: a quantised float, ``value = offset + scale * byte`` for bytes 0..254, with
  ``offset = min`` and ``scale = (max - min) / 254`` over the unmasked values, so every
  unmasked value comes back within ``scale / 2`` of the original (plus float32 rounding).
  Byte 255 means masked (also NaN and +-inf inputs) and is used only when ``"masked"`` is true.
* int32 / uint16: integers (token ids, indices), exact; they cannot carry a mask.

The JavaScript side is ``widgets/shared/arrays.js`` (``decodeArray``): float16, float32 and
uint8 decode to a ``Float32Array``, int32 to ``Int32Array``, uint16 to ``Uint16Array``.
:func:`decode_array` mirrors it in Python.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

import numpy as np

__all__ = ["decode_array", "encode_array", "json_baseline_nbytes", "payload_nbytes"]

WireDtype = Literal["float16", "float32", "uint8", "int32", "uint16"]

_WIRE: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "uint8": np.dtype("u1"),
    "int32": np.dtype("<i4"),
    "uint16": np.dtype("<u2"),
}
_FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
MASKED_BYTE = 255
_LEVELS = 254  # bytes 0..254 carry values


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view or copy of a numpy array, torch tensor (any device) or array-like."""
    torch = sys.modules.get("torch")  # a tensor cannot exist unless torch is imported
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_sparse:
            t = t.to_dense()
        t = t.cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def encode_array(x: Any, dtype: WireDtype = "float16", masked: Any = None) -> dict[str, Any]:
    """Encode ``x`` (numpy array, torch tensor on any device, or array-like) for a widget.

    ``masked``: optional boolean array broadcastable to ``x``, True where a cell is masked
    (sent as NaN for float dtypes, as byte 255 for uint8). NaN and +-inf in ``x`` count as
    masked for uint8. Raises ValueError for values the dtype cannot hold (float16 beyond
    +-65504, integers out of range, masks on integer dtypes).
    """
    if dtype not in _WIRE:
        raise ValueError(f"unknown wire dtype {dtype!r}: use one of {', '.join(_WIRE)}")
    a = _to_numpy(x)
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"cannot send an array of dtype {a.dtype} to a widget: need numbers")
    mask = None
    if masked is not None:
        mask = np.broadcast_to(np.asarray(_to_numpy(masked), dtype=bool), a.shape)

    out: dict[str, Any] = {"dtype": dtype, "shape": [int(d) for d in a.shape]}
    if dtype in ("float16", "float32"):
        if a.dtype.kind != "f":
            a = a.astype(np.float64)
        if mask is not None and mask.any():
            a = a.copy()
            a[mask] = np.nan
        if dtype == "float16" and a.size:
            finite = np.isfinite(a)
            lo = float(np.min(a, where=finite, initial=np.inf))
            hi = float(np.max(a, where=finite, initial=-np.inf))
            if max(-lo, hi) > _FLOAT16_MAX:
                raise ValueError(
                    f"values up to {max(-lo, hi):.6g} in magnitude overflow float16 "
                    f"(max {_FLOAT16_MAX:g}): send them with dtype='float32'"
                )
        out["data"] = np.ascontiguousarray(a, dtype=_WIRE[dtype]).tobytes()
    elif dtype == "uint8":
        out.update(_quantize(a, mask))
    else:
        if mask is not None:
            raise ValueError(f"{dtype} cannot carry a mask: use a float dtype or uint8")
        if a.dtype.kind not in "biu":
            raise TypeError(f"{dtype} is for integer arrays, got {a.dtype}: use a float dtype")
        info = np.iinfo(_WIRE[dtype])
        if a.size and (int(a.min()) < info.min or int(a.max()) > info.max):
            raise ValueError(
                f"values {int(a.min())}..{int(a.max())} do not fit {dtype} ({info.min}..{info.max})"
            )
        out["data"] = np.ascontiguousarray(a, dtype=_WIRE[dtype]).tobytes()
    return out


_CHUNK = 1 << 20  # quantise in float64 a million values at a time


def _quantize(a: np.ndarray, mask: np.ndarray | None) -> dict[str, Any]:
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if mask is not None:
        bad |= mask
    good = ~bad
    lo = float(np.min(a, where=good, initial=np.inf))
    hi = float(np.max(a, where=good, initial=-np.inf))
    if lo > hi:  # nothing unmasked
        lo = hi = 0.0
    scale = (hi - lo) / _LEVELS
    flat = np.ravel(a)  # C order; a view when a is C-contiguous
    flat_bad = np.ravel(bad)
    q = np.zeros(flat.size, dtype=np.uint8)  # scale == 0: every unmasked value is `offset`
    if scale > 0:
        for i in range(0, flat.size, _CHUNK):
            steps = (flat[i : i + _CHUNK].astype(np.float64) - lo) / scale
            steps[flat_bad[i : i + _CHUNK]] = 0.0
            q[i : i + _CHUNK] = np.clip(np.rint(steps), 0, _LEVELS)
    has_mask = bool(flat_bad.any())
    if has_mask:
        q[flat_bad] = MASKED_BYTE
    return {"data": q.tobytes(), "scale": scale, "offset": lo, "masked": has_mask}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    """Decode a wire dict as the browser does: float16/float32/uint8 -> float32 (masked
    cells NaN), int32 -> int32, uint16 -> uint16. For tests and round trips."""
    dtype = d["dtype"]
    if dtype not in _WIRE:
        raise ValueError(f"unknown wire dtype {dtype!r}")
    shape = tuple(int(s) for s in d["shape"])
    raw = np.frombuffer(d["data"], dtype=_WIRE[dtype])
    if raw.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"{dtype} shape {list(shape)} does not match {len(d['data'])} bytes")
    raw = raw.reshape(shape)
    if dtype == "uint8":
        values = (float(d["offset"]) + float(d["scale"]) * raw.astype(np.float64)).astype(
            np.float32
        )
        if d.get("masked"):
            values[raw == MASKED_BYTE] = np.nan
        return values
    if dtype in ("float16", "float32"):
        return raw.astype(np.float32)
    return raw.astype(raw.dtype.newbyteorder("="))


def payload_nbytes(d: dict[str, Any]) -> int:
    """Bytes on the wire: the binary buffer plus the JSON of everything else."""
    meta = {k: v for k, v in d.items() if k != "data"}
    return len(d["data"]) + len(json.dumps(meta))


def json_baseline_nbytes(x: Any) -> int:
    """Bytes of the naive alternative, ``json.dumps(x.tolist())``, for benchmarks."""
    return len(json.dumps(_to_numpy(x).tolist()))
