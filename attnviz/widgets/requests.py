"""Requests from a widget's front-end to the kernel: long jobs with progress, cancel and one reply.

Trait writes carry view state (layer, head, selection), which a saved notebook re-renders. Work
that takes a while (a sweep, a search) is a request instead. The browser sends a custom message
``{"kind": "request", "id", "method", "args"}``; the kernel runs the widget's handler for
``method`` in a worker thread, so that ``{"kind": "cancel", "id"}`` can still arrive while it
runs, and replies with exactly one of::

    {"kind": "answer", "id", "value", "buffer_paths"}   # bytes in value travel as buffers
    {"kind": "error", "id", "message"}
    {"kind": "cancelled", "id"}

with ``{"kind": "progress", "id", "done", "total", "text"}`` in between (at most every
``PROGRESS_INTERVAL_S``, and always the last one). ``{"kind": "ping", "id"}`` is answered at
once with ``{"kind": "pong", "id"}``: the front end's heartbeat, so a widget whose kernel is gone
(or busy with a cell) says so within seconds. A handler is a widget method marked with
:func:`handles`; it receives a :class:`Job` and the request's arguments::

    class Sweep(Widget):
        @handles("sweep")
        def _sweep(self, job: Job, alphas: list[float]) -> dict[str, Any]:
            for i, alpha in enumerate(alphas):
                job.check()                       # raises Cancelled once the user cancels
                ...
                job.progress(i + 1, len(alphas), f"alpha {alpha}")
            return {"loss": encode_array(losses, "float32")}

Cancelling is cooperative: the handler calls ``job.check()`` (or reads ``job.cancelled``) between
steps. An :class:`~attnviz.errors.AttnvizError` is shown to the user as it is; any other exception
as its type and message (the traceback goes to the ``attnviz.widgets`` logger). The JavaScript
side is ``widgets/shared/requests.js``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from attnviz.errors import AttnvizError
from attnviz.widgets.arrays import encode_array

__all__ = ["PROGRESS_INTERVAL_S", "Cancelled", "Job", "Requests", "handlers_of", "handles"]

PROGRESS_INTERVAL_S = 0.1
"""Shortest time between two progress messages of one request (the last one always goes)."""

log = logging.getLogger("attnviz.widgets")
F = TypeVar("F", bound=Callable[..., Any])
_MARK = "_attnviz_request"


class Cancelled(Exception):
    """Raised inside a handler (by :meth:`Job.check`) to stop a job the user cancelled."""


def handles(method: str) -> Callable[[F], F]:
    """Mark a widget method as the handler of requests named `method`."""

    def mark(fn: F) -> F:
        setattr(fn, _MARK, method)
        return fn

    return mark


def handlers_of(obj: object) -> dict[str, Callable[..., Any]]:
    """{method name: bound handler} of the methods of `obj` marked with :func:`handles`."""
    out: dict[str, Callable[..., Any]] = {}
    for klass in reversed(type(obj).__mro__):  # a subclass's handler overrides its parent's
        for attr, value in vars(klass).items():
            method = getattr(value, _MARK, None)
            if isinstance(method, str):
                out[method] = getattr(obj, attr)
    return out


class Job:
    """One running request, as its handler sees it."""

    def __init__(self, id: str, method: str, send: Callable[[dict[str, Any]], None]) -> None:
        self.id = id
        self.method = method
        self._send = send
        self._cancel = threading.Event()
        self._last = -float("inf")
        self.progress_sent = 0

    @property
    def cancelled(self) -> bool:
        """True once the front-end asked to cancel (or the widget was closed)."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled; call it between steps."""
        if self._cancel.is_set():
            raise Cancelled(self.id)

    def progress(self, done: float, total: float | None = None, text: str = "") -> None:
        """Tell the front-end how far the job is (`total` None: unknown). Throttled to one
        message per PROGRESS_INTERVAL_S, except that the last step (done >= total) always goes."""
        now = time.monotonic()
        last = total is not None and done >= total
        if not last and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        self.progress_sent += 1
        self._send(
            {"kind": "progress", "id": self.id, "done": done, "total": total, "text": str(text)}
        )


