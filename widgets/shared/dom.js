// The parts every attnviz widget builds its page from: the frame (prompt box, layer selector,
// status line, error box), labelled heatmap panels with hover, head thumbnails, a tooltip and
// a colour legend. Text only ever reaches the page through textContent, `title` and input
// values, never as HTML. Stable data-testid attributes name the parts for the browser tests.

import { drawPixels, divergingColor, scaleColor } from "./heatmap.js";
import { colorMax, patternPixels } from "./patterns.js";
import { axisLabels, cellAt, cellSize, HEATMAP_PX, LABEL_MIN_PX, labelStride } from "./tokens.js";

export const CSS = `
.attnviz { position: relative; font: 12px/1.35 var(--jp-ui-font-family, system-ui, sans-serif);
  color: var(--jp-ui-font-color1, #222); padding: 4px 0; }
.attnviz .av-controls { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin-bottom: 6px; }
.attnviz textarea.av-prompt { flex: 1 1 320px; min-width: 200px; padding: 4px 6px; font: inherit;
  line-height: 1.4; white-space: pre; overflow: auto; resize: vertical; box-sizing: border-box;
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px;
  background: var(--jp-layout-color1, #fff); color: inherit; }
.attnviz select, .attnviz button.av-go { font: inherit; padding: 3px 6px; }
.attnviz .av-status { color: var(--jp-ui-font-color2, #666); margin: 2px 0 6px; min-height: 16px; }
.attnviz .av-status.av-busy { color: #a15c00; font-weight: 600; }
.attnviz .av-note { color: var(--jp-ui-font-color2, #666); font-style: italic; margin: 0 0 6px; }
.attnviz .av-error { display: none; margin: 4px 0 8px; padding: 6px 8px; border: 1px solid #c62828;
  border-left-width: 4px; border-radius: 3px; background: #fdecea; color: #8e1c1c; white-space: pre-wrap; }
.attnviz .av-error-note { display: block; margin-top: 2px; font-size: 11px; color: #6d2a2a; }
.attnviz .av-body { display: flex; gap: 18px; align-items: flex-start; flex-wrap: wrap; }
.attnviz .av-stale { opacity: 0.45; transition: opacity 0.2s; }
.attnviz .av-thumbs { display: grid; gap: 6px; }
.attnviz button.av-thumb { display: flex; flex-direction: column; align-items: center; gap: 2px;
  padding: 3px; border: 2px solid transparent; border-radius: 4px; background: none; cursor: pointer; color: inherit; font: inherit; }
.attnviz button.av-thumb:hover { border-color: var(--jp-border-color1, #ccc); }
.attnviz button.av-thumb[aria-pressed="true"] { border-color: #7a2e6e; background: rgba(122, 46, 110, 0.08); }
.attnviz button.av-thumb canvas { display: block; border: 1px solid var(--jp-border-color2, #ddd); }
.attnviz .av-caption { font-size: 11px; text-align: center; white-space: pre; line-height: 1.25; }
.attnviz .av-panels { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
.attnviz .av-plot { display: grid; grid-template-columns: auto auto; grid-template-rows: auto auto auto; }
.attnviz .av-panel-title { font-weight: 600; padding-bottom: 4px; }
.attnviz .av-axis-title { color: var(--jp-ui-font-color2, #666); font-size: 11px; padding-bottom: 7px; }
.attnviz .av-ylabels, .attnviz .av-xlabels { position: relative; }
.attnviz .av-label { position: absolute; white-space: pre; overflow: hidden;
  font: 11px/1 var(--jp-code-font-family, ui-monospace, "DejaVu Sans Mono", monospace); color: var(--jp-ui-font-color1, #333); }
.attnviz .av-ylabels .av-label { right: 6px; text-align: right; }
.attnviz .av-xlabels .av-label { top: 4px; writing-mode: vertical-rl; transform: rotate(180deg); text-align: end; }
.attnviz .av-label.av-hot { color: #7a2e6e; font-weight: 700; }
.attnviz .av-canvas-wrap { position: relative; line-height: 0; }
.attnviz canvas.av-heatmap { display: block; border: 1px solid var(--jp-border-color2, #ddd); cursor: crosshair; }
.attnviz .av-hover, .attnviz .av-selected { position: absolute; display: none; pointer-events: none; box-sizing: border-box; }
.attnviz .av-hover { outline: 2px solid #1b1b1b; }
.attnviz .av-selected { outline: 2px dashed #0b7a3b; }
.attnviz .av-tooltip { position: absolute; display: none; pointer-events: none; z-index: 10; padding: 5px 7px;
  border-radius: 4px; background: rgba(30, 30, 30, 0.92); color: #fff; white-space: pre;
  font: 11px/1.4 var(--jp-code-font-family, ui-monospace, "DejaVu Sans Mono", monospace); }
.attnviz .av-legend { display: flex; align-items: center; gap: 6px; margin-top: 8px;
  color: var(--jp-ui-font-color2, #666); font-size: 11px; flex-wrap: wrap; }
.attnviz .av-legend canvas { height: 10px; width: 160px; border: 1px solid var(--jp-border-color2, #ddd); }
.attnviz .av-swatch { display: inline-block; width: 10px; height: 10px; border: 1px solid #999; margin-left: 8px; }
.attnviz label.av-check { display: inline-flex; align-items: center; gap: 3px; cursor: pointer; user-select: none; }
.attnviz table.av-table { border-collapse: collapse; font-size: 11.5px; }
.attnviz table.av-table th, .attnviz table.av-table td { padding: 2px 8px; border-bottom: 1px solid var(--jp-border-color2, #e3e3e3); text-align: right; white-space: nowrap; }
.attnviz table.av-table th { color: var(--jp-ui-font-color2, #555); font-weight: 600; }
.attnviz table.av-table td.av-left, .attnviz table.av-table th.av-left { text-align: left; }
.attnviz table.av-table tr.av-total td { font-weight: 700; border-top: 2px solid var(--jp-border-color1, #999); }
.attnviz button.av-feature { font: 11px/1.2 var(--jp-code-font-family, ui-monospace, monospace); padding: 1px 5px; cursor: pointer;
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px; background: var(--jp-layout-color2, #f3f3f3); color: inherit; }
.attnviz button.av-feature[aria-pressed="true"] { background: #7a2e6e; color: #fff; border-color: #7a2e6e; }
.attnviz .av-bar { display: inline-block; height: 9px; vertical-align: middle; }
.attnviz .av-context { font: 12px/1.7 var(--jp-code-font-family, ui-monospace, monospace); white-space: pre-wrap; margin: 2px 0 6px; }
.attnviz .av-context span.av-tok { border-radius: 2px; }
.attnviz .av-context span.av-center { outline: 1.5px solid #1b1b1b; }
`;

