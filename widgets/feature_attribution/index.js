// FeatureAttribution (attnviz/widgets/feature_attribution.py): click a token of the prompt to see
// the hook_z SAE features active there; click a feature to see which heads and source tokens
// make it fire (its direct feature attribution), and what it fires on in held-out text.
//
// Traits read: prompt, layer, layers, tokens, error, busy, dictionary, dest, feature, features,
// dfa ({cells: float32 [heads, dest + 1], remainder, pre_activation, ...}), feature_info.
// Traits written: prompt, layer (the prompt view), dest (a token click), feature (a feature
// click); the kernel answers with features and dfa at once. A feature's held-out examples take
// the model (tens of seconds the first time per layer), so when feature_info is not the shown
// feature's, they are asked for as the request "examples" (progress bar, cancel), which sets it.

import { decodeArray } from "../shared/arrays.js";
import { el, textEl } from "../shared/controls.js";
import { densityChart, exampleLines } from "../shared/feature_panel.js";
import { fixed, formatSigned } from "../shared/format.js";
import { divergingColor, divergingColorize } from "../shared/heatmap.js";
import { createPromptView } from "../shared/prompt_view.js";
import { displayToken } from "../shared/tokens.js";

/** Most columns drawn; longer prompts are summed into blocks of sources (sums keep adding up). */
export const MAX_COLS = 512;
const DFA_WIDTH_PX = 600; // with the head labels, inside the 760 px column
const ROW_PX = 18;

/** Sum of every value (the DFA cells' total). */
export function sumCells(data) {
  let s = 0;
  for (let i = 0; i < data.length; i++) s += data[i];
  return s;
}

/** Column sums of a rows x cols array: each source's total contribution over heads. */
export function columnSums(data, rows, cols) {
  const out = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c] += data[r * cols + c];
  return out;
}

/** Row sums of a rows x cols array: each head's total contribution. */
export function rowSums(data, rows, cols) {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r] += data[r * cols + c];
  return out;
}

/** A rows x cols array summed over blocks of `factor` columns: { data, cols }. */
export function poolColumns(data, rows, cols, factor) {
  if (factor <= 1) return { data, cols };
  const out = Math.ceil(cols / factor);
  const pooled = new Float32Array(rows * out);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) pooled[r * out + Math.floor(c / factor)] += data[r * cols + c];
  return { data: pooled, cols: out };
}

/** Background of a source token contributing `value` when the largest |contribution| is `bound`. */
export function contributionColor(value, bound) {
  if (!(bound > 0) || !Number.isFinite(value) || value === 0) return "transparent";
  const [r, g, b] = divergingColor(0.5 + 0.5 * Math.max(-1, Math.min(1, value / bound)));
  return `rgb(${r}, ${g}, ${b})`;
}

/** The feature whose examples to ask for: the DFA's, when feature_info is not already its. */
export function examplesWanted(dfa, info) {
  if (dfa?.feature === undefined || dfa.feature < 0) return null;
  if (info?.feature === dfa.feature && info?.layer === dfa.layer) return null;
  return { feature: dfa.feature, layer: dfa.layer };
}

/** Tooltip lines of DFA cell (head, sources start..end-1). */
export function cellLines(tokens, head, start, end, value) {
  const where = end - start > 1 ? `sources ${start}–${end - 1}: "${displayToken(tokens[start], 16)}" …` : `source ${start}: "${displayToken(tokens[start], 24)}"`;
  return [`head ${head}`, where, `contribution ${formatSigned(value, 4)}${end - start > 1 ? " (sum over the block)" : ""}`];
}

function headBars(shares) {
  const box = el("span", "av-headbars", { "data-testid": "head-bars" });
  box.title = shares.map((s, h) => `head ${h}: ${(100 * s).toFixed(1)}% of the decoder norm`).join("\n");
  const top = Math.max(...shares, 1e-12);
  for (const s of shares) {
    const bar = el("span", "av-headbar");
    bar.style.height = `${Math.max(1, Math.round((s / top) * 14))}px`;
    box.append(bar);
  }
  return box;
}

