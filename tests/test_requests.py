"""The request protocol (attnviz.widgets.requests) without a browser: the widget's message
handler is called directly and the replies it sends are recorded. The browser side is
tests/browser/test_requests.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from attnviz.widgets import static
from attnviz.widgets.arrays import decode_array
from attnviz.widgets.charts import chart_figure, chart_spec, pareto_frontier, series_values
from attnviz.widgets.probe import RequestProbe
from attnviz.widgets.requests import Job, Requests, handles, split_buffers

FINAL = {"answer", "error", "cancelled"}


@pytest.fixture(autouse=True)
def bundles(monkeypatch, tmp_path):
    """A stand-in bundle, so these tests need no front-end build."""
    (tmp_path / "request_probe.js").write_text("export default { render() {} };\n")
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)


class Recorder:
    """Stands in for widget.send: every message, with its buffers, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict, list[bytes]]] = []
        self.lock = threading.Lock()

    def __call__(self, content, buffers=None):
        with self.lock:
            self.sent.append((content, list(buffers or [])))

    def of(self, rid: str) -> list[dict]:
        return [c for c, _ in self.sent if c.get("id") == rid]

    def final(self, rid: str) -> dict:
        finals = [c for c in self.of(rid) if c["kind"] in FINAL]
        assert len(finals) == 1, f"{rid}: {finals}"
        return finals[0]


@pytest.fixture
def probe(monkeypatch):
    widget = RequestProbe()
    recorder = Recorder()
    monkeypatch.setattr(widget, "send", recorder)
    widget.recorder = recorder
    yield widget
    widget.requests.close()


def ask(widget, rid, method, **args):
    widget.requests.on_message(
        widget, {"kind": "request", "id": rid, "method": method, "args": args}, []
    )


def test_an_answer_carries_its_arrays_as_buffers(probe):
    ask(probe, "r1", "echo", n=6, text="<b>x</b>")
    probe.requests.wait(10)
    reply = probe.recorder.final("r1")
    ((_content, buffers),) = [(c, b) for c, b in probe.recorder.sent if c is reply]
    assert reply["kind"] == "answer" and reply["value"]["args"] == {"n": 6, "text": "<b>x</b>"}
    assert reply["buffer_paths"] == [["array", "data"]] and reply["value"]["array"]["data"] is None
    wire = {**reply["value"]["array"], "data": buffers[0]}
    np.testing.assert_array_equal(decode_array(wire), np.arange(6, dtype=np.float32))


def test_errors_show_attnviz_messages_as_they_are_and_others_with_their_type(probe):
    ask(probe, "a", "fail", message="layer 40 is out of range: use 0-29")
    ask(probe, "b", "crash")
    probe.requests.wait(10)
    assert probe.recorder.final("a") == {"kind": "error", "id": "a",
                                         "message": "layer 40 is out of range: use 0-29"}  # fmt: skip
    message = probe.recorder.final("b")["message"]
    assert "ValueError" in message and "an unexpected bug" in message and "crash" in message


def test_an_unknown_method_names_the_known_ones(probe):
    ask(probe, "u", "sweep")
    reply = probe.recorder.final("u")
    assert reply["kind"] == "error" and "'sweep'" in reply["message"]
    for known in ("chart", "crash", "echo", "fail", "slow"):
        assert known in reply["message"]


def test_progress_is_throttled_and_the_last_step_always_goes(probe):
    ask(probe, "s", "slow", steps=30, delay=0.01)
    probe.requests.wait(20)
    progress = [c for c in probe.recorder.of("s") if c["kind"] == "progress"]
    assert probe.recorder.final("s") == {"kind": "answer", "id": "s", "value": 30,
                                         "buffer_paths": []}  # fmt: skip
    assert 2 <= len(progress) < 30  # 0.3 s of work at most every 0.1 s, plus the last
    assert progress[-1]["done"] == 30 and progress[-1]["total"] == 30
    dones = [p["done"] for p in progress]
    assert dones == sorted(dones)
    kinds = [c["kind"] for c in probe.recorder.of("s")]
    assert kinds[-1] == "answer" and "answer" not in kinds[:-1]  # progress only before it


def test_a_cancel_stops_the_job_in_the_kernel(probe):
    ask(probe, "slow", "slow", steps=200, delay=0.02)
    deadline = time.monotonic() + 10
    while probe.steps_run < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    probe.requests.on_message(probe, {"kind": "cancel", "id": "slow"}, [])
    probe.requests.wait(10)
    assert probe.recorder.final("slow") == {"kind": "cancelled", "id": "slow"}
    ran = probe.steps_run
    assert ran < 200 and probe.cancelled_jobs == ["slow"]
    time.sleep(0.1)
    assert probe.steps_run == ran  # nothing runs on after the reply


