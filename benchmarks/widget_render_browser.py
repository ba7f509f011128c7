"""The browser half of benchmarks/widget_render.py: head switches in exported files, new
prompts drawn by a live widget, and the same end to end in a real JupyterLab (Debian chromium
through Playwright)."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attnviz.widgets.attention_view import AttentionView
from attnviz.widgets.export import widget_state
from attnviz.widgets.pattern_explorer import PatternExplorer

REPO = Path(__file__).resolve().parent.parent
LAYER = 3
GOAL_HEAD_SWITCH_MS = 100.0
GOAL_NEW_PROMPT_S = 2.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new"]

# name: (class, root test id, the canvas whose data-painted marks a drawn head)
WIDGETS = {
    "AttentionView": (AttentionView, "attention-view", '[data-testid="heatmap"]'),
    "PatternExplorer": (PatternExplorer, "pattern-explorer", '[data-testid="pattern-explorer"]'),
}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


FRAME_JS = "() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)))"

HEAD_SWITCH_JS = """
async ({ root, canvas, rounds, heads }) => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const r = document.querySelector(`[data-testid="${root}"]`);
  const painted = () => Number(r.matches(canvas) ? r.dataset.painted : r.querySelector(canvas).dataset.painted);
  const out = [];
  let head = Number(r.dataset.head ?? 0);
  for (let i = 0; i < rounds + 2; i++) {  // the first two warm the JIT up, not recorded
    head = (head + 1) % heads;
    const button = r.querySelector(`button[data-testid="thumb-${head}"]`);
    await frame();
    const t0 = performance.now();
    button.click();
    const t1 = performance.now();
    await frame();
    const t2 = performance.now();
    if (!(painted() >= t0) || r.dataset.head !== String(head)) throw new Error(`head ${head} was not drawn`);
    if (i >= 2) out.push({ frame_ms: t2 - t0, handler_ms: t1 - t0 });
  }
  return out;
}
"""

# Mount a second, live copy of the exported widget from the file's own bundles, then give it
# new traits as the kernel would (all at once) and time decoding and drawing up to the frame.
NEW_DATA_JS = """
async ({ root, canvas, states }) => {
  const read = (id) => JSON.parse(document.getElementById(id).textContent);
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const load = (id) => import(URL.createObjectURL(new Blob([bytes(read(id))], { type: "text/javascript" })));
  const [host, widget] = await Promise.all([load("attnviz-host"), load("attnviz-widget")]);
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const el = document.createElement("div");
  document.body.append(el);
  const model = host.mount(widget.default, read("attnviz-state"), el);
  const r = el.querySelector(`[data-testid="${root}"]`);
  const painted = () => Number(r.matches(canvas) ? r.dataset.painted : r.querySelector(canvas).dataset.painted);
  await frame();
  const out = [];
  for (const state of states) {
    const traits = host.reviveState(state);  // binary buffers as the notebook delivers them
    await frame();
    const t0 = performance.now();
    for (const [name, value] of Object.entries(traits)) model.set(name, value);
    await frame();
    const t1 = performance.now();
    if (!(painted() >= t0) || r.dataset.nTokens !== String(state.tokens.length)) throw new Error("not drawn");
    out.push({ frame_ms: t1 - t0, drawn_ms: painted() - t0 });
  }
  el.remove();
  return out;
}
"""


def open_export(page: Any, widget: Any, path: Path, root: str, canvas: str) -> float:
    """Load the widget's HTML export; ms from navigation start to the first drawn head."""
    widget.to_html(path)
    page.goto(path.as_uri(), wait_until="domcontentloaded")
    sel = f'[data-testid="{root}"]' + ("" if canvas.endswith(f'"{root}"]') else f" {canvas}")
    page.wait_for_selector(f"{sel}[data-painted]", state="attached", timeout=120_000)
    return float(page.locator(sel).first.get_attribute("data-painted"))


def head_switch_row(page: Any, name: str, widget: Any, tmp: Path, rounds: int) -> dict:
    _, root, canvas = WIDGETS[name]
    n = len(widget.tokens)
    open_ms = open_export(page, widget, tmp / f"{name}_{n}.html", root, canvas)
    times = page.evaluate(
        HEAD_SWITCH_JS, {"root": root, "canvas": canvas, "rounds": rounds, "heads": widget.n_heads}
    )
    frame = [t["frame_ms"] for t in times]
    handler = [t["handler_ms"] for t in times]
    row = {
        "widget": name,
        "n_tokens": n,
        "downsampled": widget.downsampled,
        "switches": len(times),
        "click_to_frame_ms_median": statistics.median(frame),
        "click_to_frame_ms_p90": pct(frame, 0.9),
        "click_to_frame_ms_max": max(frame),
        "click_handler_ms_median": statistics.median(handler),
        "export_open_to_drawn_ms": open_ms,
        "export_html_bytes": (tmp / f"{name}_{n}.html").stat().st_size,
        "pass": pct(frame, 0.9) <= GOAL_HEAD_SWITCH_MS,
    }
    print(
        f"  {name:>15} {n:>5} tokens: click to frame median {row['click_to_frame_ms_median']:6.1f} "
        f"ms, p90 {row['click_to_frame_ms_p90']:6.1f} ms (handler {row['click_handler_ms_median']:5.1f}"
        f" ms); export opens drawn in {open_ms:6.0f} ms  [{'pass' if row['pass'] else 'FAIL'}]",
        flush=True,
    )
    return row