function featuresTable(info, selected, onFeature) {
  const table = el("table", "av-table", { "data-testid": "features-table" });
  const head = el("tr");
  for (const [text, left] of [["feature", true], ["activation", false], ["pre-activation", false], ["decoder by head", true]]) head.append(textEl("th", left ? "av-left" : "", text));
  table.append(head);
  for (const r of info.rows) {
    const tr = el("tr", "", { "data-testid": "feature-row", "data-feature": String(r.feature), "data-activation": String(r.activation) });
    const cell = el("td", "av-left");
    const button = textEl("button", "av-feature", `F${r.feature}`, {
      type: "button",
      "data-testid": `feature-${r.feature}`,
      "aria-pressed": String(r.feature === selected),
      title: "show which heads and source tokens make this feature fire",
    });
    button.addEventListener("click", () => onFeature(r.feature));
    cell.append(button);
    const bars = el("td", "av-left");
    bars.append(headBars(r.heads));
    tr.append(cell, textEl("td", "", fixed(r.activation, 3)), textEl("td", "", formatSigned(r.pre_activation, 3)), bars);
    table.append(tr);
  }
  return table;
}

function render({ model, el: host }) {
  const decoded = () => {
    const d = model.get("dfa") ?? {};
    if (!d.cells?.shape) return null;
    const a = decodeArray(d.cells);
    return { ...d, data: a.data, heads: a.shape[0], cols: a.shape[1] };
  };
  const view = createPromptView(model, {
    testid: "feature-attribution",
    hasData: () => (model.get("tokens") ?? []).length > 0,
    statusText() {
      const n = (model.get("tokens") ?? []).length;
      return `layer ${model.get("layer")} · ${n} token${n === 1 ? "" : "s"}`;
    },
    dataTraits: ["dictionary"],
  });
  const { frame, root, body, tooltip } = view;
  const about = el("div", "av-note", { "data-testid": "dictionary" });
  root.insertBefore(about, body);
  const strip = el("div", "av-context av-strip", { "data-testid": "tokens" });
  const hint = textEl("div", "av-note", "Click a token: the SAE features active there.", { "data-testid": "hint" });
  const features = el("div", "", { "data-testid": "features" });
  const dfaBox = el("div", "", { "data-testid": "dfa" });
  const infoBox = el("div", "", { "data-testid": "feature" });
  const left = el("div");
  left.style.maxWidth = "760px";
  left.append(strip, hint, dfaBox, infoBox);
  body.append(left, features);
  host.replaceChildren(root);
  let spans = [];

  function renderTokens() {
    const tokens = view.tokens();
    strip.replaceChildren();
    spans = tokens.map((token, i) => {
      const span = textEl("span", "av-tok", displayToken(token, 40), { "data-testid": "token", "data-index": String(i) });
      span.title = `${i}: ${token}`;
      span.addEventListener("click", () => {
        // the same token again would change no trait, and "computing…" would wait for nothing
        if (!frame.isStatic && i !== Number(model.get("dest"))) frame.write({ dest: i });
      });
      return span;
    });
    strip.append(...spans);
  }

  /** Outline the destination; shade its sources by the feature's total contribution. */
  function shadeTokens(d) {
    const dest = Number(model.get("dest") ?? -1);
    const sums = d ? columnSums(d.data, d.heads, d.cols) : null;
    const bound = sums ? Math.max(...Array.from(sums, Math.abs), 1e-12) : 0;
    const tokens = view.tokens();
    spans.forEach((span, i) => {
      span.classList.toggle("av-center", i === dest);
      const v = sums && i < sums.length ? sums[i] : null;
      span.style.background = v === null ? "transparent" : contributionColor(v, bound);
      span.dataset.contribution = v === null ? "" : String(v);
      span.title = v === null ? `${i}: ${tokens[i]}` : `${i}: ${tokens[i]}\ncontribution ${formatSigned(v, 4)}`;
    });
  }

  function onFeature(f) {
    if (f !== Number(model.get("feature"))) frame.write({ feature: f });
  }

  let asked = ""; // the examples request in flight ("layer:feature"), so each is asked once
  let stopped = ""; // the last one cancelled or failed: asked again only on a click
  function askExamples(clicked = false) {
    const want = examplesWanted(model.get("dfa"), model.get("feature_info"));
    if (!want || frame.isStatic) return;
    const key = `${want.layer}:${want.feature}`;
    if (asked === key || (stopped === key && !clicked)) return;
    stopped = "";
    asked = key;
    renderInfo();
    frame.call("examples", want, { label: "max-activating examples" }).then((outcome) => {
      if (asked === key) asked = "";
      if (outcome.status !== "answer") stopped = key;
      renderInfo();
    });
  }

  function renderFeatures() {
    const info = model.get("features") ?? {};
    features.replaceChildren();
    hint.style.display = info.rows ? "none" : "";
    if (!info.rows) return;
    const tokens = view.tokens();
    features.append(
      textEl("div", "av-panel-title", `destination ${info.dest} "${displayToken(tokens[info.dest] ?? info.token, 24)}": ${info.n_active} active feature${info.n_active === 1 ? "" : "s"}`, { "data-testid": "features-title" }),
      info.rows.length ? featuresTable(info, Number(model.get("feature") ?? -1), onFeature) : textEl("div", "av-note", "No feature fires here."),
    );
  }

  function renderDfa() {
    const d = decoded();
    dfaBox.replaceChildren();
    shadeTokens(d);
    if (!d) return;
    const tokens = view.tokens();
    const cellSum = sumCells(d.data);
    const factor = Math.ceil(d.cols / MAX_COLS);
    const pooled = poolColumns(d.data, d.heads, d.cols, factor);
    const summary = el("div", "", { "data-testid": "dfa-sum" });
    const number = (testid, v) => textEl("b", "", formatSigned(v, 4), { "data-testid": testid, "data-value": String(v) });
    summary.append(textEl("span", "", "pre-activation "), number("pre-activation", d.pre_activation), textEl("span", "", " = cells "), number("cell-sum", cellSum), textEl("span", "", " + remainder (biases) "), number("remainder", d.remainder));
    const canvas = el("canvas", "av-heatmap", { "data-testid": "dfa-heatmap", "data-rows": String(d.heads), "data-cols": String(pooled.cols) });
    const cellW = Math.min(26, DFA_WIDTH_PX / Math.max(1, pooled.cols));
    canvas.width = pooled.cols;
    canvas.height = d.heads;
    canvas.style.width = `${Math.max(1, Math.round(pooled.cols * cellW))}px`;
    canvas.style.height = `${d.heads * ROW_PX}px`;
    canvas.style.imageRendering = "pixelated";
    const bound = Math.max(...Array.from(pooled.data, Math.abs), 1e-12);
    const ctx = canvas.getContext("2d");
    if (ctx !== null) ctx.putImageData(new ImageData(divergingColorize(pooled.data, d.heads, pooled.cols, bound), pooled.cols, d.heads), 0, 0);
    const cellOf = (event) => {
      const rect = canvas.getBoundingClientRect();
      const col = Math.floor(((event.clientX - rect.left) / rect.width) * pooled.cols);
      const row = Math.floor(((event.clientY - rect.top) / rect.height) * d.heads);
      return row >= 0 && row < d.heads && col >= 0 && col < pooled.cols ? { row, col } : null;
    };
    canvas.addEventListener("mousemove", (event) => {
      const cell = cellOf(event);
      if (!cell) return tooltip.hide();
      const start = cell.col * factor;
      const end = Math.min(d.cols, start + factor);
      const value = pooled.data[cell.row * pooled.cols + cell.col];
      tooltip.show(cellLines(tokens, cell.row, start, end, value), event, { head: cell.row, source: start, contribution: value });
    });
    canvas.addEventListener("mouseleave", () => tooltip.hide());
    const heads = rowSums(d.data, d.heads, d.cols);
    const labels = el("div", "av-dfa-rows");
    for (let h = 0; h < d.heads; h++) {
      labels.append(textEl("div", "", `head ${h} ${formatSigned(heads[h], 3)}`, { "data-testid": "head-total", "data-head": String(h), "data-value": String(heads[h]) }));
    }
    labels.style.lineHeight = `${ROW_PX}px`;
    const plot = el("div", "av-dfa");
    plot.append(labels, canvas);
    const scale = el("div", "av-axis-title", { "data-testid": "dfa-scale" });
    scale.append(textEl("span", "", `blue −, red + · colour ends ±${fixed(bound, 4)} · `), textEl("span", "", factor > 1 ? `sources summed in blocks of ${factor}` : "one column per source token"));
    dfaBox.append(
      textEl("div", "av-panel-title", `feature ${d.feature} at destination ${d.dest} "${displayToken(tokens[d.dest], 24)}" · activation ${fixed(d.activation, 3)}`, { "data-testid": "dfa-title" }),
      summary,
      textEl("div", "av-axis-title", "Each cell is what one head moves from one source token into this feature's pre-activation: attention weight × (value · the feature's encoder row for that head). Source tokens above are shaded by their total over heads."),
      plot,
      scale,
    );
  }

  function renderInfo() {
    const info = model.get("feature_info") ?? {};
    infoBox.replaceChildren();
    const want = examplesWanted(model.get("dfa"), info);
    if (want) {
      const pending = textEl("div", "av-note", "", { "data-testid": "examples-pending" });
      if (asked) pending.textContent = `feature ${want.feature}: finding its max-activating held-out contexts…`;
      else if (frame.isStatic) pending.textContent = `feature ${want.feature}: its held-out examples need the notebook's kernel.`;
      else {
        // after a cancel or an error: asked again on a click, not by itself
        const again = textEl("button", "av-go", `find feature ${want.feature}'s max-activating held-out contexts`, { type: "button", "data-testid": "find-examples" });
        again.addEventListener("click", () => askExamples(true));
        pending.append(again);
      }
      infoBox.append(pending);
      return;
    }
    if (info.feature === undefined) return;
    const box = el("div", "", { "data-testid": "feature-panel", "data-feature": String(info.feature), "data-layer": String(info.layer) });
    const pct = (100 * info.density).toFixed(info.density < 0.01 ? 3 : 1);
    box.append(
      textEl("div", "av-panel-title", `feature ${info.feature} · layer ${info.layer} · held-out text`),
      textEl("div", "av-axis-title", `fires on ${pct}% of ${info.n_tokens.toLocaleString("en-US")} held-out tokens (${info.dead} of the SAE's features never fire there)`, { "data-testid": "density" }),
      densityChart(info, "SAE features"),
    );
    if (info.examples?.length) {
      box.append(textEl("div", "av-axis-title", "max-activating contexts (outlined: where it fires most; shading: activation)"), ...exampleLines(info.examples));
    } else {
      box.append(textEl("div", "av-note", "This feature does not fire on the held-out contexts."));
    }
    infoBox.append(box);
  }

  frame.listen({
    "change:features": () => {
      frame.settled();
      renderFeatures();
      shadeTokens(decoded());
      frame.renderStatus();
    },
    "change:dfa": () => {
      frame.settled();
      renderFeatures();
      renderDfa();
      renderInfo();
      askExamples();
      frame.renderStatus();
    },
    "change:feature_info": () => {
      frame.settled();
      renderInfo();
      askExamples();
      frame.renderStatus();
    },
    "change:dest": () => shadeTokens(decoded()),
  });
  view.start({
    all() {
      about.textContent = model.get("dictionary") ?? "";
      renderTokens();
      renderFeatures();
      renderDfa();
      renderInfo();
      askExamples();
    },
    head() {},
  });
  return view.dispose;
}

export default { render };
