// Attention patterns as the widgets receive them: decoded [heads, dest, src] arrays with future
// cells NaN. Pure helpers (no DOM) for slicing heads and turning them into pixels.

import { decodeArray } from "./arrays.js";
import { formatKl } from "./format.js";
import { colorize, divergingColorize } from "./heatmap.js";

export { formatKl } from "./format.js";

/**
 * RGB of future cells (masked: a token never attends to later ones). Quieter than the shared
 * MASK_COLOR because it fills half of every causal picture; still off the colour scales.
 */
export const FUTURE_COLOR = [222, 227, 235];

function paintFuture(pixels, data, n) {
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(data[i])) pixels.set(FUTURE_COLOR, i * 4);
  }
  return pixels;
}

/**
 * RGBA pixels of a rows x cols pattern: the shared colour scale from `vmin` to `vmax` (see
 * scales.js: weights 0-1, or log10 weights -4-0), FUTURE_COLOR where a cell is NaN (masked).
 */
export function patternPixels(data, rows, cols, vmax = 1, vmin = 0) {
  return paintFuture(colorize(data, rows, cols, { vmin, vmax }), data, rows * cols);
}

/**
 * RGBA pixels of a signed difference: blue below 0, white at 0, red above, ±bound the ends.
 * Future cells are transparent, so the canvas's hatched background (CSS class av-hatched) shows
 * there: no colour of the diverging scale, light blues included, can pass for "masked".
 */
export function differencePixels(data, rows, cols, bound) {
  const pixels = divergingColorize(data, rows, cols, bound);
  for (let i = 0; i < rows * cols; i++) if (Number.isNaN(data[i])) pixels[i * 4 + 3] = 0;
  return pixels;
}

/** Largest |value| of a slice (NaN skipped); 0 for an empty or all-masked slice. */
export function absMax(slice) {
  let max = 0;
  for (let i = 0; i < slice.length; i++) {
    const v = Math.abs(slice[i]);
    if (v > max) max = v;
  }
  return max;
}

/** The rows x cols slice of head `h` of a decoded [heads, rows, cols] array (a view). */
export function headSlice(data, shape, h) {
  if (shape.length !== 3) throw new RangeError(`expected [heads, dest, src], got [${shape.join(", ")}]`);
  const [heads, rows, cols] = shape;
  if (!(h >= 0 && h < heads)) throw new RangeError(`head ${h} is not in 0-${heads - 1}`);
  return data.subarray(h * rows * cols, (h + 1) * rows * cols);
}

/** Caption of head h's thumbnail: its name and the KL of each reconstruction, named. */
export function thumbCaption(h, kl) {
  const t = kl?.transcoder?.[h];
  const m = kl?.masked?.[h];
  const parts = [`KL tc ${formatKl(t)}`];
  if (m !== undefined) parts.push(`KL map ${formatKl(m)}`);
  return `head ${h}\n${parts.join("\n")}`; // one per line: the thumbnail stays narrow
}

/** The thumbnail's tooltip: what the caption's KL values are. */
export function thumbTitle(h, kl) {
  const t = kl?.transcoder?.[h];
  const m = kl?.masked?.[h];
  const b = kl?.bias?.[h];
  const lines = [`head ${h}`, `KL(model ‖ transcoder pattern) ${formatKl(t)} nats`];
  if (m !== undefined) lines.push(`KL(model ‖ masked feature map) ${formatKl(m)} nats`);
  if (b !== undefined) lines.push(`KL(model ‖ the map's bias terms alone) ${formatKl(b)} nats`);
  return lines.join("\n");
}

/** Decode every wire array of `panels` that has a shape; throws on a bad one. */
export function decodePanels(panels) {
  const out = {};
  let shape = null;
  for (const [key, message] of Object.entries(panels ?? {})) {
    if (!message || !message.shape) continue;
    const decoded = decodeArray(message);
    if (decoded.shape.length !== 3) throw new RangeError(`${key}: expected [heads, dest, src], got [${decoded.shape.join(", ")}]`);
    if (shape && decoded.shape.join() !== shape.join()) throw new RangeError(`${key} has shape [${decoded.shape.join(", ")}], not [${shape.join(", ")}]`);
    shape = decoded.shape;
    out[key] = decoded.data;
  }
  return shape ? { shape, data: out } : null;
}

/**
 * The decoded patterns of a widget trait ("panels": {key: wire array}; any other trait: one wire
 * array, kept under that trait's name), decoded again only when the trait changes, with the
 * selected head clamped to the heads there are.
 */
export function panelSource(model, trait = "panels") {
  let decoded = null;
  let from;
  let error = "";
  const source = {
    /** Decode the trait if it changed since the last call. */
    refresh() {
      const message = model.get(trait);
      if (message === from) return;
      from = message;
      error = "";
      try {
        decoded = decodePanels(trait === "panels" ? message : { [trait]: message });
      } catch (err) {
        decoded = null;
        error = `attnviz: cannot show these patterns: ${err.message}`;
      }
    },
    get decoded() {
      return decoded;
    },
    get error() {
      return error;
    },
    head() {
      const heads = decoded ? decoded.shape[0] : Number(model.get("n_heads") ?? 1);
      return Math.min(Math.max(0, Number(model.get("head") ?? 0)), Math.max(0, heads - 1));
    },
    /** Head h's rows x cols slice of panel `key`, or null when there is no such panel. */
    slice(key, h = source.head()) {
      const data = decoded?.data[key];
      return data ? headSlice(data, decoded.shape, h) : null;
    },
  };
  return source;
}

/** The status line under the controls. */
export function statusText({ busy, nTokens, layer, head, downsampled, pooled = "max-pooled", window = [] }) {
  if (busy) return "computing…";
  if (!nTokens) return "nothing shown yet: see the message below";
  const parts = [`layer ${layer}`, `head ${head}`, `${nTokens} token${nTokens === 1 ? "" : "s"}`];
  if (window.length === 2) parts.push(`showing tokens ${window[0]}–${window[1] - 1}`);
  if (downsampled > 1) parts.push(`shown in ${downsampled}×${downsampled} blocks (${pooled})`);
  return parts.join(" · ");
}

/** statusText for a widget's current traits and head. */
export function statusOf(model, head, pooled) {
  return statusText({
    busy: false,
    nTokens: (model.get("tokens") ?? []).length,
    layer: model.get("layer"),
    head,
    downsampled: Math.max(1, Number(model.get("downsampled") ?? 1)),
    pooled,
    window: model.get("window") ?? [],
  });
}
