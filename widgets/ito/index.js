// ITOExplorer (attnviz/widgets/ito.py): an SAE's encoder against inference-time optimisation on
// its decoder. FVU (and CE recovered) against L0 per dictionary and method; the prompt's tokens,
// and at a clicked one the encoder's features beside ITO's at the slider's L0; a clicked feature's
// ITO-vs-encoder activations over held-out tokens with the agreement figures.
//
// Traits read: prompt, dictionary, method, l0, token, feature, dictionaries, l0s, methods,
// token_methods, max_l0, tokens, codes, pareto, ce, scatter, error, busy.
// Traits written: prompt, dictionary, method, l0 (the kernel answers with codes), feature (with
// scatter), token (drawn here). Requests: "pareto" (on first display, until complete), "ce" (a
// button). In an exported file token clicks, hover and the shown scatter keep working.

import { drawChart } from "../shared/charts.js";
import { el, fillSelect, submitOnEnter, textEl } from "../shared/controls.js";
import { batched } from "../shared/events.js";
import { fixed } from "../shared/format.js";
import { createFrame } from "../shared/frame.js";
import { displayToken } from "../shared/tokens.js";
import { agreementRows, decodeCodes, jaccards, methodLabel, overlapColor, tokenLists, versusRows, wantsPareto } from "./lists.js";

export * from "./lists.js";

/** Chart sizes: two curves side by side fit an 800 px notebook. */
export const CHART = { width: 380, height: 250 };
const SCATTER = { width: 420, height: 300 };

const STYLE = `
.attnviz .ito-section { width: 100%; max-width: 1000px; }
.attnviz .ito-row { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; margin: 4px 0 10px; }
.attnviz .ito-lists { display: flex; gap: 12px; align-items: flex-start; flex: 0 1 480px; }
.attnviz .ito-list { flex: 1 1 220px; min-width: 200px; max-height: 360px; overflow: auto; }
.attnviz .ito-list table { width: 100%; }
.attnviz tr.ito-shared td { background: rgba(0, 158, 115, 0.12); }
.attnviz .ito-mark { color: #009e73; font-weight: 700; }
.attnviz .ito-scatter { flex: 1 1 420px; min-width: 320px; }
.attnviz .ito-slider { display: inline-flex; align-items: center; gap: 4px; }
.attnviz .ito-slider input { width: 160px; }
.attnviz .ito-value { font-variant-numeric: tabular-nums; min-width: 2.5em; font-weight: 600; }
.attnviz .ito-legend { display: inline-block; width: 28px; height: 10px; vertical-align: -1px; margin: 0 3px; border: 1px solid #bbb; }
`;

function featureTable(rows, list, selected, onFeature, label) {
  const table = el("table", "av-table", { "data-testid": `${list}-table` });
  const head = el("tr");
  head.append(textEl("th", "av-left", "feature"), textEl("th", "", "activation"), textEl("th", "av-left", ""));
  table.append(head);
  const top = Math.max(1e-12, ...rows.map((r) => Math.abs(r.activation)));
  for (const r of rows) {
    const tr = el("tr", r.shared ? "ito-shared" : "", { "data-testid": "feature-row", "data-list": list, "data-feature": String(r.feature), "data-activation": String(r.activation), "data-shared": String(r.shared) });
    const cell = el("td", "av-left");
    const button = textEl("button", "av-feature", `F${r.feature}`, {
      type: "button",
      "data-testid": "feature",
      "data-list": list,
      "data-feature": String(r.feature),
      "aria-pressed": String(r.feature === selected),
      title: `show feature ${r.feature}'s ${label}-vs-encoder activations over the held-out tokens`,
    });
    button.addEventListener("click", () => onFeature(r.feature));
    cell.append(button);
    if (r.shared) cell.append(textEl("span", "ito-mark", " ●", { title: "chosen by both" }));
    const bar = el("span", "av-bar");
    bar.style.width = `${Math.max(1, Math.round((60 * Math.abs(r.activation)) / top))}px`;
    bar.style.background = r.shared ? "#009e73" : "#7a2e6e";
    const bars = el("td", "av-left");
    bars.append(bar);
    tr.append(cell, textEl("td", "", fixed(r.activation, 3)), bars);
    table.append(tr);
  }
  return table;
}