/** How long a request may go without any answer before the widget says no kernel answers. */
export const NO_ANSWER_MS = 15_000;
const NO_ANSWER =
  "no answer from the kernel yet: it may be busy with another cell, or gone (re-run the widget's cell to reconnect)";

/** A new element with a class and attributes (attribute values are text). */
export function el(tag, className = "", attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** An element holding `text` as text. */
export function textEl(tag, className, text, attrs = {}) {
  const node = el(tag, className, attrs);
  node.textContent = text;
  return node;
}

/**
 * The frame of a prompt widget: controls (prompt box, Show button, layer selector, a "whole
 * prompt" button while a token window is shown, then `extraControls`), status line, error box
 * and a body for the widget's own parts.
 *
 * It keeps the controls in step with the traits (prompt, layer, layers, error, busy), sends a
 * typed prompt or a chosen layer to the kernel, and shows "computing…" until the kernel answers.
 * In an exported file (trait __static__) the prompt and layer controls are disabled with a note.
 * `statusText()` gives the idle status line; `hasData()` says whether a picture is shown;
 * `localError()` adds a front-end problem (say, data it cannot decode) to the error box.
 */
export function createFrame(model, { testid, extraControls = [], statusText, hasData, localError = () => "" }) {
  const root = el("div", "attnviz", { "data-testid": testid });
  const style = el("style");
  style.textContent = CSS;
  const controls = el("div", "av-controls");
  // A textarea, not an <input>: an input drops the newlines of a multi-line prompt, and the
  // kernel would then see different text. Enter recomputes; Shift+Enter starts a new line.
  const prompt = el("textarea", "av-prompt", {
    rows: "1",
    "data-testid": "prompt",
    "aria-label": "prompt (Enter recomputes, Shift+Enter for a new line)",
    placeholder: "type a prompt and press Enter",
    spellcheck: "false",
  });
  const go = textEl("button", "av-go", "Show", { type: "button", "data-testid": "run" });
  const layerSelect = el("select", "av-layer", { "data-testid": "layer", "aria-label": "layer" });
  const unzoom = textEl("button", "av-go", "whole prompt", {
    type: "button",
    "data-testid": "unzoom",
    title: "leave the token window and show the whole prompt again",
  });
  controls.append(prompt, go, layerSelect, unzoom, ...extraControls);
  const isStatic = Boolean(model.get("__static__"));
  const note = textEl(
    "div",
    "av-note",
    "Exported view: hover and head selection work here; new prompts and layers need the notebook.",
    { "data-testid": "static-note" },
  );
  const status = el("div", "av-status", { "data-testid": "status", "aria-live": "polite" });
  const errorBox = el("div", "av-error", { "data-testid": "error", role: "alert" });
  const body = el("div", "av-body");
  root.append(style, controls, ...(isStatic ? [note] : []), status, errorBox, body);
  if (isStatic) {
    for (const control of [prompt, go, layerSelect, unzoom]) control.disabled = true;
    root.dataset.static = "true";
  }

  let pending = false; // a request sent from here that the kernel has not answered yet
  let stalled = false; // ... and nothing at all came back for NO_ANSWER_MS
  let waiting = null;

  function heard() {
    clearTimeout(waiting);
    waiting = null;
    stalled = false;
  }

  function busy() {
    return Boolean(model.get("busy")) || pending;
  }

  /** One row per line of the prompt, up to six (a long single line scrolls sideways). */
  function fitRows() {
    prompt.rows = Math.min(6, Math.max(1, prompt.value.split("\n").length));
  }
  prompt.addEventListener("input", fitRows);

  function renderControls() {
    const value = model.get("prompt") ?? "";
    if (prompt.value !== value) prompt.value = value;
    fitRows();
    const layers = model.get("layers") ?? [];
    const have = Array.from(layerSelect.options, (o) => Number(o.value));
    if (have.length !== layers.length || have.some((v, i) => v !== layers[i])) {
      layerSelect.replaceChildren(
        ...layers.map((layer) => textEl("option", "", `layer ${layer}`, { value: String(layer) })),
      );
    }
    const layer = Number(model.get("layer"));
    if (layers.includes(layer)) layerSelect.value = String(layer);
    unzoom.style.display = (model.get("window") ?? []).length === 2 ? "" : "none";
  }

  function renderStatus() {
    const now = busy();
    status.textContent = now ? (stalled ? NO_ANSWER : "computing…") : statusText();
    status.classList.toggle("av-busy", now);
    root.dataset.busy = String(now);
    body.classList.toggle("av-stale", now);
    const message = [model.get("error") ?? "", localError()].filter(Boolean).join("\n");
    errorBox.textContent = message;
    if (message && hasData()) {
      errorBox.append(textEl("span", "av-error-note", "The picture below is from the last input that worked."));
    }
    errorBox.style.display = message ? "block" : "none";
  }

  /** Send trait changes to the kernel and show "computing…" until it answers. */
  function request(changes) {
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
    } catch (err) {
      stalled = true; // no connection to a kernel at all (say, a notebook opened from saved state)
    }
    renderStatus();
  }

  function submitPrompt() {
    if (prompt.value !== (model.get("prompt") ?? "")) request({ prompt: prompt.value });
  }
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitPrompt();
    }
  });
  go.addEventListener("click", submitPrompt);
  unzoom.addEventListener("click", () => request({ window: [] }));
  layerSelect.addEventListener("change", () => {
    const layer = Number(layerSelect.value);
    if (layer !== model.get("layer")) request({ layer });
  });

  const handlers = {
    "change:prompt": renderControls,
    "change:layers": renderControls,
    "change:window": () => {
      pending = false;
      heard();
      renderControls();
      renderStatus();
    },
    "change:layer": () => {
      renderControls();
      renderStatus();
    },
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
  };
  const stops = [listen(model, handlers)];
  renderControls();

  return {
    root,
    body,
    renderStatus,
    request,
    isStatic,
    /** The kernel answered with new data. */
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
      for (const stop of stops) stop();
    },
  };
}

