// SteeringLab's data without the DOM (node tests): a continuation cut into plain and marked
// pieces at the target-word hits the kernel found, and the sweep's points as table rows.

import { fixed } from "../shared/format.js";

/** [{ text, hit }] pieces of `text`, the [start, end) `hits` marked (overlaps and bad spans ignored). */
export function pieces(text, hits) {
  const out = [];
  let at = 0;
  for (const [start, end] of [...(hits ?? [])].sort((a, b) => a[0] - b[0])) {
    if (!(start >= at && end > start && end <= text.length)) continue;
    if (start > at) out.push({ text: text.slice(at, start), hit: false });
    out.push({ text: text.slice(start, end), hit: true });
    at = end;
  }
  if (at < text.length || out.length === 0) out.push({ text: text.slice(at), hit: false });
  return out;
}

/** The clicked point of a sweep ([series, index]), or null. */
export function pointOf(sweep, point) {
  if (!Array.isArray(point) || point.length !== 2) return null;
  return sweep?.points?.[point[0]]?.[point[1]] ?? null;
}

/** A point's figures as one line. */
export function pointSummary(p) {
  const inc = (x) => `${x >= 0 ? "+" : ""}${fixed(x, 3)}`;
  return `${p.method} at relative ${fixed(p.relative, 2)} (coef ${fixed(p.coef, 3)}): P(success) ${fixed(p.p_success, 2)} [${fixed(p.p_lo, 2)}, ${fixed(p.p_hi, 2)}] · loss ${inc(p.loss_increase)} [${inc(p.loss_increase_lo)}, ${inc(p.loss_increase_hi)}] nats/token · KL ${fixed(p.kl, 3)} · distinct bigrams ${fixed(p.distinct_2, 2)} · zlib ratio ${fixed(p.zlib_ratio, 2)}`;
}
