// SteeringLab (attnviz/widgets/steering.py): a steering vector's controls, a coefficient slider with
// the steered and unsteered continuations side by side (same seed, target words marked), and a
// sweep drawn as effect against damage with the Pareto frontier per method; a click on a point
// lists its rollouts.
//
// Traits read: every trait of the widget. Traits written: source, plus, minus, feature, layer,
// positions, prompt, words, relative, seed (the kernel answers with vector and generation), point
// (drawn here). Request: "sweep" (a button). In an exported file the shown generation, the chart
// (hover) and point clicks keep working.

import { drawChart } from "../shared/charts.js";
import { el, fillSelect, submitOnEnter, textEl } from "../shared/controls.js";
import { batched } from "../shared/events.js";
import { fixed } from "../shared/format.js";
import { createFrame } from "../shared/frame.js";
import { pieces, pointOf, pointSummary } from "./text.js";

export * from "./text.js";

const CHART = { width: 560, height: 320 };
const STYLE = `
.attnviz .st-row { display: flex; gap: 12px; flex-wrap: wrap; align-items: flex-start; margin: 4px 0 10px; }
.attnviz .st-col { flex: 1 1 320px; min-width: 260px; max-width: 640px; }
.attnviz .st-text { white-space: pre-wrap; font-family: var(--jp-code-font-family, monospace); font-size: 12px; border: 1px solid var(--jp-border-color2, #ddd); padding: 6px; border-radius: 3px; }
.attnviz .st-prompt { color: var(--jp-ui-font-color2, #777); }
.attnviz mark.st-hit { background: #e69f00; color: #000; padding: 0 1px; }
.attnviz .st-controls { display: flex; gap: 6px; flex-wrap: wrap; align-items: center; margin: 2px 0 6px; }
.attnviz .st-controls input[type=text] { width: 14em; font: inherit; }
.attnviz .st-controls input[type=number] { width: 5em; font: inherit; }
.attnviz .st-slider input { width: 200px; }
.attnviz .st-value { font-variant-numeric: tabular-nums; min-width: 3em; font-weight: 600; display: inline-block; }
.attnviz .st-rollout { margin: 0 0 4px; }
`;

function labelled(text, input, title = "") {
  const node = el("label", "st-field", title ? { title } : {});
  node.append(textEl("span", "", `${text} `), input);
  return node;
}

function marked(container, prompt, text, hits) {
  container.replaceChildren();
  if (prompt) container.append(textEl("span", "st-prompt", prompt));
  for (const p of pieces(text ?? "", hits)) container.append(p.hit ? textEl("mark", "st-hit", p.text, { "data-testid": "hit" }) : document.createTextNode(p.text));
}

