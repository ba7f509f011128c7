// AttentionView (attnviz/widgets/attention_view.py): every head of one layer at a glance.
//
// Traits read: prompt, layer, head, tokens, patterns ([heads, dest, src] wire array, future
// cells masked), n_layers, n_heads, downsampled (block size; 1 = one cell per token), error,
// busy. Traits written: prompt (Enter in the text box), layer (the selector), head (a click
// on a thumbnail; drawn at once, nothing is recomputed in the kernel).
//
// Safety: token text and messages only ever reach the page through textContent, `title`
// and input values, never as HTML, so a prompt like "<img src=x onerror=...>" shows as text.
// Stable data-testid attributes name the parts for the browser tests.
//
// The helpers exported above `render` are pure (no DOM) and are tested by node --test.

import { decodeArray } from "../shared/arrays.js";
import { colorize, drawPixels, scaleColor } from "../shared/heatmap.js";

/** Longest side of the large heatmap, in CSS pixels. */
export const HEATMAP_PX = 480;
/** Largest cell of the large heatmap (short prompts), in CSS pixels. */
export const MAX_CELL_PX = 26;
/** Side of a head's thumbnail, in CSS pixels. */
export const THUMB_PX = 72;
/** Labels are at least this far apart; denser axes label every k-th token. */
export const LABEL_MIN_PX = 13;

/**
 * RGB of future cells (masked: a token never attends to later ones). Quieter than the shared
 * MASK_COLOR because it fills half of every causal picture; still off the colour scale.
 */
export const FUTURE_COLOR = [222, 227, 235];

/**
 * RGBA pixels of a rows x cols pattern: the shared colour scale from 0 to `vmax`,
 * FUTURE_COLOR where a cell is NaN (masked).
 */
export function patternPixels(data, rows, cols, vmax = 1) {
  const pixels = colorize(data, rows, cols, { vmin: 0, vmax });
  for (let i = 0, n = rows * cols; i < n; i++) {
    if (data[i] !== data[i]) pixels.set(FUTURE_COLOR, i * 4);
  }
  return pixels;
}

/**
 * The top of the colour scale for one head: 1 (weights are probabilities), or with
 * `skipFirst` the largest weight outside the first column, so that heads that park most of
 * their attention on the first token (an "attention sink") still show where the rest goes.
 */
export function colorMax(slice, rows, cols, skipFirst = false) {
  if (!skipFirst) return 1;
  let max = 0;
  for (let i = 0; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const v = slice[i * cols + j];
      if (v > max) max = v;
    }
  }
  return max > 0 ? max : 1;
}

/** Token text made visible: newlines and tabs as symbols, cut to `maxChars` with an ellipsis. */
export function displayToken(token, maxChars = 14) {
  let s = String(token ?? "")
    .replace(/\r\n|\r|\n/g, "↵")
    .replace(/\t/g, "⇥");
  if (s.length === 0) return "∅";
  if (s.trim().length === 0) s = s.replace(/ /g, "·");
  const chars = Array.from(s); // code points, not UTF-16 halves
  return chars.length > maxChars ? `${chars.slice(0, maxChars - 1).join("")}…` : s;
}

/** The rows x cols slice of head `h` of a decoded [heads, rows, cols] array (a view). */
export function headSlice(data, shape, h) {
  if (shape.length !== 3) throw new RangeError(`attention view: expected [heads, dest, src], got [${shape.join(", ")}]`);
  const [heads, rows, cols] = shape;
  if (!(h >= 0 && h < heads)) throw new RangeError(`attention view: head ${h} is not in 0-${heads - 1}`);
  return data.subarray(h * rows * cols, (h + 1) * rows * cols);
}

/** CSS pixels per cell of an n x n heatmap: whole pixels when cells are big, else fractional. */
export function cellSize(n, maxPx = HEATMAP_PX, maxCell = MAX_CELL_PX) {
  if (n <= 0) return maxCell;
  const px = Math.min(maxCell, maxPx / n);
  return px >= 4 ? Math.floor(px) : px;
}

/** Label every `stride`-th cell so that labels sit at least `minPx` apart. */
export function labelStride(cellPx, minPx = LABEL_MIN_PX) {
  return Math.max(1, Math.ceil(minPx / cellPx - 1e-9));
}