def _wire(value: Any) -> Any:
    """Arrays (numpy, torch) in an answer become wire dicts (float32 / int32 bytes)."""
    if isinstance(value, dict):
        return {str(k): _wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    if isinstance(value, np.ndarray) or type(value).__name__ == "Tensor":
        a = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        return encode_array(a, "float32" if a.dtype.kind == "f" else "int32")
    if isinstance(value, np.generic):
        return value.item()
    return value


def split_buffers(value: Any) -> tuple[Any, list[list[str | int]], list[bytes]]:
    """The value with every bytes-like leaf replaced by None, the leaves' paths and the bytes
    (what ipywidgets sends as binary buffers; ``restoreBuffers`` in JS puts them back)."""
    paths: list[list[str | int]] = []
    buffers: list[bytes] = []

    def walk(v: Any, path: list[str | int]) -> Any:
        if isinstance(v, (bytes, bytearray, memoryview)):
            paths.append(path)
            buffers.append(bytes(v))
            return None
        if isinstance(v, dict):
            return {k: walk(x, [*path, k]) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, [*path, i]) for i, x in enumerate(v)]
        return v

    return walk(value, []), paths, buffers


class Requests:
    """The request dispatcher of one widget: listens to its custom messages, runs handlers in a
    worker thread (one at a time, in order) and sends the replies through ``widget.send``.

    ``handlers``: {method: callable(job, **args)}; default: the widget's :func:`handles` methods.
    """

    def __init__(self, widget: Any, handlers: dict[str, Callable[..., Any]] | None = None) -> None:
        self._widget = widget
        self._handlers = handlers_of(widget) if handlers is None else dict(handlers)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnviz-request")
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {}  # requests not yet replied to
        self.futures: dict[str, Future[None]] = {}
        widget.on_msg(self.on_message)

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    def _send(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        self._widget.send(content, buffers)

    def on_message(self, widget: Any, content: Any, buffers: Any = None) -> None:
        """ipywidgets' on_msg callback (call it directly in tests)."""
        if not isinstance(content, dict):
            return
        kind, rid = content.get("kind"), content.get("id")
        if kind == "ping":  # the front end's heartbeat: answered at once, whatever is running
            self._send({"kind": "pong", "id": rid})
            return
        if kind == "cancel":
            with self._lock:
                job = self.jobs.get(str(rid))
            if job is not None:
                job.cancel()
            return
        if kind != "request" or not isinstance(rid, str):
            return  # not ours (another protocol on the same comm)
        method, args = content.get("method"), content.get("args") or {}
        job = Job(rid, str(method), self._send)
        handler = self._handlers.get(str(method))
        if handler is None:
            known = ", ".join(self.methods) or "none"
            self._send({"kind": "error", "id": rid,
                        "message": f"unknown request {method!r}: this widget answers {known}"})  # fmt: skip
            return
        if not isinstance(args, dict):
            self._send({"kind": "error", "id": rid,
                        "message": f"request {method!r}: args must be an object, got {args!r}"})  # fmt: skip
            return
        with self._lock:
            self.futures = {k: f for k, f in self.futures.items() if not f.done()}
            self.jobs[rid] = job
            self.futures[rid] = self._pool.submit(self._run, job, handler, args)

    def _run(self, job: Job, handler: Callable[..., Any], args: dict[str, Any]) -> None:
        try:
            job.check()  # cancelled while it waited for the worker
            value = handler(job, **args)
            job.check()  # the user cancelled: the value is dropped, the reply says so
            reply: dict[str, Any] = {"kind": "answer", "id": job.id}
            value, reply["buffer_paths"], buffers = split_buffers(_wire(value))
            reply["value"] = value
        except Cancelled:
            reply, buffers = {"kind": "cancelled", "id": job.id}, []
        except AttnvizError as err:
            reply, buffers = {"kind": "error", "id": job.id, "message": str(err)}, []
        except Exception as err:
            log.exception("attnviz request %r (%s) failed", job.method, job.id)
            message = f"attnviz: {job.method} failed: {type(err).__name__}: {err}"
            reply, buffers = {"kind": "error", "id": job.id, "message": message}, []
        with self._lock:
            self.jobs.pop(job.id, None)
        try:
            self._send(reply, buffers)
        except Exception:  # a closed comm: nobody is left to tell
            log.exception("attnviz could not reply to request %s", job.id)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every request received so far has been replied to (tests, scripts)."""
        with self._lock:
            futures = list(self.futures.values())
        for future in futures:
            future.result(timeout=timeout)

    def close(self) -> None:
        """Cancel every running job and stop the worker once it is free."""
        with self._lock:
            for job in self.jobs.values():
                job.cancel()
        self._pool.shutdown(wait=False)