/**
 * Calls `render` once after the current burst of change events: the kernel sends related traits
 * in one message, which fires one event each.
 */
export function batched(render) {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      render();
    });
  };
}

/** Listen to `handlers` ({event: fn}) on the model; returns a function that stops listening. */
export function listen(model, handlers) {
  for (const [event, handler] of Object.entries(handlers)) model.on(event, handler);
  return () => {
    for (const [event, handler] of Object.entries(handlers)) model.off(event, handler);
  };
}

/**
 * A labelled heatmap: title, destination labels on the left (when `yLabels`), the canvas with a
 * hover outline and a selection outline, source labels below. Reports hovered and clicked cells.
 */
export function createPanel({ testid = "heatmap", title = "", px = HEATMAP_PX, yLabels = true, onHover, onLeave, onClick }) {
  const node = el("div", "av-panel", { "data-panel": testid });
  const plot = el("div", "av-plot");
  const corner = textEl("div", "av-axis-title", yLabels ? "destination (query) ↓" : "");
  corner.style.textAlign = "right";
  corner.style.paddingRight = "6px";
  const head = el("div");
  if (title) head.append(textEl("div", "av-panel-title", title));
  head.append(textEl("div", "av-axis-title", "source (key) →"));
  const ylabels = el("div", "av-ylabels", { "data-testid": `${testid}-dest-labels` });
  const wrap = el("div", "av-canvas-wrap");
  const canvas = el("canvas", "av-heatmap", { "data-testid": testid });
  const hover = el("div", "av-hover");
  const selected = el("div", "av-selected", { "data-testid": `${testid}-selected` });
  wrap.append(canvas, hover, selected);
  const xlabels = el("div", "av-xlabels", { "data-testid": `${testid}-src-labels` });
  plot.append(corner, head, ylabels, wrap, el("div"), xlabels);
  node.append(plot);

  let geometry = { rows: 0, cols: 0, cellPx: 1, stride: 1 };
  let destLabels = new Map();
  let srcLabels = new Map();
  let hot = null;

  function setHot(map, index, on) {
    const label = map.get(index - (index % geometry.stride));
    if (label) label.classList.toggle("av-hot", on);
  }

  function place(box, cell) {
    if (!cell) {
      box.style.display = "none";
      return;
    }
    const rect = { width: geometry.cols * geometry.cellPx, height: geometry.rows * geometry.cellPx };
    const cw = rect.width / Math.max(1, geometry.cols);
    const ch = rect.height / Math.max(1, geometry.rows);
    Object.assign(box.style, {
      display: "block",
      left: `${cell.col * cw}px`,
      top: `${cell.row * ch}px`,
      width: `${Math.max(cw, 2)}px`,
      height: `${Math.max(ch, 2)}px`,
    });
  }

  const panel = {
    node,
    canvas,
    get geometry() {
      return geometry;
    },
    /** Draw rows x cols pixels from `makePixels()`; labels follow with setLabels. */
    draw(makePixels, rows, cols) {
      const cellPx = cellSize(Math.max(rows, cols), px);
      geometry = { rows, cols, cellPx, stride: labelStride(cellPx) };
      drawPixels(canvas, makePixels, rows, cols, cellPx);
      canvas.dataset.rows = String(rows);
      canvas.dataset.cols = String(cols);
      canvas.dataset.painted = String(performance.now());
    },
    clear() {
      geometry = { rows: 0, cols: 0, cellPx: 1, stride: 1 };
      canvas.width = 0;
      canvas.height = 0;
    },
    setLabels(tokens, factor = 1, offset = 0) {
      const { rows, cols, cellPx, stride } = geometry;
      const lineHeight = Math.max(cellPx, LABEL_MIN_PX);
      const xSpecs = axisLabels(tokens, cols, factor, stride, offset);
      const longest = Math.max(1, ...xSpecs.map((s) => Array.from(s.text).length));
      const xHeight = Math.min(110, 7 * longest + 12);
      ylabels.replaceChildren();
      xlabels.replaceChildren();
      destLabels = new Map();
      srcLabels = new Map();
      ylabels.style.height = `${Math.round(rows * cellPx)}px`;
      ylabels.style.width = yLabels ? "130px" : "0px";
      xlabels.style.width = `${Math.round(cols * cellPx)}px`;
      xlabels.style.height = `${xHeight}px`;
      if (yLabels) {
        for (const spec of axisLabels(tokens, rows, factor, stride, offset)) {
          const label = textEl("div", "av-label", spec.text, {
            "data-testid": "token-label",
            "data-axis": "dest",
            "data-index": String(spec.index),
          });
          label.title = spec.title;
          label.style.top = `${spec.index * cellPx + cellPx / 2 - lineHeight / 2}px`;
          label.style.lineHeight = `${lineHeight}px`;
          label.style.maxWidth = "124px";
          ylabels.append(label);
          destLabels.set(spec.index, label);
        }
      }
      for (const spec of xSpecs) {
        const label = textEl("div", "av-label", spec.text, {
          "data-testid": "token-label",
          "data-axis": "src",
          "data-index": String(spec.index),
        });
        label.title = spec.title;
        label.style.left = `${spec.index * cellPx + cellPx / 2 - lineHeight / 2}px`;
        label.style.width = `${lineHeight}px`;
        label.style.lineHeight = `${lineHeight}px`;
        label.style.height = `${xHeight - 4}px`;
        xlabels.append(label);
        srcLabels.set(spec.index, label);
      }
    },
    /** The cell under a mouse event, or null. */
    cellOf(event) {
      const rect = canvas.getBoundingClientRect();
      const { rows, cols } = geometry;
      return cellAt(event.clientX - rect.left, event.clientY - rect.top, rect.width, rect.height, rows, cols);
    },
    /** Outline `cell` (null: none) and bold its labels. */
    highlight(cell) {
      if (hot) {
        setHot(destLabels, hot.row, false);
        setHot(srcLabels, hot.col, false);
      }
      hot = cell;
      if (cell) {
        setHot(destLabels, cell.row, true);
        setHot(srcLabels, cell.col, true);
      }
      place(hover, cell);
    },
    /** Mark the selected cell (null: none) with a dashed outline. */
    select(cell) {
      place(selected, cell);
    },
  };

  canvas.addEventListener("mousemove", (event) => {
    const cell = panel.cellOf(event);
    if (cell) onHover?.(cell, event);
    else onLeave?.();
  });
  canvas.addEventListener("mouseleave", () => onLeave?.());
  canvas.addEventListener("click", (event) => {
    const cell = panel.cellOf(event);
    if (cell) onClick?.(cell, event);
  });
  return panel;
}

