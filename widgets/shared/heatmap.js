// A 2-D array drawn on a <canvas>, one canvas pixel per cell, scaled up by CSS with
// nearest-neighbour sampling (image-rendering: pixelated) so cells stay crisp squares.
// NaN cells (masked; see arrays.js) get MASK_COLOR, which is not on the colour scale.
// colorize() is pure (no DOM) so it runs under node --test.

// Sequential scale from paper white (low) through amber and brick to deep plum (high):
// [position, r, g, b].
const SCALE_STOPS = [
  [0.0, 251, 247, 239],
  [0.3, 243, 194, 96],
  [0.65, 203, 88, 62],
  [1.0, 58, 24, 80],
];

/** RGB of masked (NaN) cells: a cool slate, distinct from every colour of the scale. */
export const MASK_COLOR = [120, 154, 190];

const LUT_SIZE = 256;
let lut = null; // LUT_SIZE * 3 bytes

function scaleLookup() {
  lut ??= buildLut(SCALE_STOPS);
  return lut;
}

/** RGB of a position t in [0, 1] on the colour scale (clamped). */
export function scaleColor(t) {
  const table = scaleLookup();
  const i = Math.round(Math.min(1, Math.max(0, t)) * (LUT_SIZE - 1)) * 3;
  return [table[i], table[i + 1], table[i + 2]];
}

/**
 * RGBA pixels (rows * cols * 4, row-major) for `data[0 .. rows*cols)`, values mapped
 * linearly from [vmin, vmax] onto the colour scale (clamped; +-Infinity clamp to the ends).
 * NaN -> MASK_COLOR. A constant field (vmin === vmax) takes the middle of the scale.
 */
export function colorize(data, rows, cols, { vmin = 0, vmax = 1 } = {}) {
  const n = rows * cols;
  if (data.length < n) {
    throw new RangeError(`heatmap: ${rows}x${cols} needs ${n} values, got ${data.length}`);
  }
  const table = scaleLookup();
  const span = vmax - vmin;
  const k = span > 0 ? (LUT_SIZE - 1) / span : 0;
  const mid = (LUT_SIZE >> 1) * 3;
  const out = new Uint8ClampedArray(n * 4);
  for (let i = 0, p = 0; i < n; i++, p += 4) {
    const v = data[i];
    if (Number.isNaN(v)) {
      out[p] = MASK_COLOR[0];
      out[p + 1] = MASK_COLOR[1];
      out[p + 2] = MASK_COLOR[2];
    } else {
      let j = mid;
      if (k > 0) {
        const x = (v - vmin) * k;
        j = (x <= 0 ? 0 : x >= LUT_SIZE - 1 ? LUT_SIZE - 1 : Math.round(x)) * 3;
      }
      out[p] = table[j];
      out[p + 1] = table[j + 1];
      out[p + 2] = table[j + 2];
    }
    out[p + 3] = 255;
  }
  return out;
}

// Diverging scale for signed differences: blue (negative) through near-white to red.
const DIVERGING_STOPS = [
  [0.0, 33, 102, 172],
  [0.5, 247, 247, 247],
  [1.0, 178, 24, 43],
];
let divergingLut = null;

function buildLut(stops) {
  const table = new Uint8ClampedArray(LUT_SIZE * 3);
  for (let i = 0; i < LUT_SIZE; i++) {
    const t = i / (LUT_SIZE - 1);
    let k = 1;
    while (k < stops.length - 1 && stops[k][0] < t) k++;
    const [t0, ...c0] = stops[k - 1];
    const [t1, ...c1] = stops[k];
    const u = (t - t0) / (t1 - t0);
    for (let ch = 0; ch < 3; ch++) table[i * 3 + ch] = Math.round(c0[ch] + u * (c1[ch] - c0[ch]));
  }
  return table;
}

/** RGB of a position t in [0, 1] on the diverging scale (0.5 is zero). */
export function divergingColor(t) {
  divergingLut ??= buildLut(DIVERGING_STOPS);
  const i = Math.round(Math.min(1, Math.max(0, t)) * (LUT_SIZE - 1)) * 3;
  return [divergingLut[i], divergingLut[i + 1], divergingLut[i + 2]];
}

/**
 * RGBA pixels of signed values on the diverging scale, -bound..+bound (clamped; bound <= 0
 * draws everything as zero). NaN -> MASK_COLOR.
 */
export function divergingColorize(data, rows, cols, bound) {
  divergingLut ??= buildLut(DIVERGING_STOPS);
  const b = bound > 0 ? bound : 1;
  const out = new Uint8ClampedArray(rows * cols * 4);
  for (let i = 0, p = 0; i < rows * cols; i++, p += 4) {
    const v = data[i];
    const rgb = Number.isNaN(v) ? MASK_COLOR : null;
    const j = rgb ? 0 : Math.round(((Math.max(-b, Math.min(b, v)) / b + 1) / 2) * (LUT_SIZE - 1)) * 3;
    out[p] = rgb ? rgb[0] : divergingLut[j];
    out[p + 1] = rgb ? rgb[1] : divergingLut[j + 1];
    out[p + 2] = rgb ? rgb[2] : divergingLut[j + 2];
    out[p + 3] = 255;
  }
  return out;
}

/**
 * Draw `data` (a rows x cols row-major Float32Array or similar) on `canvas`.
 * The canvas gets one pixel per cell; its CSS size is cols*cellPx by rows*cellPx, where
 * cellPx (default: fit the longer side into maxPx, at most 16 px a cell) may be fractional.
 */
export function drawHeatmap(canvas, data, rows, cols, options = {}) {
  const { vmin = 0, vmax = 1, maxPx = 320 } = options;
  const cellPx = options.cellPx ?? Math.min(16, maxPx / Math.max(rows, cols, 1));
  drawPixels(canvas, () => colorize(data, rows, cols, { vmin, vmax }), rows, cols, cellPx);
}

/**
 * Put rows x cols RGBA pixels (from `makePixels()`, called only when there is something to draw)
 * on `canvas`, one canvas pixel per cell, cellPx CSS pixels a cell, kept crisp when scaled.
 */
export function drawPixels(canvas, makePixels, rows, cols, cellPx) {
  canvas.width = Math.max(cols, 1);
  canvas.height = Math.max(rows, 1);
  canvas.style.width = `${Math.max(1, Math.round(cols * cellPx))}px`;
  canvas.style.height = `${Math.max(1, Math.round(rows * cellPx))}px`;
  canvas.style.imageRendering = "pixelated";
  const ctx = canvas.getContext("2d");
  if (ctx === null) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (rows === 0 || cols === 0) return;
  ctx.putImageData(new ImageData(makePixels(), cols, rows), 0, 0);
}
