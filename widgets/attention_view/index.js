// AttentionView (attnviz/widgets/attention_view.py): every head of one layer at a glance.
//
// Traits read: prompt, layer, layers, head, tokens, patterns ([heads, dest, src] wire array,
// future cells masked), n_heads, downsampled (block size; 1 = one cell per token), window and
// offset (a stretch of a long prompt at full resolution), window_size, error, busy.
// Traits written: prompt (Enter in the text box), layer (the selector), head (a click on a
// thumbnail; drawn at once, nothing is recomputed in the kernel), window (a click on a pooled
// block zooms in; "whole prompt" zooms out).

import { el } from "../shared/controls.js";
import { createLegend, createPanel } from "../shared/panel.js";
import { FUTURE_COLOR, patternPixels } from "../shared/patterns.js";
import { createPromptView } from "../shared/prompt_view.js";
import { markThumb, renderThumbs } from "../shared/thumbs.js";
import { createTokenText } from "../shared/token_text.js";
import { describeCell } from "../shared/tokens.js";

export { FUTURE_COLOR, headSlice, patternPixels, statusText } from "../shared/patterns.js";
export { scaleRange, scaleValueText, sinkNote } from "../shared/scales.js";
export { tokenShades } from "../shared/token_text.js";
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
  const view = createPromptView(model, {
    testid: "attention-view",
    trait: "patterns",
    scales: true,
  });
  const { root, body, source, tooltip } = view;
  const thumbs = el("div", "av-thumbs", { "data-testid": "thumbs" });

  const panel = createPanel({
    testid: "heatmap",
    onHover(cell, event) {
      panel.highlight(cell);
      const { cols } = panel.geometry;
      const value = source.slice("patterns")[cell.row * cols + cell.col];
      tooltip.show(describeCell(view.tokens(), cell.row, cell.col, value, view.factor(), view.offset(), view.scale().name), event, cell);
    },
    onLeave: hideHover,
    onClick: view.zoom,
  });
  const legend = createLegend({
    title: "attention",
    swatches: [{ color: FUTURE_COLOR, text: "future token (masked)" }],
  });
  const tokenText = createTokenText();
  const main = el("div", "av-main");
  main.append(panel.node, legend.node, tokenText.node);
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
      scale: view.scale().name,
      caption: (h) => `head ${h}`,
      onSelect: view.selectHead,
    });
  }

  function renderHeatmap() {
    const head = view.head();
    root.dataset.head = String(head);
    markThumb(thumbs, head);
    if (!source.decoded) {
      panel.clear();
      return;
    }
    const [, rows, cols] = source.decoded.shape;
    const slice = source.slice("patterns");
    const range = view.scale();
    panel.draw(() => patternPixels(slice, rows, cols, range.vmax, range.vmin), rows, cols);
    legend.setScale(range);
    tokenText.render({ tokens: view.tokens(), slice, factor: view.factor(), offset: view.offset(), range, scale: range.name });
  }

  view.start({
    all() {
      renderThumbnails();
      renderHeatmap();
      panel.setLabels(view.tokens(), view.factor(), view.offset());
      panel.highlight(null);
    },
    head() {
      panel.highlight(null);
      renderHeatmap();
    },
  });
  return view.dispose;
}

export default { render };