/** A tooltip inside `root` that follows the mouse; `show(lines, event)` and `hide()`. */
export function createTooltip(root) {
  const tip = el("div", "av-tooltip", { "data-testid": "tooltip", role: "tooltip" });
  root.append(tip);
  return {
    node: tip,
    show(lines, event, data = {}) {
      tip.textContent = lines.join("\n");
      for (const [k, v] of Object.entries(data)) tip.dataset[k] = String(v);
      tip.style.display = "block";
      const box = root.getBoundingClientRect();
      let left = event.clientX - box.left + 14;
      const top = event.clientY - box.top + 14;
      const width = tip.offsetWidth;
      if (left + width > box.width) left = Math.max(0, event.clientX - box.left - width - 14);
      tip.style.left = `${left}px`;
      tip.style.top = `${top}px`;
    },
    hide() {
      tip.style.display = "none";
    },
  };
}

/**
 * One button per head of a decoded [heads, rows, cols] pattern (`shape`; null: none), each a
 * `px`-pixel picture of `slice(h)` (scaled by colorMax, `contrast` as the widgets' checkbox)
 * with the caption `caption(h)`; `onSelect(h)` on click.
 */
export function renderThumbs(container, shape, { slice, px, contrast = false, caption, onSelect }) {
  container.replaceChildren();
  if (!shape) return;
  const [heads, rows, cols] = shape;
  container.style.gridTemplateColumns = `repeat(${Math.min(heads, Math.ceil(Math.sqrt(heads)))}, auto)`;
  for (let h = 0; h < heads; h++) {
    const button = el("button", "av-thumb", { type: "button", "data-testid": `thumb-${h}`, "data-head": String(h) });
    button.title = `head ${h}`;
    const canvas = el("canvas");
    const values = slice(h);
    const vmax = colorMax(values, rows, cols, contrast);
    drawPixels(canvas, () => patternPixels(values, rows, cols, vmax), rows, cols, px / Math.max(rows, cols, 1));
    button.append(canvas, textEl("span", "av-caption", caption(h)));
    button.addEventListener("click", () => onSelect(h));
    container.append(button);
  }
}

