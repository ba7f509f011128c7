// What a dictionary feature fires on, drawn the same way by every widget: its max-activating
// contexts (tokens shaded by activation, the top token outlined) and where its firing density
// sits among the other features'. Token text goes in as text only.

import { el, textEl } from "./controls.js";
import { fixed } from "./format.js";
import { scaleColor } from "./heatmap.js";
import { displayToken } from "./tokens.js";

/** Background of a token with activation `act` when the context's largest is `max`. */
export function activationColor(act, max) {
  if (!(act > 0) || !(max > 0)) return "transparent";
  const [r, g, b] = scaleColor(0.15 + 0.6 * Math.min(1, act / max));
  return `rgba(${r}, ${g}, ${b}, 0.85)`;
}

/** The histogram's bar index holding log10(density) `x`, or -1. */
export function histogramBin(edges, x) {
  if (x === null || x === undefined || !edges || edges.length < 2) return -1;
  for (let i = 0; i < edges.length - 1; i++) {
    if (x >= edges[i] && (x < edges[i + 1] || i === edges.length - 2)) return i;
  }
  return -1;
}

/** A small bar chart of the live features' log10 densities, this feature's bar dark. */
export function densityChart(info, what = "features") {
  const canvas = el("canvas", "", { "data-testid": "density-chart" });
  const counts = info.histogram?.counts ?? [];
  const edges = info.histogram?.edges ?? [];
  const w = 240;
  const h = 48;
  canvas.width = w;
  canvas.height = h;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext("2d");
  if (ctx === null || counts.length === 0) return canvas;
  const max = Math.max(...counts, 1);
  const bw = w / counts.length;
  const mine = histogramBin(edges, info.log10_density);
  // Counts on a log scale, so a feature in a sparse bin still shows; its bin is dark and marked.
  counts.forEach((c, i) => {
    const bh = c > 0 ? Math.max(3, Math.round((Math.log1p(c) / Math.log1p(max)) * (h - 10))) : 0;
    ctx.fillStyle = i === mine ? "#7a2e6e" : "#c9c2cf";
    ctx.fillRect(i * bw + 1, h - bh, bw - 2, bh);
  });
  if (mine >= 0) {
    ctx.fillStyle = "#7a2e6e";
    const x = (mine + 0.5) * bw;
    ctx.beginPath();
    ctx.moveTo(x - 4, 0);
    ctx.lineTo(x + 4, 0);
    ctx.lineTo(x, 6);
    ctx.fill();
  }
  canvas.title = `log10 firing density of the live ${what}, from ${edges[0]} to ${edges[edges.length - 1]}; this feature's bar is dark`;
  return canvas;
}

/** One line per example: its activation, then its tokens shaded by activation. */
export function exampleLines(examples) {
  return examples.map((ex) => {
    const line = el("div", "av-context", { "data-testid": "example", "data-activation": String(ex.activation) });
    const max = Math.max(...ex.acts, 1e-12);
    line.append(textEl("span", "av-axis-title", `${fixed(ex.activation, 2)}  `));
    ex.tokens.forEach((token, i) => {
      const span = textEl("span", `av-tok${i === ex.center ? " av-center" : ""}`, displayToken(token, 40));
      span.style.background = activationColor(ex.acts[i], max);
      span.title = `activation ${fixed(ex.acts[i], 3)}`;
      line.append(span);
    });
    return line;
  });
}
