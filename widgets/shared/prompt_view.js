// The part every widget over one prompt shares: the frame with its prompt box, Show button, layer
// selector and "whole prompt" button; the trait listeners that refresh the picture; zooming into
// a pooled block; head selection; the colour-scale selector and the attention-sink note. A
// widget's index.js keeps only what it draws:
//
//   const view = createPromptView(model, { testid: "attention-view", trait: "patterns" });
//   ... build panels into view.body, using view.source, view.tooltip, view.zoom ...
//   view.start({ all: renderAll, head: renderHead });
//   return view.dispose;

import { createCheckbox, el, fillSelect, submitOnEnter, textEl } from "./controls.js";
import { batched } from "./events.js";
import { createFrame } from "./frame.js";
import { createTooltip } from "./panel.js";
import { panelSource, statusOf } from "./patterns.js";
import { SCALE_CHOICES, scaleRange, sinkNote } from "./scales.js";
import { zoomWindow } from "./tokens.js";

const DATA_TRAITS = ["tokens", "downsampled", "offset"];
const STATIC_NOTE = "Exported view: hover and head selection work here; new prompts, layers and scales need the notebook.";

/**
 * The text of a prompt box whose kernel prompt is `original`. A textarea turns "\r\n" and "\r"
 * into "\n"; a prompt written with "\r\n" keeps them (unedited, it is exactly the original), so
 * pressing Enter never changes its tokens behind the user's back.
 */
export function keepLineEndings(value, original) {
  if (value === original.replace(/\r\n?/g, "\n")) return original;
  return original.includes("\r\n") ? value.replace(/\n/g, "\r\n") : value;
}

/**
 * `trait`: the trait holding the patterns ("panels": {key: wire array}, or one wire array).
 * `pooled`: what the status line says pooled blocks do. `scales`: show the colour-scale selector
 * (weights / without the first token / log, computed in the kernel: scales.js) and the note on
 * attention-sink heads. `controls`: more controls after the layer selector. `dataTraits`:
 * more traits whose change redraws everything. `statusText` and `hasData` replace the defaults
 * (the pattern's status line; "a pattern is shown") for widgets that draw something else.
 * `staticNote`: what an exported copy says works in it.
 */
