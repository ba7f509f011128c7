// PatternExplorer (attnviz/widgets/pattern_explorer.py): the model's attention pattern beside its
// QK-dictionary reconstructions, for the selected head, with every head's KL in the thumbnails.
//
// Traits read: prompt, layer, layers, head, tokens, downsampled, error, busy, dictionary,
// has_masked, kl ({transcoder, masked, bias: [per head]}), panels ({true, transcoder,
// masked, diff_transcoder, diff_masked}: [heads, dest, src] wire arrays, future cells masked).
// Also window/offset/window_size (a stretch of a long prompt at full resolution).
// Traits written: prompt, layer (recomputed in the kernel), head (front-end only), window (a
// click on a pooled block zooms in; "whole prompt" zooms out; no model run, the kernel keeps
// the full patterns).

import { el, fillSelect, textEl } from "../shared/controls.js";
import { formatSigned } from "../shared/format.js";
import { createLegend, createPanel, Y_LABELS_PX } from "../shared/panel.js";
import { absMax, differencePixels, FUTURE_COLOR, formatKl, patternPixels, thumbCaption, thumbTitle } from "../shared/patterns.js";
import { createPromptView } from "../shared/prompt_view.js";
import { scaleNumber, scaleRange } from "../shared/scales.js";
import { markThumb, renderThumbs } from "../shared/thumbs.js";
import { cellTokens } from "../shared/tokens.js";

export { decodePanels, formatKl, thumbCaption } from "../shared/patterns.js";

/** Side of a head's thumbnail, in CSS pixels. */
export const THUMB_PX = 64;
/** Longest side of each of the four heatmaps, in CSS pixels, at most... */
export const PANEL_PX = 300;
/** ... and at least, before the panels go two (then one) to a row. */
export const MIN_PANEL_PX = 220;
const GAP_PX = 14;

/**
 * How the panels fit an output `width` px wide: { perRow, px }. Four to a row where each gets
 * MIN_PANEL_PX, else two, else one; each row's first panel also carries the destination labels.
 */
export function panelLayout(width, count = 4) {
  for (const perRow of [4, 2, 1]) {
    if (perRow > count && perRow > 1) continue;
    const px = Math.floor((width - Y_LABELS_PX - GAP_PX * (perRow - 1) - 8) / perRow);
    if (px >= MIN_PANEL_PX || perRow === 1) return { perRow, px: Math.max(120, Math.min(perRow === 1 ? 480 : PANEL_PX + 40 * (4 - perRow), px)) };
  }
  return { perRow: 1, px: 120 };
}

/** The panels' order: four to a row as PANELS; fewer, the model beside (or above) the difference. */
export function panelOrder(perRow) {
  return perRow >= 4 ? ["true", "transcoder", "masked", "diff"] : ["true", "diff", "transcoder", "masked"];
}

/** The panels drawn, in order: [trait key, title]. The difference's key follows the selector. */
export const PANELS = [
  ["true", "model"],
  ["transcoder", "transcoder q̂·k̂"],
  ["masked", "masked pair map"],
  ["diff", "difference"],
];

/**
 * The tooltip of a cell: its two tokens and the three values on the colour `scale` (and the
 * difference of weights shown).
 */
export function describeCells(tokens, row, col, values, factor = 1, diffOf = "transcoder", offset = 0, scale = "weights") {
  const lines = cellTokens(tokens, row, col, factor, offset);
  if (Number.isNaN(values.true)) return [...lines, "masked: a token never sees later tokens"];
  const suffix = factor > 1 ? `   (max over a ${factor}×${factor} block)` : "";
  if (scale !== "weights") lines.push(scaleRange(scale).title);
  lines.push(`model       ${scaleNumber(scale, values.true)}${suffix}`);
  lines.push(`transcoder  ${scaleNumber(scale, values.transcoder)}`);
  if (values.masked !== undefined) lines.push(`masked map  ${scaleNumber(scale, values.masked)}`);
  if (values.diff !== undefined) lines.push(`${diffOf} − model  ${formatSigned(values.diff)}${scale === "weights" ? "" : " (of the weights)"}`);
  return lines;
}

