// PairExplorer (attnviz/widgets/pair_explorer.py): click a cell of a head's pattern to see its
// score split into query-feature x key-feature pairs; click a feature to see what it fires on.
//
// Traits read: prompt, layer, layers, head, tokens, downsampled, error, busy, dictionary,
// has_masked, kl, panels ({true, transcoder, masked}), view, map, decomposition, edge (the z-SAE
// features moving along the explained cell), feature_info.
// Traits written: prompt, layer, view, map (selectors), head (thumbnails), clicked ([row, col]
// of the heatmap; the kernel decomposes it), feature ({side, index}; the kernel finds examples),
// follow ({feature}: the kernel shows it in the linked FeatureAttribution).

import { el, fillSelect, textEl } from "../shared/controls.js";
import { fixed, formatSigned } from "../shared/format.js";
import { densityChart, exampleLines } from "../shared/feature_panel.js";
import { createLegend, createPanel } from "../shared/panel.js";
import { FUTURE_COLOR, patternPixels, thumbCaption, thumbTitle } from "../shared/patterns.js";
import { createPromptView } from "../shared/prompt_view.js";
import { markThumb, renderThumbs } from "../shared/thumbs.js";
import { describeCell, displayToken } from "../shared/tokens.js";

export { activationColor, histogramBin } from "../shared/feature_panel.js";
export { fixed } from "../shared/format.js";

export const THUMB_PX = 56;
export const HEATMAP_PX = 420;
const VIEWS = [
  ["transcoder", "transcoder q̂·k̂"],
  ["masked", "masked pair map"],
  ["true", "model"],
];
const MAPS = [
  ["masked", "masked pair map"],
  ["transcoder", "transcoder (all pairs)"],
];

/** The display cell of a token cell when cells are blocks of `factor` tokens. */
export function displayCell(dest, src, factor = 1) {
  return { row: Math.floor(dest / factor), col: Math.floor(src / factor) };
}

/** Sum of the rows' contributions (what the table's total shows). */
export function sumContributions(rows) {
  return (rows ?? []).reduce((acc, r) => acc + (typeof r.contribution === "number" ? r.contribution : 0), 0);
}

function featureButton(side, index, pressed, onClick) {
  const button = textEl("button", "av-feature", `${side === "q" ? "Q" : "K"}${index}`, {
    type: "button",
    "data-testid": `feature-${side}-${index}`,
    "data-side": side,
    "data-index": String(index),
    "aria-pressed": String(pressed),
    title: `show the ${side === "q" ? "query" : "key"} feature's max-activating contexts`,
  });
  button.addEventListener("click", () => onClick(side, index));
  return button;
}

function barCell(value, scale) {
  const td = el("td", "av-left");
  if (typeof value !== "number" || !(scale > 0)) return td;
  const bar = el("span", "av-bar");
  bar.style.width = `${Math.max(1, Math.round((Math.abs(value) / scale) * 80))}px`;
  bar.style.background = value >= 0 ? "#b2182b" : "#2166ac";
  td.append(bar);
  return td;
}

/** The decomposition table: one row per pair / other pairs / bias term, then the total. */
function decompositionTable(d, selected, onFeature) {
  const table = el("table", "av-table", { "data-testid": "decomposition-table" });
  const head = el("tr");
  for (const [text, left] of [["term", true], ["query", true], ["key", true], ["f_q", false], ["f_k", false], ["map weight", false], ["mask", false], ["contribution", false], ["", true]]) {
    head.append(textEl("th", left ? "av-left" : "", text));
  }
  table.append(head);
  const scale = Math.max(...d.rows.map((r) => Math.abs(r.contribution ?? 0)), 1e-12);
  for (const r of d.rows) {
    const tr = el("tr", "", { "data-testid": "term-row", "data-kind": r.kind, "data-contribution": String(r.contribution) });
    tr.append(textEl("td", "av-left", r.kind === "pair" ? "pair" : r.label));
    for (const side of ["q", "k"]) {
      const td = el("td", "av-left");
      const index = r[`${side}_feature`];
      if (index !== null && index !== undefined) {
        td.append(featureButton(side, index, selected?.side === side && selected?.index === index, onFeature));
      }
      tr.append(td);
    }
    tr.append(
      textEl("td", "", fixed(r.f_q, 2)),
      textEl("td", "", fixed(r.f_k, 2)),
      textEl("td", "", fixed(r.map_weight, 4)),
      textEl("td", "", r.kind === "pair" ? fixed(r.mask, 2) : ""),
      textEl("td", "", formatSigned(r.contribution, 4)),
      barCell(r.contribution, scale),
    );
    table.append(tr);
  }
  const total = el("tr", "av-total");
  total.append(
    textEl("td", "av-left", "sum of the terms"),
    el("td"),
    el("td"),
    el("td"),
    el("td"),
    el("td"),
    el("td"),
    textEl("td", "", formatSigned(sumContributions(d.rows), 4), { "data-testid": "total" }),
    el("td"),
  );
  table.append(total);
  return table;
}

