// Small SVG charts from one JSON spec (attnviz/widgets/charts.py writes it and turns the same spec
// into a plotly figure for to_png): line, scatter, Pareto frontier and bar charts, either axis on
// a log scale, optional error bars, a legend and a hover tooltip per point.
//
//   { kind: "line" | "scatter" | "pareto" | "bar", title,
//     x: { title, log }, y: { title, log },
//     series: [{ name, x, y, error?, labels?, mode? }],  // numbers: wire arrays or plain lists;
//                                                     // mode "lines" | "markers" (line charts)
//              color?, dash?, lo?, hi?, behind? }       // a colour instead of the palette's, a
//                                                     // dashed line, an interval band lo..hi,
//                                                     // drawn under the others (a reference)
//     frontier: { x: "min" | "max", y: "min" | "max" } }  // pareto: which way is better
//
// Points that cannot be drawn (NaN, or <= 0 on a log axis) are left out. The layout functions are
// pure (node tests); drawChart builds the elements with createElementNS and textContent only.

import { decodeArray } from "./arrays.js";
import { el, textEl } from "./controls.js";
import { formatNumber, formatTick } from "./format.js";
import { createTooltip } from "./panel.js";

const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace, a name (nothing is fetched)
/** Series colours (Okabe-Ito, colour-blind safe; charts.py PALETTE). */
export const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
export const MARGIN = { left: 62, right: 16, top: 10, bottom: 44 };

/** A spec's numbers (wire array or list) as an array of numbers (null: NaN). */
export function numbers(values) {
  if (values === null || values === undefined) return [];
  if (Array.isArray(values)) return values.map((v) => (typeof v === "number" ? v : NaN));
  return Array.from(decodeArray(values).data);
}

const drawable = (v, log) => Number.isFinite(v) && (!log || v > 0);

/** The spec's series with only their drawable points: [{ name, color, points: [{x, y, err, label, index}] }]. */
export function chartSeries(spec) {
  const logX = Boolean(spec.x?.log);
  const logY = Boolean(spec.y?.log);
  return (spec.series ?? []).map((s, i) => {
    const xs = numbers(s.x);
    const ys = numbers(s.y);
    const errs = numbers(s.error);
    const los = numbers(s.lo);
    const his = numbers(s.hi);
    const points = [];
    for (let j = 0; j < Math.min(xs.length, ys.length); j++) {
      if (!drawable(xs[j], logX) || !drawable(ys[j], logY)) continue;
      const err = Number.isFinite(errs[j]) ? Math.abs(errs[j]) : null;
      const band = drawable(los[j], logY) && drawable(his[j], logY) ? [los[j], his[j]] : null;
      points.push({ x: xs[j], y: ys[j], err, band, label: s.labels?.[j] ?? "", index: j });
    }
    const color = typeof s.color === "string" && s.color ? s.color : PALETTE[i % PALETTE.length];
    return { name: String(s.name ?? `series ${i}`), color, points, mode: s.mode ?? null, dash: Boolean(s.dash), behind: Boolean(s.behind) };
  });
}

/** [lo, hi] of `values` padded a little (log: in decades), never empty. */
export function domainOf(values, log = false, includeZero = false) {
  const vs = values.filter((v) => drawable(v, log)).map((v) => (log ? Math.log10(v) : v));
  if (includeZero && !log) vs.push(0);
  if (vs.length === 0) return log ? [0, 1] : [0, 1];
  let lo = Math.min(...vs);
  let hi = Math.max(...vs);
  if (lo === hi) {
    lo -= log ? 0.5 : Math.abs(lo) * 0.1 || 1;
    hi += log ? 0.5 : Math.abs(hi) * 0.1 || 1;
  }
  const pad = (hi - lo) * 0.05;
  lo = includeZero && !log && lo === 0 ? 0 : lo - pad;
  return log ? [10 ** lo, 10 ** (hi + pad)] : [lo, hi + pad];
}

/** A function from data to pixels mapping `domain` onto `range` (log: by decades). */
export function scaleOf(domain, range, log = false) {
  const f = log ? Math.log10 : (v) => v;
  const [d0, d1] = domain.map(f);
  const k = (range[1] - range[0]) / (d1 - d0 || 1);
  return (v) => range[0] + (f(v) - d0) * k;
}

/** Tick values inside [lo, hi]: 1-2-5 steps, or powers of ten on a log axis (1-2-5 within a short span). */
export function niceTicks(lo, hi, log = false, count = 5) {
  if (log) {
    const a = Math.floor(Math.log10(lo));
    const b = Math.ceil(Math.log10(hi));
    const mults = b - a <= 2 ? [1, 2, 5] : [1];
    const step = Math.max(1, Math.ceil((b - a) / 8));
    const out = [];
    for (let e = a; e <= b; e += step) for (const m of mults) out.push(m * 10 ** e);
    return out.filter((v) => v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9));
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out = [];
  for (let k = Math.ceil(lo / step); k * step <= hi + step * 1e-9; k++) out.push(Number((k * step).toPrecision(12)));
  return out;
}

