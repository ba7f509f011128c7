// PatternExplorer (attnviz/widgets/pattern_explorer.py): the model's attention pattern beside its
// QK-dictionary reconstructions, for the selected head, with every head's KL in the thumbnails.
//
// Traits read: prompt, layer, layers, head, tokens, downsampled, error, busy, dictionary,
// has_masked, kl ({transcoder: [per head], masked: [per head]}), panels ({true, transcoder,
// masked, diff_transcoder, diff_masked}: [heads, dest, src] wire arrays, future cells masked).
// Also window/offset/window_size (a stretch of a long prompt at full resolution).
// Traits written: prompt, layer (recomputed in the kernel), head (front-end only), window (a
// click on a pooled block zooms in; "whole prompt" zooms out; no model run, the kernel keeps
// the full patterns).

import { el, fillSelect, textEl } from "../shared/controls.js";
import { formatSigned, formatValue } from "../shared/format.js";
import { createLegend, createPanel } from "../shared/panel.js";
import { absMax, colorMax, differencePixels, FUTURE_COLOR, formatKl, patternPixels, thumbCaption } from "../shared/patterns.js";
import { createPromptView } from "../shared/prompt_view.js";
import { markThumb, renderThumbs } from "../shared/thumbs.js";
import { cellTokens } from "../shared/tokens.js";

export { decodePanels, formatKl, thumbCaption } from "../shared/patterns.js";

/** Side of a head's thumbnail, in CSS pixels. */
export const THUMB_PX = 64;
/** Longest side of each of the four heatmaps, in CSS pixels. */
export const PANEL_PX = 300;

/** The panels drawn, in order: [trait key, title]. The difference's key follows the selector. */
export const PANELS = [
  ["true", "model"],
  ["transcoder", "transcoder q̂·k̂"],
  ["masked", "masked pair map"],
  ["diff", "difference"],
];

/** The tooltip of a cell: its two tokens and the three values (and the difference shown). */
export function describeCells(tokens, row, col, values, factor = 1, diffOf = "transcoder", offset = 0) {
  const lines = cellTokens(tokens, row, col, factor, offset);
  if (Number.isNaN(values.true)) return [...lines, "masked: a token never sees later tokens"];
  const suffix = factor > 1 ? `   (max over a ${factor}×${factor} block)` : "";
  lines.push(`model       ${formatValue(values.true)}${suffix}`);
  lines.push(`transcoder  ${formatValue(values.transcoder)}`);
  if (values.masked !== undefined) lines.push(`masked map  ${formatValue(values.masked)}`);
  if (values.diff !== undefined) lines.push(`${diffOf} − model  ${formatSigned(values.diff)}`);
  return lines;
}

function render({ model, el: host }) {
  const diffSelect = el("select", "av-diff", { "data-testid": "diff-of", "aria-label": "difference of" });
  const view = createPromptView(model, {
    testid: "pattern-explorer",
    controls: [textEl("span", "", "difference:"), diffSelect],
    contrast: "scale colours to the largest weight outside the first column",
    dataTraits: ["kl", "has_masked"],
  });
  const { root, body, source, tooltip } = view;
  const contrast = view.contrast.box;
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
      yLabels: key === "true",
      onHover: (cell, event) => hover(cell, event),
      onLeave: hideHover,
      onClick: view.zoom,
    });
    row.append(panels[key].node);
  }
  const legendAttention = createLegend({
    title: "attention",
    swatches: [{ color: FUTURE_COLOR, text: "future token (masked)" }],
  });
  const legendDiff = createLegend({ title: "difference", scale: "diverging", lo: "−", hi: "+" });
  const legends = el("div", "av-controls");
  legends.append(legendAttention.node, legendDiff.node);
  const main = el("div", "av-main");
  main.append(klLine, row, legends);
  body.append(thumbs, main);
  host.replaceChildren(root);

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
      contrast: contrast.checked,
      caption: (h) => thumbCaption(h, kl),
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
    klLine.textContent = decoded
      ? `head ${head}: KL(model ‖ transcoder) ${formatKl(kl.transcoder?.[head])}${masked}  (mean over destination rows, nats)`
      : "";
    if (!decoded) {
      for (const panel of Object.values(panels)) panel.clear();
      return;
    }
    const [, rows, cols] = decoded.shape;
    const vmax = colorMax(slice("true"), rows, cols, contrast.checked);
    for (const [key] of PANELS) {
      const panel = panels[key];
      const s = slice(key);
      panel.node.style.display = s ? "" : "none";
      if (!s) continue;
      if (key === "diff") {
        const bound = absMax(s) || 1;
        panel.draw(() => differencePixels(s, rows, cols, bound), rows, cols);
        legendDiff.setRange(formatSigned(-bound), formatSigned(bound));
      } else {
        panel.draw(() => patternPixels(s, rows, cols, vmax), rows, cols);
      }
    }
    legendAttention.setRange("0", vmax === 1 ? "1" : formatValue(vmax));
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
    const lines = describeCells(view.tokens(), cell.row, cell.col, values, view.factor(), diffName, view.offset());
    tooltip.show(lines, event, cell);
  }

  function hideHover() {
    for (const panel of Object.values(panels)) panel.highlight(null);
    tooltip.hide();
  }

  diffSelect.addEventListener("change", renderPanels);
  view.frame.listen({ "change:dictionary": renderControls });
  view.start({
    all() {
      renderControls();
      renderThumbnails();
      renderPanels();
      renderLabels();
      hideHover();
    },
    head() {
      hideHover();
      renderPanels();
    },
    contrast() {
      renderThumbnails();
      renderPanels();
    },
  });
  return view.dispose;
}

export default { render };