function render({ model, el: host }) {
  const diffSelect = el("select", "av-diff", { "data-testid": "diff-of", "aria-label": "difference of" });
  const view = createPromptView(model, {
    testid: "pattern-explorer",
    controls: [textEl("span", "", "difference:"), diffSelect],
    scales: true,
    dataTraits: ["kl", "has_masked", "masked_pending"],
  });
  const { root, body, source, tooltip } = view;
  const about = el("div", "av-note", { "data-testid": "dictionary" });
  root.insertBefore(about, body);

  const thumbs = el("div", "av-thumbs", { "data-testid": "thumbs" });
  const klLine = el("div", "av-axis-title", { "data-testid": "kl-line" });
  const row = el("div", "av-panels");
  const panels = {};
  for (const [key, title] of PANELS) {
    panels[key] = createPanel({
      testid: `panel-${key}`,
      title,
      px: PANEL_PX,
      yLabels: true,
      onHover: (cell, event) => hover(cell, event),
      onLeave: hideHover,
      onClick: view.zoom,
    });
    row.append(panels[key].node);
  }
  panels.diff.canvas.classList.add("av-hatched"); // masked cells are transparent there
  const legendAttention = createLegend({
    title: "attention",
    swatches: [{ color: FUTURE_COLOR, text: "future token (masked)" }],
  });
  const legendDiff = createLegend({ title: "difference", scale: "diverging", lo: "−", hi: "+", swatches: [{ hatched: true, text: "future (masked)" }] });
  const legends = el("div", "av-controls");
  legends.append(legendAttention.node, legendDiff.node);
  const main = el("div", "av-main");
  main.append(klLine, row, legends);
  body.append(thumbs, main);
  body.style.flexDirection = "column"; // the thumbnails as a strip above the panels
  host.replaceChildren(root);

  let shape = { perRow: 0, px: 0, width: 0 };
  /** Fit the panels to the output's width: order, size, which carry destination labels. */
  function layout() {
    const width = Math.round(root.getBoundingClientRect().width) || 968;
    const shown = PANELS.filter(([key]) => key !== "masked" || model.get("has_masked")).length;
    const { perRow, px } = panelLayout(width, shown);
    const changed = perRow !== shape.perRow || px !== shape.px;
    shape = { perRow, px, width };
    const order = panelOrder(perRow).filter((key) => key !== "masked" || model.get("has_masked"));
    row.replaceChildren(...order.map((key) => panels[key].node));
    row.style.display = "grid";
    row.style.gridTemplateColumns = `repeat(${perRow}, auto)`;
    row.style.justifyContent = "start";
    order.forEach((key, i) => panels[key].layout(px, i % perRow === 0));
    const heads = source.decoded?.shape[0] ?? Number(model.get("n_heads") ?? 9);
    const thumbPx = thumbs.firstElementChild?.getBoundingClientRect().width || THUMB_PX + 12;
    const perLine = Math.max(1, Math.min(heads, Math.floor(width / (thumbPx + 6))));
    thumbs.style.gridTemplateColumns = `repeat(${perLine}, auto)`;
    root.dataset.perRow = String(perRow);
    root.dataset.panelPx = String(px);
    return changed;
  }

  const diffOf = () => (diffSelect.value === "masked" && model.get("has_masked") ? "masked" : "transcoder");

  function slice(key, h = view.head()) {
    return source.slice(key === "diff" ? `diff_${diffOf()}` : key, h);
  }

  function renderControls() {
    const want = model.get("has_masked") ? ["transcoder", "masked"] : ["transcoder"];
    const keep = diffSelect.value;
    fillSelect(diffSelect, want.map((k) => [k, `${k === "masked" ? "masked map" : k} − model`]), keep);
    about.textContent = model.get("dictionary") ?? "";
  }

  function renderThumbnails() {
    const kl = model.get("kl") ?? {};
    renderThumbs(thumbs, source.decoded?.shape, {
      slice: (h) => slice("true", h),
      px: THUMB_PX,
      scale: view.scale().name,
      caption: (h) => thumbCaption(h, kl),
      title: (h) => thumbTitle(h, kl),
      onSelect: view.selectHead,
    });
  }

  function renderPanels() {
    const decoded = source.decoded;
    const head = view.head();
    root.dataset.head = String(head);
    markThumb(thumbs, head);
    const kl = model.get("kl") ?? {};
    const masked = kl.masked ? ` · KL(model ‖ masked map) ${formatKl(kl.masked[head])}` : "";
    // What the kept pairs improve on: the map with no pair at all.
    const bias = kl.bias ? ` · bias terms alone ${formatKl(kl.bias[head])}` : "";
    klLine.textContent = decoded
      ? `head ${head}: KL(model ‖ transcoder) ${formatKl(kl.transcoder?.[head])}${masked}${bias}  (mean over destination rows, nats)`
      : "";
    if (!decoded) {
      for (const panel of Object.values(panels)) panel.clear();
      return;
    }
    const [, rows, cols] = decoded.shape;
    const range = view.scale();
    for (const [key] of PANELS) {
      const panel = panels[key];
      const s = slice(key);
      // The masked map follows the rest of a new prompt: its panels wait visibly in place.
      const waiting = !s && Boolean(model.get("masked_pending")) && (key === "masked" || (key === "diff" && diffOf() === "masked"));
      panel.node.style.display = s || waiting ? "" : "none";
      panel.node.dataset.pending = String(waiting);
      if (waiting) panel.clear();
      if (!s) continue;
      if (key === "diff") {
        const bound = absMax(s) || 1;
        panel.draw(() => differencePixels(s, rows, cols, bound), rows, cols);
        legendDiff.setRange(formatSigned(-bound), formatSigned(bound));
      } else {
        panel.draw(() => patternPixels(s, rows, cols, range.vmax, range.vmin), rows, cols);
      }
    }
    legendAttention.setScale(range);
    root.dataset.painted = String(performance.now());
  }

  function renderLabels() {
    for (const panel of Object.values(panels)) if (source.decoded) panel.setLabels(view.tokens(), view.factor(), view.offset());
  }

  function hover(cell, event) {
    if (!source.decoded) return;
    const cols = source.decoded.shape[2];
    const i = cell.row * cols + cell.col;
    const values = {};
    for (const key of ["true", "transcoder", "masked", "diff"]) {
      const s = slice(key);
      if (s) values[key] = s[i];
    }
    for (const panel of Object.values(panels)) panel.highlight(cell);
    const diffName = diffOf() === "masked" ? "masked map" : "transcoder";
    const lines = describeCells(view.tokens(), cell.row, cell.col, values, view.factor(), diffName, view.offset(), view.scale().name);
    tooltip.show(lines, event, cell);
  }

  function hideHover() {
    for (const panel of Object.values(panels)) panel.highlight(null);
    tooltip.hide();
  }

  diffSelect.addEventListener("change", renderPanels);
  view.frame.listen({ "change:dictionary": renderControls });
  // Re-fit when the output's width changes (a side panel opened, the window resized).
  const resize = new ResizeObserver(() => {
    if (Math.abs(Math.round(root.getBoundingClientRect().width) - shape.width) < 1) return;
    if (layout()) {
      renderPanels();
      renderLabels();
    }
  });
  resize.observe(root);
  view.start({
    all() {
      renderControls();
      renderThumbnails();
      layout();
      renderPanels();
      renderLabels();
      hideHover();
    },
    head() {
      hideHover();
      renderPanels();
    },
  });
  return () => {
    resize.disconnect();
    view.dispose();
  };
}

export default { render };