/** The cell under a point (x, y) of a width x height box drawn as rows x cols; null outside. */
export function cellAt(x, y, width, height, rows, cols) {
  if (!(width > 0 && height > 0) || x < 0 || y < 0 || x >= width || y >= height) return null;
  const row = Math.min(rows - 1, Math.floor((y / height) * rows));
  const col = Math.min(cols - 1, Math.floor((x / width) * cols));
  return row >= 0 && col >= 0 ? { row, col } : null;
}

/** Tokens [start, end) covered by cell `index` when cells are blocks of `factor` tokens. */
export function blockTokens(index, factor, nTokens) {
  const start = index * factor;
  return { start, end: Math.min(nTokens, start + factor) };
}

/**
 * Label text and full title of cell `index` of an axis. When not every token gets a label
 * (pooled blocks, or `sparse`: only every k-th cell is labelled) the text starts with the
 * token's position, so the reader knows where on the axis they are.
 */
export function cellLabel(tokens, index, factor = 1, sparse = false) {
  const { start, end } = blockTokens(index, factor, tokens.length);
  if (factor <= 1) {
    const text = sparse ? `${index}: ${displayToken(tokens[index], 10)}` : displayToken(tokens[index]);
    return { text, title: `${index}: ${tokens[index] ?? ""}` };
  }
  const joined = tokens.slice(start, end).join("");
  const title = `${start}–${end - 1}: ${joined.length > 200 ? `${joined.slice(0, 199)}…` : joined}`;
  return { text: `${start}: ${displayToken(tokens[start], 8)}`, title };
}

/** The labelled cells of an axis of `nCells` cells: [{ index, text, title }]. */
export function axisLabels(tokens, nCells, factor = 1, stride = 1) {
  const out = [];
  for (let i = 0; i < nCells; i += stride) out.push({ index: i, ...cellLabel(tokens, i, factor, stride > 1) });
  return out;
}

/** An attention weight as text: three decimals, or "<0.001" for tiny non-zero weights. */
export function formatValue(v) {
  if (v !== v) return "masked";
  if (v > 0 && v < 0.0005) return "<0.001";
  return v.toFixed(3);
}

function positionText(index, factor, nTokens) {
  if (factor <= 1) return `${index}`;
  const { start, end } = blockTokens(index, factor, nTokens);
  return `${start}–${end - 1}`;
}

/**
 * The tooltip of a cell: three lines (destination token, source token, value). Destination
 * is the row (the query, the token that attends), source the column (the key).
 */
export function describeCell(tokens, row, col, value, factor = 1) {
  const quote = (i) => {
    const { start, end } = blockTokens(i, factor, tokens.length);
    const text = `"${displayToken(tokens[start], 24)}"`;
    return end - start > 1 ? `${text} …` : text;
  };
  const n = tokens.length;
  const masked = value !== value;
  return [
    `destination ${positionText(row, factor, n)}: ${quote(row)}`,
    `source ${positionText(col, factor, n)}: ${quote(col)}`,
    masked
      ? "masked: a token never sees later tokens"
      : `attention ${formatValue(value)}${factor > 1 ? ` (max over a ${factor}×${factor} block)` : ""}`,
  ];
}

/** The status line under the controls for the current traits. */
export function statusText({ busy, nTokens, layer, head, downsampled }) {
  if (busy) return "computing…";
  const parts = [`layer ${layer}`, `head ${head}`, `${nTokens} token${nTokens === 1 ? "" : "s"}`];
  if (downsampled > 1) parts.push(`shown in ${downsampled}×${downsampled} blocks (max-pooled)`);
  return parts.join(" · ");
}

// ---- DOM ---------------------------------------------------------------------------------