function render({ model, el: host }) {
  const prompt = el("textarea", "av-prompt", { rows: "1", "data-testid": "prompt", "aria-label": "prompt (Enter recomputes, Shift+Enter for a new line)", spellcheck: "false" });
  const go = textEl("button", "av-go", "Show", { type: "button", "data-testid": "run" });
  const dictSelect = el("select", "", { "data-testid": "dictionary", "aria-label": "dictionary" });
  const methodSelect = el("select", "", { "data-testid": "method", "aria-label": "ITO method of the per-token lists" });
  const slider = el("input", "", { type: "range", min: "1", step: "1", "data-testid": "l0-slider", "aria-label": "target L0" });
  const l0Value = textEl("span", "ito-value", "", { "data-testid": "l0-value" });
  const sliderBox = el("label", "ito-slider", { title: "target L0 of ITO (features per token); the encoder keeps its own" });
  sliderBox.append(textEl("span", "", "L0"), slider, l0Value);
  const ceButton = textEl("button", "av-go", "CE recovered", { type: "button", "data-testid": "ce-run", title: "splice each reconstruction into the model on the held-out text (slow: one forward pass per method and L0)" });

  const frame = createFrame(model, {
    testid: "ito-explorer",
    controls: [prompt, go, dictSelect, methodSelect, sliderBox, ceButton],
    hasData: () => (model.get("tokens") ?? []).length > 0,
    statusText() {
      const n = (model.get("tokens") ?? []).length;
      if (!model.get("dictionary")) return "";
      return `${model.get("dictionary")} · ${methodLabel(model.get("method"))} at L0 ${model.get("l0")} · ${n} token${n === 1 ? "" : "s"}`;
    },
  });
  const { root, body } = frame;
  const style = el("style");
  style.textContent = STYLE;
  root.append(style);
  if (frame.isStatic) {
    root.insertBefore(textEl("div", "av-note", "Exported view: token clicks, hover and the scatter shown work here; another L0, method, dictionary, prompt or feature needs the notebook.", { "data-testid": "static-note" }), frame.controls.nextSibling);
    for (const c of [prompt, go, dictSelect, methodSelect, slider, ceButton]) c.disabled = true;
  }
  const about = el("div", "av-note", { "data-testid": "about" });
  root.insertBefore(about, body);

  const pareto = el("div", "ito-section", { "data-testid": "pareto" });
  const ce = el("div", "ito-section", { "data-testid": "ce" });
  const strip = el("div", "av-context av-strip", { "data-testid": "tokens" });
  const stripNote = el("div", "av-axis-title");
  const lists = el("div", "ito-lists", { "data-testid": "lists" });
  const scatter = el("div", "ito-scatter", { "data-testid": "scatter" });
  const lower = el("div", "ito-row");
  lower.append(lists, scatter);
  const tokensBox = el("div", "ito-section");
  tokensBox.append(textEl("div", "av-panel-title", "The prompt: click a token"), strip, stripNote);
  const lowerBox = el("div", "ito-section");
  lowerBox.append(lower);
  body.append(pareto, ce, tokensBox, lowerBox);
  host.replaceChildren(root);

  let decoded = null;
  let spans = [];
  const selectedToken = () => Number(model.get("token") ?? -1);
  const selectedFeature = () => Number(model.get("feature") ?? -1);

  function renderControls() {
    const text = model.get("prompt") ?? "";
    if (prompt.value !== text) prompt.value = text;
    prompt.rows = Math.min(6, Math.max(1, prompt.value.split("\n").length));
    const dicts = model.get("dictionaries") ?? [];
    fillSelect(dictSelect, dicts.map((d) => [d.name, d.name]), model.get("dictionary") ?? "");
    fillSelect(methodSelect, (model.get("token_methods") ?? []).map((m) => [m, methodLabel(m)]), model.get("method") ?? "");
    slider.max = String(Math.max(1, Number(model.get("max_l0") ?? 64)));
    slider.value = String(model.get("l0") ?? 1);
    l0Value.textContent = String(model.get("l0") ?? "");
    const d = dicts.find((x) => x.name === model.get("dictionary"));
    about.textContent = d ? `${d.name}: ${d.description}` : "";
    const splicable = dicts.some((x) => x.splicable);
    ceButton.style.display = splicable && model.get("ce")?.complete !== true ? "" : "none";
  }

  function submitPrompt() {
    if (prompt.value !== (model.get("prompt") ?? "")) frame.write({ prompt: prompt.value });
  }
  submitOnEnter(prompt, submitPrompt);
  go.addEventListener("click", submitPrompt);
  dictSelect.addEventListener("change", () => {
    if (dictSelect.value !== model.get("dictionary")) frame.write({ dictionary: dictSelect.value });
  });
  methodSelect.addEventListener("change", () => {
    if (methodSelect.value !== model.get("method")) frame.write({ method: methodSelect.value });
  });
  slider.addEventListener("input", () => {
    l0Value.textContent = slider.value;
  });
  slider.addEventListener("change", () => {
    const l0 = Number(slider.value);
    if (l0 !== Number(model.get("l0"))) frame.write({ l0 });
  });
  ceButton.addEventListener("click", () => {
    ceButton.disabled = true;
    frame.call("ce", {}, { label: "CE recovered" }).then(() => {
      ceButton.disabled = frame.isStatic;
    });
  });

  function chartsOf(payload, testid) {
    const row = el("div", "ito-row");
    for (const c of payload?.charts ?? []) {
      const chart = drawChart(c.spec, { ...CHART, testid });
      chart.dataset.dictionary = c.dictionary;
      chart.style.width = `${CHART.width}px`; // the legend wraps under its chart: two fit side by side
      row.append(chart);
    }
    return row;
  }

  function renderPareto() {
    const p = model.get("pareto") ?? {};
    pareto.replaceChildren();
    const n = p.n_tokens ? ` on ${Number(p.n_tokens).toLocaleString("en-US")} held-out tokens` : "";
    pareto.append(textEl("div", "av-panel-title", `Pareto: FVU against L0${n}`));
    pareto.dataset.complete = String(p.complete === true);
    if (!(p.charts ?? []).length) {
      pareto.append(textEl("div", "av-note", frame.isStatic ? "The curves were not computed before export." : "Computing the curves (progress above)…", { "data-testid": "pareto-pending" }));
      return;
    }
    pareto.append(
      textEl("div", "av-axis-title", "FVU: unexplained share of the variance (lower is better). Solid: ITO on the SAE's decoder (and top-k of its encoder); dashed: the same pursuit on a random dictionary of the same shape; black dot: the encoder as trained, at its own L0. Bands: 95% bootstrap intervals over the held-out contexts."),
      chartsOf(p, "fvu-chart"),
    );
    const rows = versusRows(p.versus);
    if (!rows.length) return;
    const table = el("table", "av-table", { "data-testid": "versus" });
    const head = el("tr");
    for (const [i, h] of ["", "method", "target L0 (true)", "FVU", "− encoder", "÷ encoder"].entries()) head.append(textEl("th", i < 2 ? "av-left" : "", h));
    table.append(head);
    for (const r of rows) {
      const tr = el("tr", "", { "data-testid": "versus-row" });
      tr.append(textEl("td", "av-left", r.dictionary));
      r.cells.forEach((c, i) => tr.append(textEl("td", i === 0 ? "av-left" : "", c, i === 3 ? { "data-better": String(r.better) } : {})));
      table.append(tr);
    }
    const enc = (p.versus ?? [])[0];
    pareto.append(textEl("div", "av-axis-title", `Against the encoder at the swept L0 nearest its own${enc ? ` (encoder: L0 ${fixed(enc.encoder_l0, 1)}, FVU ${fixed(enc.encoder_fvu, 3)})` : ""}: the difference in FVU (negative: better than the encoder) beside the ratio.`), table);
  }

  function renderCe() {
    const c = model.get("ce") ?? {};
    ce.replaceChildren();
    const notes = c.notes ?? (model.get("dictionaries") ?? []).filter((d) => !d.splicable).map((d) => `${d.name}: ${d.note}`);
    if (!(c.charts ?? []).length && !notes.length) return;
    ce.append(textEl("div", "av-panel-title", "CE recovered against L0 (splicing the reconstruction in, vs zero ablation)"));
    if ((c.charts ?? []).length) {
      ce.append(textEl("div", "av-axis-title", `Bands: bootstrap intervals over ${c.n_contexts ?? "the"} held-out contexts; hover a point for the absolute loss increase (nats/token). Higher is better.`), chartsOf(c, "ce-chart"));
      for (const chart of c.charts) for (const w of chart.warnings ?? []) ce.append(textEl("div", "av-note", `⚠ ${chart.dictionary}: ${w}`, { "data-testid": "ce-warning" }));
    } else if (!frame.isStatic) {
      ce.append(textEl("div", "av-note", "Press “CE recovered” above to splice each reconstruction into the model.", { "data-testid": "ce-pending" }));
    }
    for (const note of notes) ce.append(textEl("div", "av-note", note, { "data-testid": "ce-note" }));
  }

  function renderStrip() {
    const tokens = model.get("tokens") ?? [];
    strip.replaceChildren();
    const overlap = decoded && decoded.n === tokens.length ? jaccards(decoded) : null;
    spans = tokens.map((token, i) => {
      const span = textEl("span", "av-tok", displayToken(token, 40), { "data-testid": "token", "data-index": String(i) });
      const j = overlap ? overlap[i] : NaN;
      span.style.background = overlapColor(j);
      span.dataset.jaccard = Number.isFinite(j) ? String(j) : "";
      span.title = `${i}: ${token}${Number.isFinite(j) ? `\noverlap of the encoder's and ITO's features (Jaccard) ${fixed(j, 2)}` : ""}`;
      span.addEventListener("click", () => {
        if (i === selectedToken()) return;
        model.set("token", i); // view state, drawn here: the lists of every token are at hand
        model.save_changes();
      });
      return span;
    });
    strip.append(...spans);
    markToken();
    stripNote.replaceChildren(textEl("span", "", "shading: overlap of the encoder's and ITO's features at each token (Jaccard), from"), textEl("span", "ito-legend", ""), textEl("span", "", "none to all"));
    stripNote.children[1].style.background = "linear-gradient(to right, rgba(0,158,115,0.08), rgba(0,158,115,0.63))";
  }

  function markToken() {
    const t = selectedToken();
    spans.forEach((span, i) => span.classList.toggle("av-center", i === t));
    root.dataset.token = String(t);
  }

  function onFeature(f) {
    if (f === selectedFeature()) return;
    if (frame.isStatic) {
      model.set("feature", f);
      return;
    }
    frame.write({ feature: f });
  }

  function renderLists() {
    lists.replaceChildren();
    const t = selectedToken();
    const tokens = model.get("tokens") ?? [];
    root.dataset.listsL0 = decoded ? String(decoded.l0) : "";
    if (!decoded || !(t >= 0 && t < decoded.n)) {
      if (tokens.length) lists.append(textEl("div", "av-note", "Click a token: the encoder's features there beside ITO's.", { "data-testid": "hint" }));
      return;
    }
    const l = tokenLists(decoded, t);
    const f = selectedFeature();
    const method = methodLabel(decoded.method);
    const col = (title, rows, list, error, label) => {
      const box = el("div", "ito-list", { "data-testid": `${list}-list`, "data-count": String(rows.length) });
      box.append(textEl("div", "av-panel-title", title), textEl("div", "av-axis-title", `${rows.length} feature${rows.length === 1 ? "" : "s"} · ‖x − x̂‖²/‖x‖² ${fixed(error, 3)}`), rows.length ? featureTable(rows, list, f, onFeature, label) : textEl("div", "av-note", "none"));
      return box;
    };
    const box = el("div");
    box.append(
      textEl("div", "av-panel-title", `token ${t} "${displayToken(tokens[t], 24)}": ${l.shared} shared (●)`, { "data-testid": "lists-title" }),
      textEl("div", "av-axis-title", `${decoded.dictionary}: the encoder's own choice beside ${method} at target L0 ${decoded.l0}, each by activation.`),
    );
    const cols = el("div", "ito-lists");
    cols.append(col("encoder", l.encoder, "encoder", l.errors[0], method), col(`${decoded.method} at L0 ${decoded.l0}`, l.ito, "ito", l.errors[1], method));
    box.append(cols);
    lists.append(box);
  }

  function renderScatter() {
    scatter.replaceChildren();
    const s = model.get("scatter") ?? {};
    const f = selectedFeature();
    root.dataset.scatterFeature = String(s.feature ?? -1);
    if (f < 0) return;
    if (s.feature !== f || s.dictionary !== model.get("dictionary")) {
      scatter.append(textEl("div", "av-note", frame.isStatic ? `Feature ${f}'s scatter needs the notebook's kernel.` : `Feature ${f}: coding the held-out tokens…`, { "data-testid": "scatter-pending" }));
      return;
    }
    const st = s.stats ?? {};
    const chart = drawChart(s.chart, { ...SCATTER, testid: "scatter-chart" });
    chart.style.width = `${SCATTER.width}px`;
    scatter.append(
      chart,
      textEl("div", "av-axis-title", `${st.n_tokens} held-out tokens: the encoder fires on ${st.encoder}, ${methodLabel(s.method)} on ${st.ito}, both on ${st.both}; tokens where neither fires are left out. Correlation here ${fixed(st.corr, 3)}.`, { "data-testid": "scatter-stats" }),
    );
    const rows = agreementRows(s.agreement);
    if (rows.length) {
      const table = el("table", "av-table", { "data-testid": "agreement" });
      const head = el("tr");
      head.append(textEl("th", "av-left", `${s.dictionary}, all features: ${methodLabel(s.method)} at L0 ${s.l0} against the encoder`), textEl("th", "", ""));
      table.append(head);
      for (const [label, text, testid, value] of rows) {
        const tr = el("tr");
        tr.append(textEl("td", "av-left", label), textEl("td", "", text, { "data-testid": testid, "data-value": String(value ?? "") }));
        table.append(tr);
      }
      scatter.append(table);
    }
  }

  function renderCodes() {
    try {
      decoded = decodeCodes(model.get("codes"));
    } catch {
      decoded = null;
    }
    renderStrip();
    renderLists();
  }

  function renderAll() {
    renderControls();
    renderPareto();
    renderCe();
    renderCodes();
    renderScatter();
    root.dataset.nTokens = String((model.get("tokens") ?? []).length);
    frame.renderStatus();
  }

  // Data from the kernel answers a write ("computing…" ends); view state only redraws controls.
  const scheduleData = batched(() => {
    frame.settled();
    renderAll();
  });
  const controlsChanged = () => {
    renderControls();
    frame.renderStatus();
  };
  frame.listen({
    "change:prompt": controlsChanged,
    "change:dictionaries": controlsChanged,
    "change:dictionary": controlsChanged,
    "change:method": controlsChanged,
    "change:l0": controlsChanged,
    "change:max_l0": controlsChanged,
    "change:tokens": scheduleData,
    "change:codes": scheduleData,
    "change:scatter": scheduleData,
    "change:pareto": () => {
      renderPareto();
      frame.renderStatus();
    },
    "change:ce": () => {
      renderControls();
      renderCe();
      frame.renderStatus();
    },
    "change:token": () => {
      markToken();
      renderLists();
    },
    "change:feature": () => {
      renderLists();
      renderScatter();
    },
  });
  renderAll();
  if (wantsPareto(model.get("pareto"), model.get("dictionaries"), frame.isStatic)) frame.call("pareto", {}, { label: "FVU curves" });
  return () => frame.dispose();
}

export default { render };