function featurePanel(info) {
  const box = el("div", "", { "data-testid": "feature-panel", "data-side": info.side, "data-index": String(info.index) });
  const sideName = info.side === "q" ? "query" : "key";
  const pct = (100 * info.density).toFixed(info.density < 0.01 ? 3 : 1);
  box.append(
    textEl("div", "av-panel-title", `${sideName} feature ${info.index} · layer ${info.layer}`),
    textEl("div", "av-axis-title", `fires on ${pct}% of ${info.n_tokens.toLocaleString("en-US")} held-out tokens (${info.dead} of this side's features never fire there)`, { "data-testid": "density" }),
    densityChart(info, `${sideName} features`),
  );
  if (!info.examples?.length) {
    box.append(textEl("div", "av-note", "This feature does not fire on the held-out contexts."));
    return box;
  }
  box.append(textEl("div", "av-axis-title", "max-activating contexts (the outlined token is where it fires most; shading: activation)"));
  box.append(...exampleLines(info.examples));
  return box;
}

/** The features that move along the explained edge (head, dest <- src), strongest first. */
function edgeTable(e, onFollow) {
  const table = el("table", "av-table", { "data-testid": "edge-table" });
  const head = el("tr");
  for (const [text, left] of [["feature", true], ["through this cell", false], ["pre-activation", false], ["share", false], ["", true]]) head.append(textEl("th", left ? "av-left" : "", text));
  table.append(head);
  const scale = Math.max(...e.rows.map((r) => Math.abs(r.contribution)), 1e-12);
  for (const r of e.rows) {
    const tr = el("tr", "", { "data-testid": "edge-row", "data-feature": String(r.feature), "data-contribution": String(r.contribution) });
    const cell = el("td", "av-left");
    const button = textEl("button", "av-feature", `F${r.feature}`, {
      type: "button",
      "data-testid": `edge-feature-${r.feature}`,
      title: e.linked ? "show this feature's attribution in the linked FeatureAttribution" : "link a FeatureAttribution (attribution=...) to open it there",
    });
    button.addEventListener("click", () => onFollow(r.feature));
    cell.append(button);
    const share = typeof r.share === "number" ? `${(100 * r.share).toFixed(1)}%` : "–";
    tr.append(cell, textEl("td", "", formatSigned(r.contribution, 4)), textEl("td", "", formatSigned(r.pre_activation, 3)), textEl("td", "", share), barCell(r.contribution, scale));
    table.append(tr);
  }
  return table;
}