const CSS = `
.attnviz-av { position: relative; font: 12px/1.35 var(--jp-ui-font-family, system-ui, sans-serif);
  color: var(--jp-ui-font-color1, #222); padding: 4px 0; }
.attnviz-av .av-controls { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin-bottom: 6px; }
.attnviz-av input.av-prompt { flex: 1 1 320px; min-width: 200px; padding: 4px 6px; font: inherit;
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px;
  background: var(--jp-layout-color1, #fff); color: inherit; }
.attnviz-av select, .attnviz-av button.av-go { font: inherit; padding: 3px 6px; }
.attnviz-av .av-status { color: var(--jp-ui-font-color2, #666); margin: 2px 0 6px; min-height: 16px; }
.attnviz-av .av-status.av-busy { color: #a15c00; font-weight: 600; }
.attnviz-av .av-error { display: none; margin: 4px 0 8px; padding: 6px 8px; border: 1px solid #c62828;
  border-left-width: 4px; border-radius: 3px; background: #fdecea; color: #8e1c1c; white-space: pre-wrap; }
.attnviz-av .av-body { display: flex; gap: 18px; align-items: flex-start; flex-wrap: wrap; }
.attnviz-av .av-body.av-stale { opacity: 0.45; transition: opacity 0.2s; }
.attnviz-av .av-thumbs { display: grid; gap: 6px; }
.attnviz-av button.av-thumb { display: flex; flex-direction: column; align-items: center; gap: 2px;
  padding: 3px; border: 2px solid transparent; border-radius: 4px; background: none; cursor: pointer; color: inherit; font: inherit; }
.attnviz-av button.av-thumb:hover { border-color: var(--jp-border-color1, #ccc); }
.attnviz-av button.av-thumb[aria-pressed="true"] { border-color: #7a2e6e; background: rgba(122, 46, 110, 0.08); }
.attnviz-av button.av-thumb canvas { display: block; border: 1px solid var(--jp-border-color2, #ddd); }
.attnviz-av .av-plot { display: grid; grid-template-columns: auto auto; grid-template-rows: auto auto auto; }
.attnviz-av .av-axis-title { color: var(--jp-ui-font-color2, #666); font-size: 11px; padding-bottom: 7px; }
.attnviz-av .av-ylabels, .attnviz-av .av-xlabels { position: relative; }
.attnviz-av .av-label { position: absolute; white-space: pre; overflow: hidden;
  font: 11px/1 var(--jp-code-font-family, ui-monospace, "DejaVu Sans Mono", monospace); color: var(--jp-ui-font-color1, #333); }
.attnviz-av .av-ylabels .av-label { right: 6px; text-align: right; }
.attnviz-av .av-xlabels .av-label { top: 4px; writing-mode: vertical-rl; transform: rotate(180deg); text-align: end; }
.attnviz-av .av-label.av-hot { color: #7a2e6e; font-weight: 700; }
.attnviz-av .av-canvas-wrap { position: relative; line-height: 0; }
.attnviz-av canvas.av-heatmap { display: block; border: 1px solid var(--jp-border-color2, #ddd); cursor: crosshair; }
.attnviz-av .av-hover { position: absolute; display: none; pointer-events: none; box-sizing: border-box;
  outline: 2px solid #1b1b1b; }
.attnviz-av .av-tooltip { position: absolute; display: none; pointer-events: none; z-index: 10; padding: 5px 7px;
  border-radius: 4px; background: rgba(30, 30, 30, 0.92); color: #fff; white-space: pre;
  font: 11px/1.4 var(--jp-code-font-family, ui-monospace, "DejaVu Sans Mono", monospace); }
.attnviz-av .av-legend { display: flex; align-items: center; gap: 6px; margin-top: 8px;
  color: var(--jp-ui-font-color2, #666); font-size: 11px; }
.attnviz-av .av-legend canvas { height: 10px; width: 160px; border: 1px solid var(--jp-border-color2, #ddd); }
.attnviz-av .av-swatch { display: inline-block; width: 10px; height: 10px; border: 1px solid #999; margin-left: 8px; }
.attnviz-av label.av-contrast { display: inline-flex; align-items: center; gap: 3px; cursor: pointer; user-select: none; }
.attnviz-av .av-error-note { display: block; margin-top: 2px; font-size: 11px; color: #6d2a2a; }
`;

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** Draw a pattern with one canvas pixel per cell, cellPx CSS pixels a cell, crisp when scaled. */
function drawPattern(canvas, slice, rows, cols, cellPx, vmax) {
  drawPixels(canvas, () => patternPixels(slice, rows, cols, vmax), rows, cols, cellPx);
}

