// The colour scales of the pattern widgets (attnviz/widgets/pattern_scales.py computes them in
// the kernel): what range each sends, how its legend and tooltips read, and the note for heads
// that put (almost) all their attention on the first token. Pure (no DOM).

import { formatNumber, formatValue } from "./format.js";

/** [value, text] of the scale selector. */
export const SCALE_CHOICES = [
  ["weights", "weights"],
  ["off_first", "without first token"],
  ["log", "log scale"],
];

/** A head counts as (almost) only a sink from this mean weight on the first token on. */
export const SINK_SHARE = 0.99;

const RANGES = {
  weights: { vmin: 0, vmax: 1, lo: "0", hi: "1", title: "attention" },
  off_first: { vmin: 0, vmax: 1, lo: "0", hi: "1", title: "attention without the first token (rows rescaled)" },
  log: { vmin: -4, vmax: 0, lo: "≤10⁻⁴", hi: "1", title: "attention (log scale)" },
};

/** { vmin, vmax, lo, hi, title } of a scale (unknown scales read as weights). */
export function scaleRange(scale) {
  return RANGES[scale] ?? RANGES.weights;
}

/** The tooltip's value line for a cell on `scale`; `firstToken`: the cell is the first token's column. */
export function scaleValueText(scale, value, firstToken = false, pooled = "") {
  if (Number.isNaN(value)) return "masked: a token never sees later tokens";
  if (scale === "off_first") {
    if (firstToken) return "the first token: left out of this scale";
    return `${formatValue(value)} of the attention not on the first token${pooled}`;
  }
  if (scale === "log") {
    const w = 10 ** value;
    return value <= -4 ? `attention ≤ 0.0001 (log scale)${pooled}` : `attention ${formatNumber(w, { precision: 2 })} (log₁₀ ${formatNumber(value, { digits: 2 })})${pooled}`;
  }
  return `attention ${formatValue(value)}${pooled}`;
}

/** A note for head `head` with mean first-token weight `share`, or "" when it is no sink. */
export function sinkNote(head, share, scale) {
  if (!(share >= SINK_SHARE)) return "";
  const pct = share >= 0.9995 ? ">99.9" : formatNumber(100 * share, { digits: 1 });
  const rest = formatNumber(100 * (1 - share), { precision: 2 });
  if (scale === "off_first") return `Head ${head} puts ${pct}% of its attention on the first token; each row shows where the remaining ${rest}% goes.`;
  return `Head ${head} puts ${pct}% of its attention on the first token (an attention sink): choose "without first token" to see where the remaining ${rest}% goes.`;
}

/** A value on `scale` as a weight: log values back as weights; NaN as "masked". */
export function scaleNumber(scale, value) {
  if (Number.isNaN(value)) return "masked";
  if (scale === "log") return value <= -4 ? "≤0.0001" : formatNumber(10 ** value, { precision: 2 });
  return formatValue(value);
}
