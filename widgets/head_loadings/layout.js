// HeadLoadingExplorer's arithmetic, without the DOM (node --test runs it): cluster colours, the
// heatmap's pixels (features sorted by cluster, pooled into at most one column per CSS pixel),
// what lies under the mouse, a cluster's features nearest its centre, and the map's points.

import { decodeArray } from "../shared/arrays.js";

// The first colours are Okabe-Ito's (colour-blind safe); later clusters step round the hue circle
// by the golden angle, so neighbours never look alike even at k = 64.
const FIRST = [
  [0, 114, 178],
  [213, 94, 0],
  [0, 158, 115],
  [204, 121, 167],
  [230, 159, 0],
  [86, 180, 233],
  [120, 94, 240],
  [140, 86, 75],
];

function hslToRgb(h, s, l) {
  const a = s * Math.min(l, 1 - l);
  const f = (n) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

/** RGB of cluster `c`. */
export function clusterColor(c) {
  if (c < 0) return [150, 150, 150];
  if (c < FIRST.length) return FIRST[c];
  return hslToRgb((c * 137.508) % 360, 0.55 + 0.2 * (c % 2), 0.42 + 0.12 * (c % 3));
}

export const css = (rgb, alpha = 1) => (alpha === 1 ? `rgb(${rgb.join(", ")})` : `rgba(${rgb.join(", ")}, ${alpha})`);

/** The arrays of the `data` and `clustering` traits, decoded once: null before the analysis. */
export function decodeState(data, clustering) {
  if (!data?.loadings?.shape || !clustering?.labels?.shape) return null;
  const loadings = decodeArray(data.loadings);
  const [n, cols] = loadings.shape;
  const centres = decodeArray(clustering.centres);
  return {
    n,
    cols,
    k: clustering.k,
    features: decodeArray(data.features).data,
    loadings: loadings.data,
    norms: decodeArray(data.norms).data,
    map: decodeArray(data.map).data,
    labels: decodeArray(clustering.labels).data,
    order: decodeArray(clustering.order).data,
    centres: centres.data,
    profiles: decodeArray(clustering.profiles).data,
    sizes: clustering.sizes ?? [],
  };
}

/** Where each cluster starts in the sorted order: [0, size0, size0 + size1, ..., n]. */
export function boundaries(sizes) {
  const out = [0];
  for (const s of sizes) out.push(out[out.length - 1] + s);
  return out;
}

/**
 * The heatmap as rows = heads, columns = features in `order`, pooled into `bins` columns (the
 * mean of the features each covers; bins = n draws one column per feature). Float32Array
 * [cols x bins] and its largest value.
 */
export function heatmapValues(s, bins) {
  const { n, cols, loadings, order } = s;
  const out = new Float32Array(cols * bins);
  let max = 0;
  for (let b = 0; b < bins; b++) {
    const lo = Math.floor((b * n) / bins);
    const hi = Math.max(lo + 1, Math.floor(((b + 1) * n) / bins));
    for (let r = 0; r < cols; r++) {
      let sum = 0;
      for (let j = lo; j < hi; j++) sum += loadings[order[j] * cols + r];
      const v = sum / (hi - lo);
      out[r * bins + b] = v;
      if (v > max) max = v;
    }
  }
  return { values: out, max };
}

/** Position in the sorted order under a fraction `x` (0..1) of the heatmap's width. */
export function sortedIndexAt(x, n) {
  return Math.max(0, Math.min(n - 1, Math.floor(x * n)));
}

/** Row indices of cluster `c`'s features, nearest its centre first (HeadLoadingAnalysis order). */
export function rankCluster(s, c) {
  const { cols, loadings, labels, centres } = s;
  const rows = [];
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] !== c) continue;
    let d = 0;
    for (let j = 0; j < cols; j++) {
      const e = loadings[i * cols + j] - centres[c * cols + j];
      d += e * e;
    }
    rows.push([Math.sqrt(d), i]);
  }
  rows.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return rows.map(([d, i]) => ({ row: i, distance: d }));
}

/** The row of feature id `f` among the clustered features, or -1. */
export function rowOf(s, f) {
  for (let i = 0; i < s.features.length; i++) if (s.features[i] === f) return i;
  return -1;
}

/** The map's points scaled into a size x size box with `pad` pixels of margin: Float32Array [n x 2]. */
export function mapPixels(points, n, size, pad = 8) {
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    x0 = Math.min(x0, points[2 * i]);
    x1 = Math.max(x1, points[2 * i]);
    y0 = Math.min(y0, points[2 * i + 1]);
    y1 = Math.max(y1, points[2 * i + 1]);
  }
  const span = Math.max(x1 - x0, y1 - y0) || 1;
  const k = (size - 2 * pad) / span;
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    out[2 * i] = pad + (points[2 * i] - x0) * k + ((size - 2 * pad) - (x1 - x0) * k) / 2;
    out[2 * i + 1] = size - pad - (points[2 * i + 1] - y0) * k - ((size - 2 * pad) - (y1 - y0) * k) / 2;
  }
  return out;
}

/** Index of the point of `px` nearest (x, y) within `radius` pixels, or -1. */
export function nearestPoint(px, x, y, radius = 6) {
  let best = -1;
  let bestD = radius * radius;
  for (let i = 0; i < px.length / 2; i++) {
    const dx = px[2 * i] - x;
    const dy = px[2 * i + 1] - y;
    const d = dx * dx + dy * dy;
    if (d <= bestD) {
      best = i;
      bestD = d;
    }
  }
  return best;
}

/** "slope −1.23 ± 0.05, R² 0.97" for a fit payload (null: no fit). */
export function fitText(fit) {
  if (!fit) return "no fit";
  const err = typeof fit.stderr === "number" ? ` ± ${fit.stderr.toFixed(2)}` : "";
  return `slope ${fit.slope.toFixed(2).replace("-", "−")}${err}, R² ${fit.r2.toFixed(2)}`;
}