function drawLegend(canvas) {
  const w = 160;
  canvas.width = w;
  canvas.height = 1;
  const ctx = canvas.getContext("2d");
  if (ctx === null) return;
  const img = ctx.createImageData(w, 1);
  for (let i = 0; i < w; i++) {
    const [r, g, b] = scaleColor(i / (w - 1));
    img.data.set([r, g, b, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

function render({ model, el: host }) {
  const root = el("div", "attnviz-av", { "data-testid": "attention-view" });
  const style = el("style");
  style.textContent = CSS;

  const controls = el("div", "av-controls");
  const prompt = el("input", "av-prompt", {
    type: "text",
    "data-testid": "prompt",
    "aria-label": "prompt (Enter recomputes)",
    placeholder: "type a prompt and press Enter",
    spellcheck: "false",
  });
  const go = el("button", "av-go", { type: "button", "data-testid": "run" });
  go.textContent = "Show";
  const layerSelect = el("select", "av-layer", { "data-testid": "layer", "aria-label": "layer" });
  const contrast = el("label", "av-contrast", {
    title: "scale each head's colours to its largest weight outside the first column, " +
      "so heads that put most attention on the first token show where the rest goes",
  });
  const contrastBox = el("input", "", { type: "checkbox", "data-testid": "contrast" });
  const contrastText = el("span");
  contrastText.textContent = "contrast";
  contrast.append(contrastBox, contrastText);
  controls.append(prompt, go, layerSelect, contrast);

  const status = el("div", "av-status", { "data-testid": "status", "aria-live": "polite" });
  const errorBox = el("div", "av-error", { "data-testid": "error", role: "alert" });

  const body = el("div", "av-body");
  const thumbs = el("div", "av-thumbs", { "data-testid": "thumbs" });
  const plot = el("div", "av-plot");
  const corner = el("div", "av-axis-title");
  const colTitle = el("div", "av-axis-title");
  colTitle.textContent = "source (key) →";
  const ylabels = el("div", "av-ylabels", { "data-testid": "dest-labels" });
  const wrap = el("div", "av-canvas-wrap");
  const heatmap = el("canvas", "av-heatmap", { "data-testid": "heatmap" });
  const hover = el("div", "av-hover");
  wrap.append(heatmap, hover);
  const spacer = el("div");
  const xlabels = el("div", "av-xlabels", { "data-testid": "src-labels" });
  corner.textContent = "destination (query) ↓";
  corner.style.textAlign = "right";
  corner.style.paddingRight = "6px";
  plot.append(corner, colTitle, ylabels, wrap, spacer, xlabels);

  const legend = el("div", "av-legend");
  const legendBar = el("canvas");
  drawLegend(legendBar);
  const lo = el("span");
  lo.textContent = "0";
  const hi = el("span");
  hi.textContent = "1";
  const swatch = el("span", "av-swatch");
  swatch.style.background = `rgb(${FUTURE_COLOR.join(", ")})`;
  const maskText = el("span");
  maskText.textContent = "future token (masked)";
  const scaleTitle = el("span");
  scaleTitle.textContent = "attention";
  legend.append(scaleTitle, lo, legendBar, hi, swatch, maskText);

  const main = el("div", "av-main");
  main.append(plot, legend);
  body.append(thumbs, main);

  const tooltip = el("div", "av-tooltip", { "data-testid": "tooltip", role: "tooltip" });
  root.append(style, controls, status, errorBox, body, tooltip);
  host.replaceChildren(root);

  // ---- state derived from the traits ----
  let decoded = null; // { data, shape } of the current patterns
  let decodedFrom = null; // the trait value it was decoded from
  let decodeError = "";
  let pending = false; // a request sent from here that the kernel has not answered yet
  let geometry = { rows: 0, cols: 0, cellPx: MAX_CELL_PX, stride: 1 };
  let destLabels = new Map(); // cell index -> label element
  let srcLabels = new Map();

  function ensureDecoded() {
    const message = model.get("patterns");
    if (message === decodedFrom) return;
    decodedFrom = message;
    decoded = null;
    decodeError = "";
    if (!message || !message.shape) return;
    try {
      const { data, shape } = decodeArray(message);
      if (shape.length !== 3) throw new RangeError(`expected [heads, dest, src], got [${shape.join(", ")}]`);
      decoded = { data, shape };
    } catch (err) {
      decodeError = `attnviz: cannot show these patterns: ${err.message}`;
    }
  }

  function selectedHead() {
    const heads = decoded ? decoded.shape[0] : model.get("n_heads");
    const h = Number(model.get("head") ?? 0);
    return Math.min(Math.max(0, h), Math.max(0, heads - 1));
  }

  function renderControls() {
    const value = model.get("prompt") ?? "";
    if (prompt.value !== value) prompt.value = value;
    const n = Number(model.get("n_layers") ?? 0);
    if (layerSelect.options.length !== n) {
      layerSelect.replaceChildren();
      for (let i = 0; i < n; i++) {
        const option = el("option", "", { value: String(i) });
        option.textContent = `layer ${i}`;
        layerSelect.append(option);
      }
    }
    const layer = Number(model.get("layer"));
    if (layer >= 0 && layer < n) layerSelect.value = String(layer);
  }

  function renderStatus() {
    const busy = Boolean(model.get("busy")) || pending;
    const tokens = model.get("tokens") ?? [];
    status.textContent = statusText({
      busy,
      nTokens: tokens.length,
      layer: model.get("layer"),
      head: selectedHead(),
      downsampled: Number(model.get("downsampled") ?? 1),
    });
    status.classList.toggle("av-busy", busy);
    root.dataset.busy = String(busy);
    body.classList.toggle("av-stale", busy);
    const message = [model.get("error") ?? "", decodeError].filter(Boolean).join("\n");
    errorBox.textContent = message;
    if (message && decoded) {
      const note = el("span", "av-error-note");
      note.textContent = "The picture below is from the last prompt and layer that worked.";
      errorBox.append(note);
    }
    errorBox.style.display = message ? "block" : "none";
  }

  function renderThumbs() {
    thumbs.replaceChildren();
    if (!decoded) return;
    const [heads, rows, cols] = decoded.shape;
    thumbs.style.gridTemplateColumns = `repeat(${Math.min(heads, Math.ceil(Math.sqrt(heads)))}, auto)`;
    for (let h = 0; h < heads; h++) {
      const button = el("button", "av-thumb", { type: "button", "data-testid": `thumb-${h}`, "data-head": String(h) });
      button.title = `head ${h}`;
      const canvas = el("canvas");
      const slice = headSlice(decoded.data, decoded.shape, h);
      const vmax = colorMax(slice, rows, cols, contrastBox.checked);
      drawPattern(canvas, slice, rows, cols, THUMB_PX / Math.max(rows, cols, 1), vmax);
      const caption = el("span");
      caption.textContent = `head ${h}`;
      button.append(canvas, caption);
      button.addEventListener("click", () => {
        model.set("head", h);
        model.save_changes();
      });
      thumbs.append(button);
    }
  }

  function renderAxes() {
    const tokens = model.get("tokens") ?? [];
    const factor = Math.max(1, Number(model.get("downsampled") ?? 1));
    const { rows, cols, cellPx, stride } = geometry;
    const lineHeight = Math.max(cellPx, LABEL_MIN_PX);
    const ySpecs = axisLabels(tokens, rows, factor, stride);
    const xSpecs = axisLabels(tokens, cols, factor, stride);
    const longest = Math.max(1, ...xSpecs.map((s) => Array.from(s.text).length));
    ylabels.replaceChildren();
    xlabels.replaceChildren();
    destLabels = new Map();
    srcLabels = new Map();
    ylabels.style.height = `${Math.round(rows * cellPx)}px`;
    ylabels.style.width = "130px";
    xlabels.style.width = `${Math.round(cols * cellPx)}px`;
    xlabels.style.height = `${Math.min(110, 7 * longest + 12)}px`;
    for (const spec of ySpecs) {
      const label = el("div", "av-label", { "data-testid": "token-label", "data-axis": "dest", "data-index": String(spec.index) });
      label.textContent = spec.text;
      label.title = spec.title;
      label.style.top = `${spec.index * cellPx + cellPx / 2 - lineHeight / 2}px`;
      label.style.lineHeight = `${lineHeight}px`;
      label.style.maxWidth = "124px";
      ylabels.append(label);
      destLabels.set(spec.index, label);
    }
    for (const spec of xSpecs) {
      const label = el("div", "av-label", { "data-testid": "token-label", "data-axis": "src", "data-index": String(spec.index) });
      label.textContent = spec.text;
      label.title = spec.title;
      label.style.left = `${spec.index * cellPx + cellPx / 2 - lineHeight / 2}px`;
      label.style.width = `${lineHeight}px`;
      label.style.lineHeight = `${lineHeight}px`;
      label.style.height = `${Math.min(110, 7 * longest + 12) - 4}px`;
      xlabels.append(label);
      srcLabels.set(spec.index, label);
    }
  }

  function renderHeatmap() {
    root.dataset.head = String(selectedHead());
    for (const button of thumbs.children) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.head) === selectedHead()));
    }
    if (!decoded) {
      heatmap.width = 0;
      heatmap.height = 0;
      return;
    }
    const [, rows, cols] = decoded.shape;
    const cellPx = cellSize(Math.max(rows, cols));
    const stride = labelStride(cellPx);
    geometry = { rows, cols, cellPx, stride };
    const slice = headSlice(decoded.data, decoded.shape, selectedHead());
    const vmax = colorMax(slice, rows, cols, contrastBox.checked);
    drawPattern(heatmap, slice, rows, cols, cellPx, vmax);
    hi.textContent = vmax === 1 ? "1" : formatValue(vmax);
    root.dataset.vmax = String(vmax);
  }

  function renderAll() {
    ensureDecoded();
    root.dataset.nTokens = String((model.get("tokens") ?? []).length);
    renderThumbs();
    renderHeatmap();
    renderAxes();
    hideHover();
    renderStatus();
  }

  // ---- hover ----
  function setHot(map, index, on) {
    const label = map.get(index - (index % geometry.stride));
    if (label) label.classList.toggle("av-hot", on);
  }

  let hot = null;
  function hideHover() {
    if (hot) {
      setHot(destLabels, hot.row, false);
      setHot(srcLabels, hot.col, false);
    }
    hot = null;
    hover.style.display = "none";
    tooltip.style.display = "none";
  }

  function onMove(event) {
    if (!decoded) return;
    const rect = heatmap.getBoundingClientRect();
    const { rows, cols } = geometry;
    const cell = cellAt(event.clientX - rect.left, event.clientY - rect.top, rect.width, rect.height, rows, cols);
    if (!cell) {
      hideHover();
      return;
    }
    if (hot) {
      setHot(destLabels, hot.row, false);
      setHot(srcLabels, hot.col, false);
    }
    hot = cell;
    setHot(destLabels, cell.row, true);
    setHot(srcLabels, cell.col, true);
    const cw = rect.width / cols;
    const ch = rect.height / rows;
    Object.assign(hover.style, {
      display: "block",
      left: `${cell.col * cw}px`,
      top: `${cell.row * ch}px`,
      width: `${Math.max(cw, 2)}px`,
      height: `${Math.max(ch, 2)}px`,
    });
    const slice = headSlice(decoded.data, decoded.shape, selectedHead());
    const value = slice[cell.row * cols + cell.col];
    const lines = describeCell(model.get("tokens") ?? [], cell.row, cell.col, value, Number(model.get("downsampled") ?? 1));
    tooltip.textContent = lines.join("\n");
    tooltip.dataset.row = String(cell.row);
    tooltip.dataset.col = String(cell.col);
    tooltip.style.display = "block";
    const box = root.getBoundingClientRect();
    let left = event.clientX - box.left + 14;
    const top = event.clientY - box.top + 14;
    const width = tooltip.offsetWidth;
    if (left + width > box.width) left = Math.max(0, event.clientX - box.left - width - 14);
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${top}px`;
  }

  heatmap.addEventListener("mousemove", onMove);
  heatmap.addEventListener("mouseleave", hideHover);

  // ---- input ----
  function submitPrompt() {
    const value = prompt.value;
    if (value === (model.get("prompt") ?? "")) return;
    pending = true;
    model.set("prompt", value);
    model.save_changes();
    renderStatus();
  }
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.isComposing) {
      event.preventDefault();
      submitPrompt();
    }
  });
  go.addEventListener("click", submitPrompt);
  contrastBox.addEventListener("change", () => {
    renderThumbs();
    renderHeatmap();
  });
  layerSelect.addEventListener("change", () => {
    const layer = Number(layerSelect.value);
    if (layer === model.get("layer")) return;
    pending = true;
    model.set("layer", layer);
    model.save_changes();
    renderStatus();
  });

  // ---- trait changes ----
  // The kernel sends tokens, patterns and downsampled in one message, which fires one change
  // event each: draw once, after the last of them.
  let scheduled = false;
  function scheduleAll() {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      renderAll();
    });
  }
  const handlers = {
    "change:patterns": scheduleAll,
    "change:tokens": scheduleAll,
    "change:downsampled": scheduleAll,
    "change:head": () => {
      hideHover();
      renderHeatmap();
      renderStatus();
    },
    "change:prompt": renderControls,
    "change:layer": () => {
      renderControls();
      renderStatus();
    },
    "change:n_layers": renderControls,
    "change:error": () => {
      pending = false;
      renderStatus();
    },
    "change:busy": () => {
      if (!model.get("busy")) pending = false;
      renderStatus();
    },
  };
  for (const [event, handler] of Object.entries(handlers)) model.on(event, handler);
  renderControls();
  renderAll();

  return () => {
    for (const [event, handler] of Object.entries(handlers)) model.off(event, handler);
  };
}

export default { render };
