// Heatmap panels: a labelled heatmap with hover and selection outlines, a tooltip that follows
// the mouse and a colour legend. Token text reaches the page only through textContent and
// `title`.

import { el, textEl } from "./controls.js";
import { divergingColor, drawPixels, scaleColor } from "./heatmap.js";
import { axisLabels, cellAt, cellLabel, cellSize, HEATMAP_PX, labelFontPx, labelStride } from "./tokens.js";

/** Width of the destination-label column, in CSS pixels. */
export const Y_LABELS_PX = 130;

/**
 * A labelled heatmap: title, destination labels on the left (when `yLabels`), the canvas with a
 * hover outline and a selection outline, source labels below. Reports hovered and clicked cells.
 * Up to LABEL_ALL_UP_TO tokens every token has its label (the panel scrolls sideways when that
 * makes it wider than the output); beyond, every k-th, and the hovered row and column get a
 * floating label of their own.
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
  let size = px;
  let showY = yLabels;
  let destLabels = new Map();
  let srcLabels = new Map();
  let hot = null;
  let axis = { tokens: [], factor: 1, offset: 0 };
  const floatDest = el("div", "av-label av-float", { "data-testid": `${testid}-hover-dest` });
  const floatSrc = el("div", "av-label av-float", { "data-testid": `${testid}-hover-src` });

  /** On a thinned axis, the hovered row's / column's own label, over the others. */
  function floatLabel(box, index, isDest) {
    const labelled = index % geometry.stride === 0;
    if (index === null || geometry.stride <= 1 || labelled) {
      box.style.display = "none";
      return;
    }
    const { cellPx } = geometry;
    const font = labelFontPx(cellPx);
    box.textContent = cellLabel(axis.tokens, index, axis.factor, true, axis.offset).text;
    box.style.display = "block";
    box.style.fontSize = `${font}px`;
    box.style.lineHeight = `${font + 2}px`;
    if (isDest) box.style.top = `${index * cellPx + cellPx / 2 - (font + 2) / 2}px`;
    else {
      box.style.left = `${index * cellPx + cellPx / 2 - (font + 2) / 2}px`;
      box.style.width = `${font + 2}px`;
    }
  }

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
      const cellPx = cellSize(Math.max(rows, cols), size, undefined, true);
      geometry = { rows, cols, cellPx, stride: labelStride(cellPx) };
      drawPixels(canvas, makePixels, rows, cols, cellPx);
      canvas.dataset.rows = String(rows);
      canvas.dataset.cols = String(cols);
      canvas.dataset.painted = String(performance.now());
    },
    /** The longest side in CSS pixels, and whether destination labels show (both: redraw after). */
    layout(longest, withYLabels) {
      size = longest;
      showY = withYLabels;
      corner.textContent = showY ? "destination (query) ↓" : "";
    },
    clear() {
      geometry = { rows: 0, cols: 0, cellPx: 1, stride: 1 };
      canvas.width = 0;
      canvas.height = 0;
    },
    setLabels(tokens, factor = 1, offset = 0) {
      const { rows, cols, cellPx, stride } = geometry;
      axis = { tokens, factor, offset };
      const font = labelFontPx(cellPx);
      const lineHeight = Math.max(cellPx, font);
      const xSpecs = axisLabels(tokens, cols, factor, stride, offset);
      const longest = Math.max(1, ...xSpecs.map((s) => Array.from(s.text).length));
      const xHeight = Math.min(110, 7 * longest + 12);
      ylabels.replaceChildren(floatDest);
      xlabels.replaceChildren(floatSrc);
      floatDest.style.display = "none";
      floatSrc.style.display = "none";
      floatSrc.style.height = `${xHeight - 4}px`;
      destLabels = new Map();
      srcLabels = new Map();
      ylabels.style.height = `${Math.round(rows * cellPx)}px`;
      ylabels.style.width = showY ? `${Y_LABELS_PX}px` : "0px";
      xlabels.style.width = `${Math.round(cols * cellPx)}px`;
      xlabels.style.height = `${xHeight}px`;
      if (showY) {
        for (const spec of axisLabels(tokens, rows, factor, stride, offset)) {
          const label = textEl("div", "av-label", spec.text, {
            "data-testid": "token-label",
            "data-axis": "dest",
            "data-index": String(spec.index),
          });
          label.title = spec.title;
          label.style.top = `${spec.index * cellPx + cellPx / 2 - lineHeight / 2}px`;
          label.style.lineHeight = `${lineHeight}px`;
          label.style.fontSize = `${font}px`;
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
        label.style.fontSize = `${font}px`;
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
      if (showY) floatLabel(floatDest, cell ? cell.row : null, true);
      floatLabel(floatSrc, cell ? cell.col : null, false);
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
 * A colour legend: title, low end, a bar of the scale ("sequential" or "diverging"), high end,
 * then optional swatches [{ color: [r, g, b] or hatched: true, text }]. Returns { node, setRange(lo, hi),
 * setScale(range) }.
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
  for (const { color, hatched = false, text } of swatches) {
    const swatch = el("span", hatched ? "av-swatch av-hatched" : "av-swatch");
    if (!hatched) swatch.style.background = `rgb(${color.join(", ")})`;
    node.append(swatch, textEl("span", "", text));
  }
  const titleText = node.firstChild;
  return {
    node,
    setRange(low, high) {
      loText.textContent = low;
      hiText.textContent = high;
    },
    /** Title and ends of a pattern scale (scales.js scaleRange). */
    setScale({ title: text, lo: low, hi: high }) {
      titleText.textContent = text;
      loText.textContent = low;
      hiText.textContent = high;
    },
  };
}