# ---- 3. new prompt -----------------------------------------------------------------------------


def zoom_row(name: str, widget: Any, size: int = 512) -> dict:
    """Kernel time of showing a `size`-token window of a long prompt at full resolution (from
    the patterns the widget keeps; the model does not run)."""
    n = len(widget.tokens)
    times = []
    for k in range(3):
        start = n // 4 + 64 * k
        began = time.perf_counter()
        widget.window = [start, start + size]
        times.append(time.perf_counter() - began)
        assert widget.error == "" and widget.downsampled == 1 and widget.offset == start
    widget.window = []
    row = {
        "widget": name,
        "n_tokens": n,
        "window": size,
        "kernel_s_median": statistics.median(times),
    }
    print(f"  {name:<16} {n:>5} tokens: a {size}-token window in {row['kernel_s_median']:.2f} s")
    return row


def kernel_times(widget: Any, texts: list[str]) -> list[float]:
    times = []
    for text in texts:
        start = time.perf_counter()
        widget.prompt = text
        times.append(time.perf_counter() - start)
        assert not widget.error, widget.error
    return times


def new_prompt_row(
    page: Any, name: str, model: Any, first: str, texts: list[str], tmp: Path
) -> dict:
    cls, root, canvas = WIDGETS[name]
    widget = cls(model, first, layer=LAYER)
    widget.prompt = texts[-1]  # warm-up
    kernel = kernel_times(widget, texts)
    states = []
    for text in texts:  # the same traits again, captured for the browser
        widget.prompt = text
        states.append(widget_state(widget))
    widget.prompt = first
    open_ms = open_export(page, widget, tmp / f"{name}_new.html", root, canvas)
    draws = page.evaluate(NEW_DATA_JS, {"root": root, "canvas": canvas, "states": states})
    render = [d["frame_ms"] / 1000 for d in draws]
    total = statistics.median(kernel) + statistics.median(render)
    row = {
        "widget": name,
        "n_tokens": len(widget.tokens),
        "prompts": len(texts),
        "kernel_s_median": statistics.median(kernel),
        "kernel_s_max": max(kernel),
        "render_s_median": statistics.median(render),
        "render_s_max": max(render),
        "drawn_s_median": statistics.median(d["drawn_ms"] / 1000 for d in draws),
        "export_open_to_drawn_s": open_ms / 1000,
        "kernel_plus_render_s": total,
        "pass": total <= GOAL_NEW_PROMPT_S,
    }
    print(
        f"  {name:>15} {row['n_tokens']:>5} tokens: kernel {row['kernel_s_median'] * 1000:6.0f} ms "
        f"(max {row['kernel_s_max'] * 1000:.0f}), decode+draw to frame "
        f"{row['render_s_median'] * 1000:5.0f} ms => {total:.2f} s  "
        f"[{'pass' if row['pass'] else 'FAIL'}]",
        flush=True,
    )
    return row


# ---- 3b. end to end in JupyterLab --------------------------------------------------------------

LAB_CELL = (
    "import attnviz\n"
    "from attnviz.widgets.attention_view import AttentionView\n"
    "from attnviz.widgets.pattern_explorer import PatternExplorer\n"
    "model = attnviz.load_model()\n"
    "first = {first!r}\n"
    "display(AttentionView(model, first, layer={layer}))\n"
    "display(PatternExplorer(model, first, layer={layer}))\n"
)

LAB_DONE_JS = """
({ root, canvas, n, t0 }) => {
  const r = document.querySelector(`[data-testid="${root}"]`);
  if (!r || r.dataset.busy !== "false" || r.dataset.nTokens !== String(n)) return false;
  const c = r.matches(canvas) ? r : r.querySelector(canvas);
  return c && Number(c.dataset.painted) > t0;
}
"""


@contextlib.contextmanager
def jupyterlab() -> Iterator[Any]:
    """A JupyterLab server in a temp dir (tests/browser/lab.py, as the browser tests start it)."""
    sys.path.insert(0, str(REPO))
    from tests.browser.lab import running_lab

    with tempfile.TemporaryDirectory(prefix="attnviz-lab-") as tmp, running_lab(Path(tmp)) as lab:
        yield lab