/** Press the thumbnail of head `h` (aria-pressed) and release the others. */
export function markThumb(container, h) {
  for (const button of container.children) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.head) === h));
  }
}

/**
 * A colour legend: title, low end, a bar of the scale ("sequential" or "diverging"), high end,
 * then optional swatches [{ color: [r, g, b], text }]. Returns { node, setRange(lo, hi) }.
 */
export function createLegend({ title, scale = "sequential", lo = "0", hi = "1", swatches = [] }) {
  const node = el("div", "av-legend");
  const bar = el("canvas");
  const w = 160;
  bar.width = w;
  bar.height = 1;
  const ctx = bar.getContext("2d");
  if (ctx !== null) {
    const img = ctx.createImageData(w, 1);
    for (let i = 0; i < w; i++) {
      const [r, g, b] = scale === "diverging" ? divergingColor(i / (w - 1)) : scaleColor(i / (w - 1));
      img.data.set([r, g, b, 255], i * 4);
    }
    ctx.putImageData(img, 0, 0);
  }
  const loText = textEl("span", "", lo);
  const hiText = textEl("span", "", hi);
  node.append(textEl("span", "", title), loText, bar, hiText);
  for (const { color, text } of swatches) {
    const swatch = el("span", "av-swatch");
    swatch.style.background = `rgb(${color.join(", ")})`;
    node.append(swatch, textEl("span", "", text));
  }
  return {
    node,
    setRange(low, high) {
      loText.textContent = low;
      hiText.textContent = high;
    },
  };
}

/** A labelled checkbox: { node, box }. */
export function createCheckbox(text, testid, title = "") {
  const node = el("label", "av-check", title ? { title } : {});
  const box = el("input", "", { type: "checkbox", "data-testid": testid });
  node.append(box, textEl("span", "", text));
  return { node, box };
}
