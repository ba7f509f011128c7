// AttentionView (attnviz/widgets/attention_view.py): every head of one layer at a glance.
//
// Traits read: prompt, layer, layers, head, tokens, patterns ([heads, dest, src] wire array,
// future cells masked), n_heads, downsampled (block size; 1 = one cell per token), window and
// offset (a stretch of a long prompt at full resolution), window_size, error, busy.
// Traits written: prompt (Enter in the text box), layer (the selector), head (a click on a
// thumbnail; drawn at once, nothing is recomputed in the kernel), window (a click on a pooled
// block zooms in; "whole prompt" zooms out).

import {
  batched,
  createCheckbox,
  createFrame,
  createLegend,
  createPanel,
  createTooltip,
  el,
  markThumb,
  renderThumbs,
} from "../shared/dom.js";
import { colorMax, FUTURE_COLOR, panelSource, patternPixels, statusOf } from "../shared/patterns.js";
import { describeCell, formatValue, zoomWindow } from "../shared/tokens.js";

export { colorMax, FUTURE_COLOR, headSlice, patternPixels, statusText } from "../shared/patterns.js";
export {
  axisLabels,
  blockTokens,
  cellAt,
  cellLabel,
  cellSize,
  describeCell,
  displayToken,
  formatValue,
  HEATMAP_PX,
  LABEL_MIN_PX,
  labelStride,
  MAX_CELL_PX,
} from "../shared/tokens.js";

/** Side of a head's thumbnail, in CSS pixels. */
export const THUMB_PX = 72;

function render({ model, el: host }) {
  const source = panelSource(model, "patterns");
  const selectedHead = () => source.head();

  const contrast = createCheckbox(
    "contrast",
    "contrast",
    "scale each head's colours to its largest weight outside the first column, " +
      "so heads that put most attention on the first token show where the rest goes",
  );
  const frame = createFrame(model, {
    testid: "attention-view",
    extraControls: [contrast.node],
    hasData: () => source.decoded !== null,
    localError: () => source.error,
    statusText: () => statusOf(model, selectedHead(), "max-pooled; click a block to zoom in"),
  });
  const { root, body } = frame;
  const thumbs = el("div", "av-thumbs", { "data-testid": "thumbs" });
  const tooltip = createTooltip(root);
  const factor = () => Math.max(1, Number(model.get("downsampled") ?? 1));
  const offset = () => Number(model.get("offset") ?? 0);

  const panel = createPanel({
    testid: "heatmap",
    onHover(cell, event) {
      panel.highlight(cell);
      const { cols } = panel.geometry;
      const value = source.slice("patterns")[cell.row * cols + cell.col];
      tooltip.show(describeCell(model.get("tokens") ?? [], cell.row, cell.col, value, factor(), offset()), event, cell);
    },
    onLeave: hideHover,
    onClick(cell) {
      if (factor() <= 1 || frame.isStatic) return; // only pooled pictures zoom
      const n = (model.get("tokens") ?? []).length;
      frame.request({ window: zoomWindow(cell, factor(), offset(), n, Number(model.get("window_size") ?? 512)) });
    },
  });
  const legend = createLegend({
    title: "attention",
    swatches: [{ color: FUTURE_COLOR, text: "future token (masked)" }],
  });
  const main = el("div", "av-main");
  main.append(panel.node, legend.node);
  body.append(thumbs, main);
  host.replaceChildren(root);

  function hideHover() {
    panel.highlight(null);
    tooltip.hide();
  }

  function renderThumbnails() {
    renderThumbs(thumbs, source.decoded?.shape, {
      slice: (h) => source.slice("patterns", h),
      px: THUMB_PX,
      contrast: contrast.box.checked,
      caption: (h) => `head ${h}`,
      onSelect(h) {
        model.set("head", h);
        model.save_changes();
      },
    });
  }

  function renderHeatmap() {
    const head = selectedHead();
    root.dataset.head = String(head);
    markThumb(thumbs, head);
    if (!source.decoded) {
      panel.clear();
      return;
    }
    const [, rows, cols] = source.decoded.shape;
    const slice = source.slice("patterns");
    const vmax = colorMax(slice, rows, cols, contrast.box.checked);
    panel.draw(() => patternPixels(slice, rows, cols, vmax), rows, cols);
    legend.setRange("0", vmax === 1 ? "1" : formatValue(vmax));
    root.dataset.vmax = String(vmax);
  }

  function renderAll() {
    source.refresh();
    frame.settled();
    root.dataset.nTokens = String((model.get("tokens") ?? []).length);
    renderThumbnails();
    renderHeatmap();
    panel.setLabels(model.get("tokens") ?? [], factor(), offset());
    hideHover();
    frame.renderStatus();
  }

  contrast.box.addEventListener("change", () => {
    renderThumbnails();
    renderHeatmap();
  });

  const scheduleAll = batched(renderAll);
  frame.listen({
    "change:patterns": scheduleAll,
    "change:tokens": scheduleAll,
    "change:downsampled": scheduleAll,
    "change:offset": scheduleAll,
    "change:head": () => {
      hideHover();
      renderHeatmap();
      frame.renderStatus();
    },
  });
  renderAll();

  return frame.dispose;
}

export default { render };