GOAL_LIVE_HEAD_SWITCH_MS = 50.0


def live_head_switch_rows(page: Any, long_text: str, n_long: int, rounds: int) -> list[dict]:
    """In the live JupyterLab page: each widget shown a `n_long`-token prompt, then `rounds`
    thumbnail clicks timed to the next presented frame (as head_switch_row on an export)."""
    rows = []
    for name, (_, root, canvas) in WIDGETS.items():
        box = page.locator(f'[data-testid="{root}"] [data-testid="prompt"]')
        box.fill(long_text)
        t0 = page.evaluate("performance.now()")
        box.press("Enter")
        page.wait_for_function(
            LAB_DONE_JS, arg={"root": root, "canvas": canvas, "n": n_long, "t0": t0},
            timeout=180_000, polling="raf",
        )  # fmt: skip
        times = page.evaluate(
            HEAD_SWITCH_JS, {"root": root, "canvas": canvas, "rounds": rounds, "heads": 9}
        )
        frame = [t["frame_ms"] for t in times]
        row = {"widget": name, "n_tokens": n_long, "switches": len(frame),
               "click_to_frame_ms_median": statistics.median(frame),
               "click_to_frame_ms_p90": pct(frame, 0.9), "load_average": os.getloadavg()[0],
               "pass": pct(frame, 0.9) <= GOAL_LIVE_HEAD_SWITCH_MS}  # fmt: skip
        rows.append(row)
        print(f"  {name:>15} {n_long:>5} tokens, live in JupyterLab: head switch median "
              f"{row['click_to_frame_ms_median']:.1f} ms, p90 {row['click_to_frame_ms_p90']:.1f} ms "
              f"(load {row['load_average']:.1f})  [{'pass' if row['pass'] else 'FAIL'}]", flush=True)  # fmt: skip
    return rows


def lab_rows(browser: Any, first: str, texts: list[str], n: int,
             long: tuple[str, int] | None = None, rounds: int = 20) -> list[dict]:  # fmt: skip
    """New prompts end to end in JupyterLab (rows with "enter_to_drawn_s_median"); with `long`
    (text, its tokens), also head switches live at that length (rows with "live": True)."""
    with jupyterlab() as lab:
        from tests.browser.lab import open_and_run  # importable once jupyterlab() set the path

        lab.write_notebook("bench.ipynb", [LAB_CELL.format(first=first, layer=LAYER)])
        context = browser.new_context(viewport={"width": 1600, "height": 1200})
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.dismiss())
        try:
            start = time.perf_counter()
            open_and_run(lab, page, "bench.ipynb")
            for name in WIDGETS:
                _, root, canvas = WIDGETS[name]
                page.wait_for_function(
                    LAB_DONE_JS, arg={"root": root, "canvas": canvas, "n": n, "t0": 0},
                    timeout=240_000,
                )  # fmt: skip
            print(f"  notebook run, both widgets drawn in {time.perf_counter() - start:.0f} s")
            rows = []
            for name in WIDGETS:
                _, root, canvas = WIDGETS[name]
                box = page.locator(f'[data-testid="{root}"] [data-testid="prompt"]')
                walls = []
                for text in [texts[-1], *texts]:  # the first is a warm-up
                    box.fill(text)
                    t0 = page.evaluate("performance.now()")
                    start = time.perf_counter()
                    box.press("Enter")
                    try:
                        page.wait_for_function(
                            LAB_DONE_JS, arg={"root": root, "canvas": canvas, "n": n, "t0": t0},
                            timeout=60_000, polling="raf",
                        )  # fmt: skip
                    except Exception:
                        seen = page.locator(f'[data-testid="{root}"]').first.evaluate(
                            "r => JSON.stringify(r.dataset)"
                        )
                        raise RuntimeError(
                            f"{name} did not draw the new prompt in 60 s; its root: {seen}"
                        ) from None
                    walls.append(time.perf_counter() - start)
                walls = walls[1:]
                row = {
                    "widget": name,
                    "n_tokens": n,
                    "prompts": len(walls),
                    "enter_to_drawn_s_median": statistics.median(walls),
                    "enter_to_drawn_s_max": max(walls),
                    "pass": statistics.median(walls) <= GOAL_NEW_PROMPT_S,
                }
                rows.append(row)
                print(
                    f"  {name:>15} {n:>5} tokens: Enter to drawn in JupyterLab "
                    f"{row['enter_to_drawn_s_median'] * 1000:6.0f} ms median "
                    f"(max {row['enter_to_drawn_s_max'] * 1000:.0f})  "
                    f"[{'pass' if row['pass'] else 'FAIL'}]",
                    flush=True,
                )
            if long is not None:
                rows += [{**r, "live": True} for r in live_head_switch_rows(page, *long, rounds)]
            return rows
        finally:
            context.close()
