// ArrayProbe (attnviz/widgets/probe.py): the smoke widget of the front-end platform.
// Decodes the synced `array` trait with the shared codec, draws it as a heatmap and prints
// dtype / shape / min / max. Arrays of more than two axes show their first 2-D slice
// ([0, ..., 0, :, :]); a 1-D array shows as one row, a scalar as one cell.
// The root element carries data-* attributes (dtype, shape, min, max, error) for browser tests.

import { decodeArray, finiteRange } from "../shared/arrays.js";
import { drawHeatmap } from "../shared/heatmap.js";

function formatNumber(v) {
  if (v === null) return "n/a";
  if (Number.isInteger(v)) return String(v);
  return Number(v.toPrecision(4)).toString();
}

function firstSlice(data, shape) {
  if (shape.length === 0) return { slice: data, rows: 1, cols: 1 };
  if (shape.length === 1) return { slice: data, rows: 1, cols: shape[0] };
  const rows = shape[shape.length - 2];
  const cols = shape[shape.length - 1];
  return { slice: data.subarray(0, rows * cols), rows, cols };
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "attnviz-arrays-probe";
  root.style.fontFamily = "system-ui, sans-serif";
  root.style.fontSize = "12px";

  const heading = document.createElement("div");
  heading.style.fontWeight = "600";
  const canvas = document.createElement("canvas");
  canvas.style.display = "block";
  canvas.style.margin = "4px 0";
  const info = document.createElement("div");
  info.className = "attnviz-arrays-probe-info";
  root.append(heading, canvas, info);
  el.replaceChildren(root);

  function update() {
    const title = model.get("title") ?? "";
    heading.textContent = title;
    heading.style.display = title ? "" : "none";
    try {
      const { data, shape, dtype } = decodeArray(model.get("array"));
      const { min, max } = finiteRange(data);
      const { slice, rows, cols } = firstSlice(data, shape);
      const vmin = min ?? 0;
      const vmax = max ?? 1;
      drawHeatmap(canvas, slice, rows, cols, { vmin, vmax });
      const shown = shape.length > 2 ? ` (showing [${"0, ".repeat(shape.length - 2)}:, :])` : "";
      info.textContent =
        `${dtype} · shape [${shape.join(", ")}] · min ${formatNumber(min)}` +
        ` · max ${formatNumber(max)}${shown}`;
      Object.assign(root.dataset, {
        dtype,
        shape: shape.join(","),
        min: String(min),
        max: String(max),
        error: "",
      });
    } catch (err) {
      info.textContent = `attnviz: cannot show this array: ${err.message}`;
      root.dataset.error = String(err.message);
    }
  }

  model.on("change:array", update);
  model.on("change:title", update);
  update();
  return () => {
    model.off("change:array", update);
    model.off("change:title", update);
  };
}

export default { render };