function render({ model, el: host }) {
  const viewSelect = el("select", "", { "data-testid": "view", "aria-label": "pattern shown" });
  const mapSelect = el("select", "", { "data-testid": "map", "aria-label": "reconstruction decomposed" });
  const view = createPromptView(model, {
    testid: "pair-explorer",
    pooled: "a click explains the block's strongest cell",
    controls: [textEl("span", "", "show:"), viewSelect, textEl("span", "", "explain:"), mapSelect],
    scales: true,
    dataTraits: ["kl", "has_masked", "masked_pending"],
    staticNote: "Exported view: hover, head selection and the 'show' selector work here; explaining another cell, features, new prompts and layers need the notebook.",
  });
  const { frame, root, body, source, tooltip } = view;
  const NEEDS_KERNEL = "exported view: this needs the notebook";
  if (frame.isStatic) {
    mapSelect.disabled = true;
    mapSelect.title = NEEDS_KERNEL;
  }
  /** In an export, buttons that would ask the kernel are visibly off, with the reason. */
  function disableAsks(container) {
    if (!frame.isStatic) return;
    for (const button of container.querySelectorAll("button")) {
      button.disabled = true;
      button.title = NEEDS_KERNEL;
    }
  }
  const about = el("div", "av-note", { "data-testid": "dictionary" });
  root.insertBefore(about, body);
  const thumbs = el("div", "av-thumbs", { "data-testid": "thumbs" });

  const valueAt = (cell) => {
    const s = slice();
    return s ? s[cell.row * panel.geometry.cols + cell.col] : NaN;
  };
  const panel = createPanel({
    testid: "heatmap",
    px: HEATMAP_PX,
    onHover(cell, event) {
      panel.highlight(cell);
      const value = valueAt(cell);
      const lines = describeCell(view.tokens(), cell.row, cell.col, value, view.factor(), view.offset(), view.scale().name);
      if (!Number.isNaN(value)) lines.push(frame.isStatic ? "explaining a cell needs the notebook" : "click: split its score into feature pairs");
      tooltip.show(lines, event, cell);
    },
    onLeave() {
      panel.highlight(null);
      tooltip.hide();
    },
    onClick(cell) {
      if (Number.isNaN(valueAt(cell)) || frame.isStatic) return; // a future cell, or no kernel to ask
      panel.select(cell);
      frame.write({ clicked: [cell.row, cell.col] });
    },
  });
  const hint = textEl("div", "av-note", "Click a cell of the heatmap to explain its score.", { "data-testid": "hint" });
  const decomposition = el("div", "", { "data-testid": "decomposition" });
  const edge = el("div", "", { "data-testid": "edge" });
  const feature = el("div", "", { "data-testid": "feature" });
  const left = el("div");
  left.append(thumbs);
  const legend = createLegend({ title: "attention", swatches: [{ color: FUTURE_COLOR, text: "future (masked)" }] });
  const middle = el("div");
  middle.append(panel.node, legend.node);
  const right = el("div");
  right.style.maxWidth = "760px";
  right.append(hint, decomposition, edge, feature);
  body.append(left, middle, right);
  host.replaceChildren(root);

  function viewKey() {
    const v = model.get("view") ?? "transcoder";
    return source.decoded?.data[v] ? v : "transcoder";
  }

  function slice(h = view.head(), key = viewKey()) {
    return source.slice(key, h);
  }

  function renderControls() {
    const hasMasked = Boolean(model.get("has_masked"));
    const offered = (options) => options.filter(([k]) => hasMasked || k !== "masked");
    fillSelect(viewSelect, offered(VIEWS), model.get("view"));
    fillSelect(mapSelect, offered(MAPS), model.get("map"));
    about.textContent = model.get("dictionary") ?? "";
  }

  function renderThumbnails() {
    const kl = model.get("kl") ?? {};
    renderThumbs(thumbs, source.decoded?.shape, {
      slice: (h) => slice(h),
      px: THUMB_PX,
      scale: view.scale().name,
      caption: (h) => thumbCaption(h, kl),
      title: (h) => thumbTitle(h, kl),
      onSelect(h) {
        if (h === view.head()) return;
        // With a cell explained, a new head means a new decomposition from the kernel (in an
        // export the head changes alone and the decomposition says which head it explains).
        if (model.get("decomposition")?.dest !== undefined && !frame.isStatic) frame.write({ head: h });
        else view.selectHead(h);
      },
    });
    thumbs.style.gridTemplateColumns = "repeat(3, auto)";
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
    const s = slice();
    const range = view.scale();
    panel.draw(() => patternPixels(s, rows, cols, range.vmax, range.vmin), rows, cols);
    legend.setScale(range);
    const d = model.get("decomposition") ?? {};
    const cell = d.dest === undefined ? null : displayCell(d.dest - view.offset(), d.src - view.offset(), view.factor());
    const inside = cell && cell.row >= 0 && cell.col >= 0 && cell.row < rows && cell.col < cols;
    panel.select(inside ? cell : null);
  }

  function onFeature(side, index) {
    frame.write({ feature: { side, index } });
  }

  function renderDecomposition() {
    const d = model.get("decomposition") ?? {};
    decomposition.replaceChildren();
    hint.style.display = d.rows ? "none" : "";
    if (!d.rows) return;
    const tokens = view.tokens();
    const mapName = d.kind === "masked" ? "masked pair map" : "transcoder";
    const scoreLine = textEl("div", "", `score of the ${mapName}: `, { "data-testid": "score-line" });
    scoreLine.append(textEl("b", "", formatSigned(d.score, 4), { "data-testid": "score", "data-value": String(d.score) }));
    decomposition.append(
      textEl("div", "av-panel-title", `head ${d.head} · destination ${d.dest} "${displayToken(tokens[d.dest] ?? d.dest_token, 24)}" ← source ${d.src} "${displayToken(tokens[d.src] ?? d.src_token, 24)}"`),
      scoreLine,
      textEl("div", "av-axis-title", `attention weight: ${mapName} ${fixed(d.weight, 4)} · model ${fixed(d.true_weight, 4)}. Score = q̂·k̂ / √d_head before the softmax; each pair term is f_q × f_k × mask × map weight.`),
      decompositionTable(d, model.get("feature_info"), onFeature),
    );
    if (frame.isStatic && d.head !== view.head()) {
      decomposition.prepend(textEl("div", "av-note", `This explains head ${d.head}; the shown head's cells need the notebook.`, { "data-testid": "other-head-note" }));
    }
    disableAsks(decomposition);
  }

  function renderEdge() {
    const e = model.get("edge") ?? {};
    edge.replaceChildren();
    if (e.message) {
      edge.append(textEl("div", "av-note", `What moves along this edge needs a hook_z SAE: ${e.message}`, { "data-testid": "edge-message" }));
      return;
    }
    if (!e.rows) return;
    edge.append(
      textEl("div", "av-panel-title", `what moves along this edge: head ${e.head}, ${e.dest} ← ${e.src}`),
      textEl("div", "av-axis-title", "z-SAE features at the destination whose direct attribution through this head and source is largest; share = that part of the feature's pre-activation."),
      edgeTable(e, (f) => frame.write({ follow: { feature: f, head: e.head, dest: e.dest, src: e.src } })),
    );
    disableAsks(edge);
  }

  function renderFeature() {
    const info = model.get("feature_info") ?? {};
    feature.replaceChildren();
    if (info.index === undefined) return;
    feature.append(featurePanel(info));
  }

  viewSelect.addEventListener("change", () => {
    model.set("view", viewSelect.value);
    model.save_changes();
  });
  mapSelect.addEventListener("change", () => frame.write({ map: mapSelect.value }));

  view.frame.listen({
    "change:dictionary": renderControls,
    "change:view": () => {
      renderControls();
      renderThumbnails();
      renderHeatmap();
    },
    "change:map": renderControls,
    "change:decomposition": () => {
      frame.settled();
      renderHeatmap();
      renderDecomposition();
      frame.renderStatus();
    },
    "change:edge": renderEdge,
    "change:feature_info": () => {
      frame.settled();
      renderDecomposition();
      renderFeature();
      frame.renderStatus();
    },
  });
  view.start({
    all() {
      renderControls();
      renderThumbnails();
      renderHeatmap();
      if (source.decoded) panel.setLabels(view.tokens(), view.factor(), view.offset());
      renderDecomposition();
      renderEdge();
      renderFeature();
    },
    head() {
      renderHeatmap();
      if (frame.isStatic) renderDecomposition();
    },
  });
  return view.dispose;
}

export default { render };