function render({ model, el: host }) {
  const source = el("select", "", { "data-testid": "source", "aria-label": "vector source" });
  const plus = el("input", "", { type: "text", "data-testid": "plus", "aria-label": "prompt to steer towards", spellcheck: "false" });
  const minus = el("input", "", { type: "text", "data-testid": "minus", "aria-label": "prompt to steer away from", spellcheck: "false" });
  const feature = el("input", "", { type: "number", min: "0", step: "1", "data-testid": "feature", "aria-label": "SAE feature" });
  const heads = el("select", "", { "data-testid": "heads", "aria-label": "heads the feature is added at" });
  const layer = el("select", "", { "data-testid": "layer", "aria-label": "layer" });
  const positions = el("select", "", { "data-testid": "positions", "aria-label": "positions" });
  const prompt = el("textarea", "av-prompt", { rows: "1", "data-testid": "prompt", "aria-label": "prompt to continue (Enter runs)", spellcheck: "false" });
  const words = el("input", "", { type: "text", "data-testid": "words", "aria-label": "target words, comma separated", spellcheck: "false" });
  const seed = el("input", "", { type: "number", step: "1", "data-testid": "seed", "aria-label": "seed" });
  const slider = el("input", "", { type: "range", min: "0", max: "16", step: "0.05", "data-testid": "slider", "aria-label": "coefficient as a share of the residual norm" });
  const value = textEl("span", "st-value", "", { "data-testid": "slider-value" });
  const sliderBox = el("label", "st-slider", { title: "||c·v|| / ||residual||: the share of the residual stream's norm the vector adds" });
  sliderBox.append(textEl("span", "", "strength "), slider, value);
  const sweepButton = textEl("button", "av-go", "Sweep", { type: "button", "data-testid": "sweep-run", title: "rollouts at several strengths for each method, and their damage on held-out text" });
  const pairBox = el("span", "st-controls");
  pairBox.append(labelled("+", plus), labelled("−", minus));
  const featureBox = el("span", "st-controls");
  featureBox.append(labelled("feature", feature), heads);

  const frame = createFrame(model, {
    testid: "steering-lab",
    controls: [source, pairBox, featureBox, layer, positions, sliderBox, sweepButton],
    hasData: () => Boolean(model.get("generation")?.steered),
    statusText() {
      const v = model.get("vector") ?? {};
      return v.name ? `${v.name} · strength ${fixed(model.get("relative"), 2)} (coef ${fixed(v.coef, 3)})` : "";
    },
  });
  const { root, body } = frame;
  const style = el("style");
  style.textContent = STYLE;
  root.append(style);
  const second = el("div", "st-controls");
  second.append(labelled("prompt", prompt), labelled("target words", words), labelled("seed", seed));
  root.insertBefore(second, frame.controls.nextSibling);
  if (frame.isStatic) {
    root.insertBefore(textEl("div", "av-note", "Exported view: the generation, the chart and its points work here; another vector, strength or sweep needs the notebook.", { "data-testid": "static-note" }), second.nextSibling);
    for (const c of [source, plus, minus, feature, heads, layer, positions, prompt, words, seed, slider, sweepButton]) c.disabled = true;
  }

  const about = el("div", "av-note", { "data-testid": "about" });
  const unsteered = el("div", "st-text", { "data-testid": "unsteered" });
  const steered = el("div", "st-text", { "data-testid": "steered" });
  const steeredTitle = textEl("div", "av-panel-title", "steered");
  const cols = el("div", "st-row");
  const left = el("div", "st-col");
  left.append(textEl("div", "av-panel-title", "unsteered (same seed)"), unsteered);
  const right = el("div", "st-col");
  right.append(steeredTitle, steered);
  cols.append(left, right);
  const sweepBox = el("div", "", { "data-testid": "sweep" });
  const rolloutsBox = el("div", "st-col", { "data-testid": "rollouts" });
  body.append(about, cols, sweepBox);
  host.replaceChildren(root);

  function renderControls() {
    fillSelect(source, [["pair", "prompt pair (ActAdd)"], ...(model.get("has_sae") ? [["feature", "SAE feature"]] : [])], model.get("source"));
    fillSelect(layer, (model.get("layers") ?? []).map((l) => [String(l), `layer ${l}`]), String(model.get("layer")));
    fillSelect(positions, [["front", "front positions"], ["all", "all positions"]], model.get("positions"));
    // A z SAE's feature is added at hook_z: of every head (its W_O image) or of its top-loading heads.
    const nHeads = model.get("n_heads") ?? 0;
    const headChoices = [["0", "all heads (through W_O)"]];
    for (let k = 1; k < nHeads; k += 1) headChoices.push([String(k), `top ${k} head${k > 1 ? "s" : ""}`]);
    fillSelect(heads, headChoices, String(model.get("heads") ?? 0));
    heads.style.display = model.get("sae_site") === "z" ? "" : "none";
    const isPair = model.get("source") !== "feature";
    pairBox.style.display = isPair ? "" : "none";
    featureBox.style.display = isPair ? "none" : "";
    for (const [input, name] of [[plus, "plus"], [minus, "minus"], [words, "words"], [prompt, "prompt"]]) {
      if (document.activeElement !== input && input.value !== (model.get(name) ?? "")) input.value = model.get(name) ?? "";
    }
    if (document.activeElement !== feature) feature.value = String(model.get("feature") ?? 0);
    if (document.activeElement !== seed) seed.value = String(model.get("seed") ?? 0);
    slider.value = String(model.get("relative") ?? 0);
    value.textContent = fixed(model.get("relative"), 2);
  }

  function renderGeneration() {
    const g = model.get("generation") ?? {};
    const v = model.get("vector") ?? {};
    about.textContent = v.name ? `${v.name}: ‖v‖ ${fixed(v.norm, 2)}, residual norm ${fixed(v.resid_norm, 1)} at layer ${v.layer}; strength ${fixed(g.relative, 2)} adds coef ${fixed(g.coef, 3)} × v.` : "";
    steeredTitle.textContent = `steered (strength ${fixed(g.relative, 2)})`;
    marked(unsteered, g.prompt, g.unsteered?.text, g.unsteered?.hits);
    marked(steered, g.prompt, g.steered?.text, g.steered?.hits);
    root.dataset.generation = `${g.relative}:${g.seed}`;
    root.dataset.hits = String((g.steered?.hits ?? []).length);
  }

  function choosePoint(series, index) {
    model.set("point", [series, index]); // view state, drawn here: every point's rollouts are at hand
    model.save_changes();
  }

  function renderSweep() {
    const s = model.get("sweep") ?? {};
    sweepBox.replaceChildren();
    if (!s.chart) {
      sweepBox.append(textEl("div", "av-note", frame.isStatic ? "No sweep was run before export." : "Press “Sweep” to run every method at several strengths (progress above).", { "data-testid": "sweep-pending" }));
      return;
    }
    const n = (s.points ?? []).reduce((k, pts) => k + pts.length, 0);
    sweepBox.append(
      textEl("div", "av-panel-title", `Effect against damage: ${s.rollouts} rollouts of “${s.prompt}” per point`),
      textEl("div", "av-axis-title", `y: share of rollouts with a target word (${s.words}), 95% Wilson interval in the hover; x: loss increase on held-out text with the vector added (nats/token), bootstrap interval in the hover. Larger dots: the Pareto frontier of each method. Click a point for its rollouts (${n} points).`),
    );
    const row = el("div", "st-row");
    const chart = drawChart(s.chart, { ...CHART, testid: "sweep-chart" });
    chart.style.width = `${CHART.width}px`;
    chart.addEventListener("click", (event) => {
      const mark = event.target.closest?.('[data-testid="chart-point"]');
      if (!mark) return;
      choosePoint(Number(mark.parentNode.dataset.series), Number(mark.dataset.index));
    });
    row.append(chart, rolloutsBox);
    sweepBox.append(row);
    renderRollouts();
  }

  function renderRollouts() {
    rolloutsBox.replaceChildren();
    const s = model.get("sweep") ?? {};
    const p = pointOf(s, model.get("point"));
    root.dataset.point = p ? (model.get("point") ?? []).join(",") : "";
    if (!p) {
      if (s.chart) rolloutsBox.append(textEl("div", "av-note", "Click a point of the chart for its rollouts."));
      return;
    }
    rolloutsBox.append(textEl("div", "av-panel-title", pointSummary(p), { "data-testid": "point-summary" }));
    for (const r of p.rollouts ?? []) {
      const box = el("div", "st-text st-rollout", { "data-testid": "rollout" });
      marked(box, "", r.text, r.hits);
      rolloutsBox.append(box);
    }
  }

  const write = (changes) => frame.write(changes);
  const onText = (input, name) => {
    input.addEventListener("change", () => {
      if (input.value !== (model.get(name) ?? "")) write({ [name]: input.value });
    });
  };
  onText(plus, "plus");
  onText(minus, "minus");
  onText(words, "words");
  // Keys typed here are the widget's: the notebook's shortcuts (Shift+Enter runs a cell) stay out.
  for (const input of [plus, minus, words, prompt, feature, seed]) input.addEventListener("keydown", (e) => e.stopPropagation());
  const submitPrompt = () => {
    if (prompt.value !== model.get("prompt")) write({ prompt: prompt.value });
  };
  submitOnEnter(prompt, submitPrompt);
  prompt.addEventListener("change", submitPrompt);
  feature.addEventListener("change", () => {
    const f = Number(feature.value);
    if (Number.isInteger(f) && f !== model.get("feature")) write({ feature: f });
  });
  seed.addEventListener("change", () => {
    const s = Number(seed.value);
    if (Number.isInteger(s) && s !== model.get("seed")) write({ seed: s });
  });
  source.addEventListener("change", () => write({ source: source.value }));
  layer.addEventListener("change", () => write({ layer: Number(layer.value) }));
  positions.addEventListener("change", () => write({ positions: positions.value }));
  heads.addEventListener("change", () => write({ heads: Number(heads.value) }));
  slider.addEventListener("input", () => {
    value.textContent = fixed(Number(slider.value), 2);
  });
  slider.addEventListener("change", () => {
    const r = Number(slider.value);
    if (r !== model.get("relative")) write({ relative: r });
  });
  sweepButton.addEventListener("click", () => {
    sweepButton.disabled = true;
    frame.call("sweep", {}, { label: "sweep" }).then(() => {
      sweepButton.disabled = frame.isStatic;
    });
  });

  function renderAll() {
    renderControls();
    renderGeneration();
    renderSweep();
    frame.renderStatus();
  }
  const scheduleData = batched(() => {
    frame.settled();
    renderAll();
  });
  const controlsChanged = () => {
    renderControls();
    frame.renderStatus();
  };
  const listeners = { "change:generation": scheduleData, "change:vector": scheduleData, "change:sweep": scheduleData, "change:point": renderRollouts };
  for (const name of ["source", "plus", "minus", "feature", "layer", "positions", "prompt", "words", "relative", "seed", "layers", "has_sae", "heads", "sae_site", "n_heads"]) listeners[`change:${name}`] = controlsChanged;
  frame.listen(listeners);
  renderAll();
  return () => frame.dispose();
}

export default { render };