/**
 * Indices of the points no other point beats on both axes, in order of x (`xBetter`, `yBetter`:
 * "min" or "max"; NaN points never count). The same rule as charts.py pareto_frontier.
 */
export function paretoFrontier(xs, ys, xBetter = "min", yBetter = "max") {
  const sx = xBetter === "min" ? 1 : -1;
  const sy = yBetter === "max" ? 1 : -1;
  const order = xs
    .map((_, i) => i)
    .filter((i) => Number.isFinite(xs[i]) && Number.isFinite(ys[i]))
    .sort((i, j) => sx * xs[i] - sx * xs[j] || sy * ys[j] - sy * ys[i] || i - j);
  const out = [];
  let best = -Infinity;
  for (const i of order) {
    if (sy * ys[i] > best) {
      out.push(i);
      best = sy * ys[i];
    }
  }
  return out.sort((i, j) => xs[i] - xs[j] || i - j);
}

/** A step path ("hv": along x, then up or down) through pixel points. */
function stepPath(pts) {
  return pts.map((p, i) => (i === 0 ? `M${p.px},${p.py}` : `H${p.px}V${p.py}`)).join("");
}

/** Everything drawChart draws, in pixels: axes with ticks and each series' points and paths. */
export function chartLayout(spec, { width = 480, height = 300 } = {}) {
  const kind = spec.kind ?? "line";
  const series = chartSeries(spec);
  const logX = Boolean(spec.x?.log);
  const logY = Boolean(spec.y?.log);
  const all = series.flatMap((s) => s.points);
  const yExtent = all.flatMap((p) => [...(p.err === null ? [p.y] : [p.y - p.err, p.y + p.err]), ...(p.band ?? [])]);
  const xDomain = domainOf(all.map((p) => p.x), logX);
  const yDomain = domainOf(yExtent.length ? yExtent : [0, 1], logY, kind === "bar");
  const plot = { left: MARGIN.left, top: MARGIN.top, right: width - MARGIN.right, bottom: height - MARGIN.bottom };
  const sx = scaleOf(xDomain, [plot.left, plot.right], logX);
  const sy = scaleOf(yDomain, [plot.bottom, plot.top], logY);
  const ticks = (domain, log, scale) => niceTicks(domain[0], domain[1], log).map((v) => ({ value: v, pos: scale(v), text: formatTick(v) }));
  // Bars: side by side per series, as wide as the closest two x values allow.
  const xsPx = [...new Set(all.map((p) => sx(p.x)))].sort((a, b) => a - b);
  const gap = xsPx.slice(1).reduce((m, v, i) => Math.min(m, v - xsPx[i]), plot.right - plot.left);
  const barW = Math.max(1, Math.min(40, (0.8 * gap) / Math.max(1, series.length)));
  const base = logY ? plot.bottom : sy(Math.max(yDomain[0], Math.min(0, yDomain[1])));
  const out = series.map((s, i) => {
    const points = s.points.map((p) => {
      const px = sx(p.x);
      const py = sy(p.y);
      const errPx = p.err === null ? null : [sy(logY ? Math.max(p.y - p.err, yDomain[0]) : p.y - p.err), sy(p.y + p.err)];
      const bar = kind === "bar" ? { x: px - (series.length * barW) / 2 + i * barW, width: barW, y: Math.min(py, base), height: Math.abs(base - py) } : null;
      return { ...p, px, py, errPx, bar };
    });
    const sorted = [...points].sort((a, b) => a.x - b.x);
    const path = kind === "line" && s.mode !== "markers" ? sorted.map((p, j) => `${j ? "L" : "M"}${p.px},${p.py}`).join("") : "";
    // The interval band: along the upper ends in x order, back along the lower ends.
    const banded = sorted.filter((p) => p.band);
    const bandPath = banded.length ? `${banded.map((p, j) => `${j ? "L" : "M"}${p.px},${sy(p.band[1])}`).join("")}${[...banded].reverse().map((p) => `L${p.px},${sy(p.band[0])}`).join("")}Z` : "";
    let frontier = [];
    if (kind === "pareto") {
      const idx = paretoFrontier(points.map((p) => p.x), points.map((p) => p.y), spec.frontier?.x, spec.frontier?.y);
      frontier = idx.map((j) => points[j]);
    }
    return { name: s.name, color: s.color, mode: s.mode, dash: s.dash, behind: s.behind, points, path, bandPath, frontier, frontierPath: frontier.length > 1 ? stepPath(frontier) : "" };
  });
  return {
    width,
    height,
    plot,
    kind,
    x: { title: spec.x?.title ?? "", ticks: ticks(xDomain, logX, sx) },
    y: { title: spec.y?.title ?? "", ticks: ticks(yDomain, logY, sy) },
    series: out,
    nPoints: out.reduce((n, s) => n + (s.mode === "lines" ? 0 : s.points.length), 0),
  };
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** The hover lines of a point: series, label, x and y (± error). */
export function pointLines(layout, s, p) {
  const err = p.err === null ? "" : ` ± ${formatNumber(p.err, { precision: 3 })}`;
  return [
    s.name,
    ...(p.label ? [p.label] : []),
    `${layout.x.title || "x"}: ${formatNumber(p.x, { precision: 4 })}`,
    `${layout.y.title || "y"}: ${formatNumber(p.y, { precision: 4 })}${err}`,
  ];
}

/** A chart element for `spec` (see the top of this file); data-points counts the points drawn. */
export function drawChart(spec, { width = 480, height = 300, testid = "chart" } = {}) {
  const layout = chartLayout(spec, { width, height });
  const node = el("div", "av-chart", { "data-testid": testid, "data-kind": layout.kind, "data-points": String(layout.nPoints) });
  node.style.position = "relative";
  if (spec.title) node.append(textEl("div", "av-chart-title", spec.title));
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const { plot } = layout;
  const axes = svg("g", { stroke: "#888", "stroke-width": 1 });
  axes.append(svg("line", { x1: plot.left, y1: plot.bottom, x2: plot.right, y2: plot.bottom }));
  axes.append(svg("line", { x1: plot.left, y1: plot.top, x2: plot.left, y2: plot.bottom }));
  root.append(axes);
  const label = (text, attrs) => {
    const t = svg("text", { fill: "currentColor", "font-size": 10, ...attrs });
    t.textContent = text;
    return t;
  };
  for (const t of layout.x.ticks) {
    root.append(svg("line", { x1: t.pos, x2: t.pos, y1: plot.bottom, y2: plot.bottom + 4, stroke: "#888" }));
    root.append(label(t.text, { x: t.pos, y: plot.bottom + 15, "text-anchor": "middle", "data-axis": "x" }));
  }
  for (const t of layout.y.ticks) {
    root.append(svg("line", { x1: plot.left - 4, x2: plot.right, y1: t.pos, y2: t.pos, stroke: "#e4e4e4" }));
    root.append(label(t.text, { x: plot.left - 6, y: t.pos + 3, "text-anchor": "end", "data-axis": "y" }));
  }
  root.append(label(layout.x.title, { x: (plot.left + plot.right) / 2, y: height - 6, "text-anchor": "middle", "font-size": 11 }));
  const midY = (plot.top + plot.bottom) / 2;
  root.append(label(layout.y.title, { x: 12, y: midY, "text-anchor": "middle", "font-size": 11, transform: `rotate(-90 12 ${midY})` }));
  const tooltip = createTooltip(node);
  const groups = layout.series.map((s, i) => {
    const g = svg("g", { "data-series": i, fill: s.color, stroke: s.color });
    if (s.bandPath) g.append(svg("path", { d: s.bandPath, stroke: "none", "fill-opacity": 0.15, "data-testid": "chart-band" }));
    if (s.path) g.append(svg("path", { d: s.path, fill: "none", "stroke-width": 1.5, ...(s.dash ? { "stroke-dasharray": "5 4" } : {}) }));
    if (s.frontierPath) g.append(svg("path", { d: s.frontierPath, fill: "none", "stroke-width": 2, "data-testid": "chart-frontier" }));
    for (const p of s.mode === "lines" ? [] : s.points) {
      if (p.errPx) g.append(svg("line", { x1: p.px, x2: p.px, y1: p.errPx[0], y2: p.errPx[1], "stroke-width": 1 }));
      const onFrontier = s.frontier.includes(p);
      const mark = p.bar
        ? svg("rect", { x: p.bar.x, y: p.bar.y, width: p.bar.width, height: Math.max(1, p.bar.height), stroke: "none" })
        : svg("circle", { cx: p.px, cy: p.py, r: onFrontier ? 4.5 : 3.5, "fill-opacity": layout.kind === "pareto" && !onFrontier ? 0.45 : 1, stroke: "#fff", "stroke-width": 1 });
      mark.setAttribute("class", "av-point");
      mark.setAttribute("data-testid", "chart-point");
      mark.setAttribute("data-index", String(p.index));
      if (onFrontier) mark.setAttribute("data-frontier", "true");
      mark.addEventListener("mousemove", (event) => tooltip.show(pointLines(layout, s, p), event, { series: i, index: p.index }));
      mark.addEventListener("mouseleave", () => tooltip.hide());
      g.append(mark);
    }
    return g;
  });
  // Series marked `behind` go first in the document, so the others' points sit on top of them.
  root.append(...groups.filter((_, i) => layout.series[i].behind), ...groups.filter((_, i) => !layout.series[i].behind));
  node.insertBefore(root, tooltip.node);
  if (layout.series.length > 1 || layout.series[0]?.name) {
    const legend = el("div", "av-chart-legend", { "data-testid": "chart-legend" });
    for (const s of layout.series) {
      const key = el("span", "av-chart-key");
      key.style.background = s.color;
      const item = el("span");
      item.append(key, textEl("span", "", s.name));
      legend.append(item);
    }
    node.insertBefore(legend, tooltip.node);
  }
  return node;
}
