"""Probe widgets, smoke tests of the front-end platform.

ArrayProbe sends one array with the binary codec (:mod:`attnviz.widgets.arrays`) and the browser
draws it as a heatmap (its first 2-D slice) with a dtype / shape / min / max line. RequestProbe
answers requests (:mod:`attnviz.widgets.requests`) and draws a chart (:mod:`attnviz.widgets.charts`).
"""

from __future__ import annotations

import time
from typing import Any

import anywidget
import numpy as np
import traitlets

from attnviz.errors import AttnvizError
from attnviz.widgets.arrays import WireDtype, encode_array
from attnviz.widgets.base import Widget
from attnviz.widgets.charts import chart_figure, chart_spec
from attnviz.widgets.requests import Job, handles
from attnviz.widgets.static import static_path

__all__ = ["ArrayProbe", "RequestProbe"]


class ArrayProbe(anywidget.AnyWidget):
    """Show an array (numpy or torch, any device) as a heatmap.

    >>> ArrayProbe(pattern[0, 3], title="layer 0, head 3")  # doctest: +SKIP
    """

    array = traitlets.Dict().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        array: Any,
        *,
        title: str = "",
        dtype: WireDtype = "float16",
        masked: Any = None,
        **kwargs: Any,
    ) -> None:
        # The bundle is looked up here, not at import, so that importing attnviz never needs a
        # front-end build and a rebuilt bundle is picked up by the next widget. anywidget reads
        # an `_esm` instance attribute set before its __init__ (a Path works only on the class).
        self._esm = static_path("arrays_probe").read_text(encoding="utf-8")
        super().__init__(array=encode_array(array, dtype, masked), title=title, **kwargs)

    def set_array(self, array: Any, dtype: WireDtype = "float16", masked: Any = None) -> None:
        """Replace the array shown (encoded again and synced to every view)."""
        self.array = encode_array(array, dtype, masked)


class RequestProbe(Widget):
    """The smoke widget of the request protocol (:mod:`attnviz.widgets.requests`) and of the
    shared charts: its buttons send requests that answer, fail, crash, or run slowly with
    progress until cancelled, and it draws ``chart`` (a :func:`~attnviz.widgets.charts.chart_spec`).

    ``steps_run`` counts the steps slow jobs ran in the kernel, so a test can see a cancelled job
    really stop; ``cancelled_jobs`` lists the ids of those that stopped on a cancel.
    """

    BUNDLE = "request_probe"

    chart = traitlets.Dict().tag(sync=True)
    steps_run = traitlets.Int(0).tag(sync=True)
    cancelled_jobs = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(self, chart: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(chart=chart or {}, **kwargs)

    @handles("echo")
    def _echo(self, job: Job, **args: Any) -> dict[str, Any]:
        """The arguments back, with an array (bytes on the wire) of `n` values 0, 1, ..."""
        n = int(args.get("n", 4))
        return {"args": args, "array": encode_array(np.arange(n, dtype=np.float32), "float32")}

    @handles("fail")
    def _fail(self, job: Job, message: str = "the probe was asked to fail") -> None:
        raise AttnvizError(message)

    @handles("crash")
    def _crash(self, job: Job) -> None:
        raise ValueError("an unexpected bug")

    @handles("slow")
    def _slow(self, job: Job, steps: int = 20, delay: float = 0.1) -> int:
        """Count to `steps`, one step every `delay` seconds, with progress; stops when cancelled."""
        for i in range(int(steps)):
            if job.cancelled:
                self.cancelled_jobs = [*self.cancelled_jobs, job.id]
                job.check()
            time.sleep(float(delay))
            self.steps_run += 1
            job.progress(i + 1, int(steps), f"step {i + 1}")
        return int(steps)

    @handles("chart")
    def _chart(
        self, job: Job, kind: str = "pareto", n: int = 12, log: bool = False
    ) -> dict[str, Any]:
        """A chart spec of `n` points of one series (also shown in ``chart``)."""
        x = np.linspace(1, 100, int(n)) if log else np.arange(int(n), dtype=np.float64)
        y = np.sqrt(x) + np.cos(x)
        spec = chart_spec(kind, [{"name": "probe", "x": x, "y": y}], title=f"{kind} probe",
                          x_title="x", y_title="y", log_x=log, log_y=log)  # fmt: skip
        self.chart = spec
        return spec

    def figure(self) -> Any:
        return chart_figure(self.chart)