def test_a_request_cancelled_while_queued_never_runs(probe):
    ask(probe, "first", "slow", steps=10, delay=0.02)
    ask(probe, "second", "slow", steps=10, delay=0.02)
    probe.requests.on_message(probe, {"kind": "cancel", "id": "second"}, [])
    probe.requests.wait(10)
    assert probe.recorder.final("first")["kind"] == "answer"
    assert probe.recorder.final("second") == {"kind": "cancelled", "id": "second"}
    assert probe.steps_run == 10 and probe.cancelled_jobs == []


def test_messages_of_other_protocols_and_late_cancels_are_ignored(probe):
    for content in ({"kind": "other"}, {"method": "echo"}, "text", {"kind": "request", "id": 3}):
        probe.requests.on_message(probe, content, [])
    probe.requests.on_message(probe, {"kind": "cancel", "id": "never-sent"}, [])
    assert probe.recorder.sent == []


def test_handlers_are_found_on_subclasses_and_closing_cancels():
    class Worker:
        def __init__(self):
            self.sent = []
            self.started = threading.Event()

        def on_msg(self, callback):
            self.callback = callback

        def send(self, content, buffers=None):
            self.sent.append(content)

        @handles("wait")
        def _wait(self, job: Job) -> str:
            self.started.set()
            while True:
                job.check()
                time.sleep(0.01)

    worker = Worker()
    requests = Requests(worker)
    assert requests.methods == ["wait"]
    worker.callback(worker, {"kind": "request", "id": "w", "method": "wait", "args": {}}, [])
    assert worker.started.wait(5)
    requests.close()
    requests.wait(5)
    assert worker.sent == [{"kind": "cancelled", "id": "w"}]


def test_split_buffers_finds_bytes_at_any_depth():
    value, paths, buffers = split_buffers({"a": [1, b"xy", {"b": memoryview(b"z")}], "c": "t"})
    assert value == {"a": [1, None, {"b": None}], "c": "t"}
    assert paths == [["a", 1], ["a", 2, "b"]] and buffers == [b"xy", b"z"]


def test_pareto_frontier_keeps_the_points_nothing_beats():
    x = [1.0, 2.0, 3.0, 2.5, 4.0, np.nan]
    y = [1.0, 3.0, 2.0, 3.5, 5.0, 9.0]
    assert pareto_frontier(x, y) == [0, 1, 3, 4]  # low x and high y are better
    assert pareto_frontier(x, y, "max", "max") == [4]
    assert pareto_frontier(x, y, "min", "min") == [0]


def test_chart_spec_sends_numbers_as_bytes_and_becomes_a_plotly_figure():
    x = np.array([0.1, 1.0, 10.0, -1.0])
    spec = chart_spec("pareto", [{"name": "<i>alpha</i>", "x": x, "y": [1, 2, 3, 4],
                                  "labels": list("abcd")}], log_x=True, x_title="L0")  # fmt: skip
    assert isinstance(spec["series"][0]["x"]["data"], bytes)
    np.testing.assert_allclose(series_values(spec["series"][0]["x"]), x, rtol=1e-6)
    fig = chart_figure(spec)
    points, frontier = fig.data
    assert len(points.x) == 3  # -1 cannot sit on a log axis
    assert points.name == "&lt;i&gt;alpha&lt;/i&gt;" and fig.layout.xaxis.type == "log"
    assert list(frontier.x) == pytest.approx([0.1, 1.0, 10.0])
    with pytest.raises(ValueError, match="unknown chart kind"):
        chart_spec("pie", [])
    with pytest.raises(ValueError, match="one length"):
        chart_spec("line", [{"x": [1, 2], "y": [1]}])


def test_request_probe_exports_its_chart(probe, tmp_path):
    (static.STATIC_DIR / "export_host.js").write_text("export function mount() {}\n")
    probe.chart = chart_spec("scatter", [{"name": "s", "x": [1, 2, 3], "y": [3, 1, 2]}])
    assert len(probe.figure().data) == 1
    text = probe.to_html(tmp_path / "probe.html").read_text()
    assert 'data-widget="request_probe"' in text and '"chart":{"kind":"scatter"' in text


def test_a_ping_is_answered_at_once_even_while_a_job_runs(probe):
    ask(probe, "long", "slow", steps=50, delay=0.02)
    probe.requests.on_message(probe, {"kind": "ping", "id": "ping-1"}, [])
    assert {"kind": "pong", "id": "ping-1"} in [c for c, _ in probe.recorder.sent]
    assert not [c for c in probe.recorder.of("long") if c["kind"] in FINAL]  # still running
    probe.requests.wait(10)
