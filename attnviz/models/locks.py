"""One lock per model: forward passes add hooks to shared modules, so work in another thread (a
widget's request, a background pass over every layer) and the kernel's own recomputations take
turns."""

from __future__ import annotations

import threading
from typing import Any
from weakref import WeakKeyDictionary

_LOCKS: WeakKeyDictionary[Any, threading.RLock] = WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The model's lock (re-entrant: a holder may run nested passes)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock
