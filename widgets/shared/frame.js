// The frame of every attnviz widget: a controls row, a status line, a progress bar with a cancel
// button, an error box and a body for the widget's own parts. Two ways to reach the kernel:
// `write(changes)` sets view-state traits (a saved notebook re-renders them) and shows
// "computing…" until the kernel's traits answer; `call(method, args)` is a request
// (./requests.js) with progress, cancel and one reply. Stable data-testid attributes name the
// parts for the browser tests.

import { el, textEl } from "./controls.js";
import { listen } from "./events.js";
import { NO_ANSWER_MS, request } from "./requests.js";
import { CSS } from "./styles.js";

export const NO_ANSWER =
  "no answer from the kernel yet: it may be busy with another cell, or gone (re-run the widget's cell to reconnect)";
export const KERNEL_GONE =
  "The kernel behind this widget is not answering: it is busy running a cell, or it restarted or stopped (then nothing here can be recomputed: run the widget's cell again). The picture is the last one the kernel sent.";
/** The heartbeat: a ping this often while the page is visible... */
export const HEARTBEAT_MS = 2000;
/** ... and the kernel counts as not answering after this long without a pong. */
export const HEARTBEAT_TIMEOUT_MS = 5000;

/**
 * A widget frame. `statusText()` gives the idle status line; `hasData()` says whether a picture
 * is shown (an error then notes that the picture is from the last input that worked);
 * `localError()` adds a front-end problem (say, data it cannot decode) to the error box. The
 * traits `error` and `busy`, when the widget has them, show in the error box and status line.
 * In an exported file (trait __static__) `write` and `call` do nothing and say so.
 */
export function createFrame(model, { testid, controls = [], statusText = () => "", hasData = () => false, localError = () => "" }) {
  const root = el("div", "attnviz", { "data-testid": testid });
  // Keys typed into the widget's boxes are the widget's: JupyterLab reads shortcuts as the event
  // bubbles to the document, so stopping it here keeps Shift+Enter (run the cell, replacing the
  // widget) and command-mode letters out. Ctrl/Cmd/Alt combinations still reach it (Ctrl+S saves).
  root.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName ?? "");
    if (typing && !event.ctrlKey && !event.metaKey && !event.altKey) event.stopPropagation();
  });
  const style = el("style");
  style.textContent = CSS;
  const controlsRow = el("div", "av-controls");
  controlsRow.append(...controls);
  const isStatic = Boolean(model.get("__static__"));
  const status = el("div", "av-status", { "data-testid": "status", "aria-live": "polite" });
  const bar = el("progress", "", { "data-testid": "progress", max: "1" });
  const barText = el("span", "av-progress-text", { "data-testid": "progress-text" });
  const cancel = textEl("button", "av-go", "cancel", { type: "button", "data-testid": "cancel" });
  const progress = el("div", "av-progress", { "data-testid": "progress-box" });
  progress.append(bar, barText, cancel);
  const errorBox = el("div", "av-error", { "data-testid": "error", role: "alert" });
  const goneBox = textEl("div", "av-error", KERNEL_GONE, { "data-testid": "kernel-gone", role: "alert" });
  const body = el("div", "av-body");
  root.append(style, controlsRow, status, progress, goneBox, errorBox, body);
  if (isStatic) root.dataset.static = "true";

  let pending = false; // a trait write sent from here that the kernel has not answered yet
  let stalled = false; // ... and nothing at all came back for NO_ANSWER_MS
  let waiting = null;
  const calls = []; // requests running: { label, controller, stalled, progress }
  let callError = "";

  function heard() {
    clearTimeout(waiting);
    waiting = null;
    stalled = false;
  }

  function busy() {
    return Boolean(model.get("busy")) || pending || calls.length > 0;
  }

  function renderProgress() {
    const call = calls[calls.length - 1];
    progress.style.display = call ? "flex" : "none";
    root.dataset.calls = String(calls.length);
    if (!call) return;
    const { done, total, text } = call.progress ?? {};
    if (typeof total === "number" && total > 0) {
      bar.max = total;
      bar.value = Math.min(total, Number(done) || 0);
    } else {
      bar.removeAttribute("value"); // indeterminate
    }
    const count = typeof total === "number" ? `${done ?? 0}/${total}` : "";
    barText.textContent = [call.label, count, text].filter(Boolean).join(" · ");
  }

  // Heartbeat: a kernel that restarted never answers the old comm again, and JupyterLab leaves
  // the old picture up; a ping every HEARTBEAT_MS (answered at once by attnviz/widgets/
  // requests.py) tells within seconds. A kernel busy with a long cell is silent too: the message
  // says both, and goes away at the next pong.
  let gone = false;
  let lastPong = performance.now();
  let pings = 0;
  const onPong = (msg) => {
    if (msg?.kind !== "pong") return;
    lastPong = performance.now();
    setGone(false);
  };
  function setGone(now) {
    if (now === gone) return;
    gone = now;
    root.dataset.kernel = gone ? "silent" : "live";
    goneBox.style.display = gone ? "block" : "none";
    body.classList.toggle("av-stale", gone || pending);
  }
  if (!isStatic) model.on("msg:custom", onPong);
  const heartbeat = isStatic
    ? null
    : setInterval(() => {
        if (!root.isConnected || document.visibilityState === "hidden") return;
        if (performance.now() - lastPong > HEARTBEAT_TIMEOUT_MS) setGone(true);
        try {
          model.send({ kind: "ping", id: `ping-${(pings += 1)}` });
        } catch {
          setGone(true); // no comm at all
        }
      }, HEARTBEAT_MS);

  function renderStatus() {
    const now = busy();
    const call = calls[calls.length - 1];
    const waitingText = call ? (call.stalled ? NO_ANSWER : `${call.label}…`) : stalled ? NO_ANSWER : "computing…";
    status.textContent = now ? waitingText : statusText();
    status.classList.toggle("av-busy", now);
    root.dataset.busy = String(now);
    body.classList.toggle("av-stale", gone || pending || Boolean(model.get("busy")));
    const message = [model.get("error") ?? "", callError, localError()].filter(Boolean).join("\n");
    errorBox.textContent = message;
    if (message && hasData()) {
      errorBox.append(textEl("span", "av-error-note", "The picture below is from the last input that worked."));
    }
    errorBox.style.display = message ? "block" : "none";
    renderProgress();
  }

  /** Set view-state traits in the kernel and show "computing…" until it answers. */
  function write(changes) {
    if (isStatic) return;
    pending = true;
    heard();
    waiting = setTimeout(() => {
      stalled = pending;
      renderStatus();
    }, NO_ANSWER_MS);
    for (const [name, value] of Object.entries(changes)) model.set(name, value);
    try {
      model.save_changes();
    } catch {
      stalled = true; // no connection to a kernel at all (say, a notebook opened from saved state)
    }
    renderStatus();
  }

  /**
   * Run request `method(args)` with the progress bar and cancel button showing `label`. Resolves
   * with { status: "answer", value } | { status: "error", message } | { status: "cancelled" };
   * an error is also shown in the error box until the next call.
   */
  async function call(method, args = {}, { label = method } = {}) {
    const entry = { label, controller: new AbortController(), stalled: false, progress: null };
    calls.push(entry);
    callError = "";
    renderStatus();
    const done = (outcome) => {
      calls.splice(calls.indexOf(entry), 1);
      if (outcome.status === "error") callError = outcome.message;
      renderStatus();
      return outcome;
    };
    try {
      const value = await request(model, method, args, {
        signal: entry.controller.signal,
        onProgress(p) {
          entry.progress = p;
          renderProgress();
        },
        onStall(on) {
          entry.stalled = on;
          renderStatus();
        },
      });
      return done({ status: "answer", value });
    } catch (err) {
      if (err?.kind === "cancelled") return done({ status: "cancelled" });
      return done({ status: "error", message: err?.message ?? String(err) });
    }
  }

  cancel.addEventListener("click", () => {
    const entry = calls[calls.length - 1];
    if (!entry) return;
    entry.controller.abort();
    barText.textContent = `${entry.label} · cancelling…`;
  });

  const stops = [
    listen(model, {
      "change:error": () => {
        pending = false;
        heard();
        renderStatus();
      },
      "change:busy": () => {
        heard();
        if (!model.get("busy")) pending = false;
        renderStatus();
      },
    }),
  ];

  return {
    root,
    controls: controlsRow,
    body,
    isStatic,
    renderStatus,
    write,
    call,
    /** The kernel answered a trait write with new data. */
    settled() {
      pending = false;
      heard();
    },
    /** Listen to the widget's own trait events too; dispose() stops them with the frame's. */
    listen(more) {
      stops.push(listen(model, more));
    },
    dispose() {
      clearTimeout(waiting);
      clearInterval(heartbeat);
      if (!isStatic) model.off("msg:custom", onPong);
      for (const entry of calls) entry.controller.abort();
      for (const stop of stops) stop();
    },
  };
}