export function createPromptView(model, { testid, trait = "panels", pooled = "max-pooled; click a block to zoom in", scales = false, controls = [], dataTraits = [], statusText = null, hasData = null, staticNote = STATIC_NOTE }) {
  const source = panelSource(model, trait);
  // A textarea, not an <input>: an input drops the newlines of a multi-line prompt, and the
  // kernel would then see different text. Enter recomputes; Shift+Enter starts a new line.
  const prompt = el("textarea", "av-prompt", {
    rows: "1",
    "data-testid": "prompt",
    "aria-label": "prompt (Enter recomputes, Shift+Enter for a new line)",
    placeholder: "type a prompt and press Enter",
    spellcheck: "false",
  });
  const go = textEl("button", "av-go", "Show", { type: "button", "data-testid": "run" });
  const layerSelect = el("select", "av-layer", { "data-testid": "layer", "aria-label": "layer" });
  const unzoom = textEl("button", "av-go", "whole prompt", {
    type: "button",
    "data-testid": "unzoom",
    title: "leave the token window and show the whole prompt again",
  });
  const scaleSelect = scales
    ? el("select", "av-layer", {
        "data-testid": "scale",
        "aria-label": "colour scale",
        title: "weights: 0 to 1 · without first token: each row rescaled without the first token (for attention sinks) · log scale: 10⁻⁴ to 1 (long prompts)",
      })
    : null;
  const cut = createCheckbox("cut to context", "truncate", "a prompt longer than the model's context is cut to its first tokens instead of refused");
  const frame = createFrame(model, {
    testid,
    controls: [prompt, go, layerSelect, unzoom, ...controls, ...(scaleSelect ? [scaleSelect] : []), cut.node],
    hasData: hasData ?? (() => source.decoded !== null),
    localError: () => source.error,
    statusText: statusText ?? (() => statusOf(model, source.head(), pooled)),
  });
  const { root, body } = frame;
  if (frame.isStatic) {
    const note = textEl("div", "av-note", staticNote, { "data-testid": "static-note" });
    root.insertBefore(note, frame.controls.nextSibling);
    for (const control of [prompt, go, layerSelect, unzoom, scaleSelect, cut.box]) if (control) control.disabled = true;
    if (scaleSelect) scaleSelect.title = "the scale was chosen in the notebook; another needs the notebook";
  }
  const note = textEl("div", "av-note", "", { "data-testid": "sink-note" });
  note.style.display = "none";
  const cutNote = textEl("div", "av-note", "", { "data-testid": "cut-note" });
  root.insertBefore(note, body);
  root.insertBefore(cutNote, note);
  const tooltip = createTooltip(root);

  /** One row per line of the prompt, up to six (a long single line scrolls sideways). */
  function fitRows() {
    prompt.rows = Math.min(6, Math.max(1, prompt.value.split("\n").length));
  }
  prompt.addEventListener("input", fitRows);

  function renderControls() {
    const value = model.get("prompt") ?? "";
    if (keepLineEndings(prompt.value, value) !== value) prompt.value = value;
    fitRows();
    const layers = model.get("layers") ?? [];
    const layer = Number(model.get("layer"));
    const choices = layers.map((l) => [String(l), `layer ${l}`]);
    // A layer the widget cannot show (a bad first input) is named, not replaced by the first one.
    if (!layers.includes(layer)) choices.unshift([String(layer), `layer ${layer} (not available)`]);
    fillSelect(layerSelect, choices, String(layer));
    unzoom.style.display = (model.get("window") ?? []).length === 2 ? "" : "none";
    if (scaleSelect) fillSelect(scaleSelect, SCALE_CHOICES, model.get("scale") ?? "weights");
    // The "cut to context" box appears once it matters: a prompt refused for its length, or cut.
    const cutFrom = Number(model.get("cut_from") ?? 0);
    const refused = /cut to context/.test(model.get("error") ?? "");
    cut.box.checked = Boolean(model.get("truncate"));
    cut.node.style.display = refused || cut.box.checked || cutFrom > 0 ? "" : "none";
    cutNote.textContent = cutFrom > 0 ? `The prompt had ${cutFrom} tokens; only its first ${tokens().length} (the model's context) are shown.` : "";
    cutNote.style.display = cutFrom > 0 ? "" : "none";
  }

  /** Say so when the selected head puts (almost) all its attention on the first token. */
  function renderNote() {
    const head = source.head();
    const text = scales ? sinkNote(head, (model.get("sink") ?? [])[head], model.get("scale")) : "";
    note.textContent = text;
    note.style.display = text ? "" : "none";
    root.dataset.sink = text ? "true" : "false";
  }

  function submitPrompt() {
    const text = keepLineEndings(prompt.value, model.get("prompt") ?? "");
    if (text !== (model.get("prompt") ?? "")) frame.write({ prompt: text });
  }
  submitOnEnter(prompt, submitPrompt);
  go.addEventListener("click", submitPrompt);
  unzoom.addEventListener("click", () => frame.write({ window: [] }));
  cut.box.addEventListener("change", () => frame.write({ truncate: cut.box.checked }));
  scaleSelect?.addEventListener("change", () => {
    if (scaleSelect.value !== model.get("scale")) frame.write({ scale: scaleSelect.value });
  });
  layerSelect.addEventListener("change", () => {
    const layer = Number(layerSelect.value);
    if (layer !== model.get("layer")) frame.write({ layer });
  });

  const tokens = () => model.get("tokens") ?? [];
  const factor = () => Math.max(1, Number(model.get("downsampled") ?? 1));
  const offset = () => Number(model.get("offset") ?? 0);

  const view = {
    frame,
    root,
    body,
    source,
    tooltip,
    tokens,
    /** The colour scale's { vmin, vmax, lo, hi, title } and name (scales.js). */
    scale: () => ({ name: model.get("scale") ?? "weights", ...scaleRange(model.get("scale")) }),
    factor,
    offset,
    /** The selected head, clamped to the heads there are. */
    head: () => source.head(),
    /** Select head `h` (view state: drawn at once, nothing recomputed). */
    selectHead(h) {
      model.set("head", h);
      model.save_changes();
    },
    /** Zoom into the token window around a clicked block of a pooled picture; false if none. */
    zoom(cell) {
      if (factor() <= 1 || frame.isStatic) return false; // only pooled pictures zoom
      frame.write({ window: zoomWindow(cell, factor(), offset(), tokens().length, Number(model.get("window_size") ?? 512)) });
      return true;
    },
    /**
     * Start drawing: `all()` after new data (source refreshed, before the status line),
     * `head()` after a head change.
     */
    start({ all, head }) {
      const renderAll = () => {
        source.refresh();
        frame.settled();
        root.dataset.nTokens = String(tokens().length);
        root.dataset.scale = model.get("scale") ?? "weights";
        all();
        renderNote();
        tooltip.hide();
        frame.renderStatus();
      };
      const scheduleAll = batched(renderAll);
      const handlers = {
        "change:prompt": renderControls,
        "change:layers": renderControls,
        "change:window": () => {
          frame.settled();
          renderControls();
          frame.renderStatus();
        },
        "change:layer": () => {
          renderControls();
          frame.renderStatus();
        },
        "change:head": () => {
          tooltip.hide();
          head();
          renderNote();
          frame.renderStatus();
        },
        "change:scale": renderControls,
        "change:error": renderControls,
        "change:cut_from": renderControls,
        "change:truncate": renderControls,
        "change:sink": renderNote,
      };
      for (const name of [trait, ...DATA_TRAITS, ...dataTraits]) handlers[`change:${name}`] = scheduleAll;
      frame.listen(handlers);
      renderControls();
      renderAll();
    },
    dispose: () => frame.dispose(),
  };
  return view;
}
