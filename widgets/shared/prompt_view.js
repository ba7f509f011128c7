// The part every widget over one prompt shares: the frame with its prompt box, Show button, layer
// selector and "whole prompt" button; the trait listeners that refresh the picture; zooming into
// a pooled block; head selection; the contrast checkbox. A widget's index.js keeps only what it
// draws:
//
//   const view = createPromptView(model, { testid: "attention-view", trait: "patterns" });
//   ... build panels into view.body, using view.source, view.tooltip, view.zoom ...
//   view.start({ all: renderAll, head: renderHead });
//   return view.dispose;

import { createCheckbox, el, submitOnEnter, textEl } from "./controls.js";
import { batched } from "./events.js";
import { createFrame } from "./frame.js";
import { createTooltip } from "./panel.js";
import { panelSource, statusOf } from "./patterns.js";
import { zoomWindow } from "./tokens.js";

const DATA_TRAITS = ["tokens", "downsampled", "offset"];

/**
 * `trait`: the trait holding the patterns ("panels": {key: wire array}, or one wire array).
 * `pooled`: what the status line says pooled blocks do. `contrast`: the contrast checkbox's
 * title (null: no checkbox). `controls`: more controls after the layer selector. `dataTraits`:
 * more traits whose change redraws everything. `statusText` and `hasData` replace the defaults
 * (the pattern's status line; "a pattern is shown") for widgets that draw something else.
 */
export function createPromptView(model, { testid, trait = "panels", pooled = "max-pooled; click a block to zoom in", contrast = null, controls = [], dataTraits = [], statusText = null, hasData = null }) {
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
  const contrastBox = contrast === null ? null : createCheckbox("contrast", "contrast", contrast);
  const frame = createFrame(model, {
    testid,
    controls: [prompt, go, layerSelect, unzoom, ...controls, ...(contrastBox ? [contrastBox.node] : [])],
    hasData: hasData ?? (() => source.decoded !== null),
    localError: () => source.error,
    statusText: statusText ?? (() => statusOf(model, source.head(), pooled)),
  });
  const { root, body } = frame;
  if (frame.isStatic) {
    const note = textEl(
      "div",
      "av-note",
      "Exported view: hover and head selection work here; new prompts and layers need the notebook.",
      { "data-testid": "static-note" },
    );
    root.insertBefore(note, frame.controls.nextSibling);
    for (const control of [prompt, go, layerSelect, unzoom]) control.disabled = true;
  }
  const tooltip = createTooltip(root);

  /** One row per line of the prompt, up to six (a long single line scrolls sideways). */
  function fitRows() {
    prompt.rows = Math.min(6, Math.max(1, prompt.value.split("\n").length));
  }
  prompt.addEventListener("input", fitRows);

  function renderControls() {
    const value = model.get("prompt") ?? "";
    if (prompt.value !== value) prompt.value = value;
    fitRows();
    const layers = model.get("layers") ?? [];
    const have = Array.from(layerSelect.options, (o) => Number(o.value));
    if (have.length !== layers.length || have.some((v, i) => v !== layers[i])) {
      layerSelect.replaceChildren(...layers.map((layer) => textEl("option", "", `layer ${layer}`, { value: String(layer) })));
    }
    const layer = Number(model.get("layer"));
    if (layers.includes(layer)) layerSelect.value = String(layer);
    unzoom.style.display = (model.get("window") ?? []).length === 2 ? "" : "none";
  }

  function submitPrompt() {
    if (prompt.value !== (model.get("prompt") ?? "")) frame.write({ prompt: prompt.value });
  }
  submitOnEnter(prompt, submitPrompt);
  go.addEventListener("click", submitPrompt);
  unzoom.addEventListener("click", () => frame.write({ window: [] }));
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
    contrast: contrastBox,
    tokens,
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
     * `head()` after a head change, `contrast()` (default `all`) when the checkbox flips.
     */
    start({ all, head, contrast: onContrast = all }) {
      const renderAll = () => {
        source.refresh();
        frame.settled();
        root.dataset.nTokens = String(tokens().length);
        all();
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
          frame.renderStatus();
        },
      };
      for (const name of [trait, ...DATA_TRAITS, ...dataTraits]) handlers[`change:${name}`] = scheduleAll;
      frame.listen(handlers);
      contrastBox?.box.addEventListener("change", onContrast);
      renderControls();
      renderAll();
    },
    dispose: () => frame.dispose(),
  };
  return view;
}
