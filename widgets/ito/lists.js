// ITOExplorer's data, without the DOM (node tests): the per-token feature lists of the encoder and
// of ITO, decoded from the `codes` trait (CSR: ptr [n + 1], features, acts, error [n]), their
// overlap, and the agreement figures as table rows.

import { decodeArray } from "../shared/arrays.js";
import { fixed, formatNumber } from "../shared/format.js";

/** What a method is called in the widget. */
export function methodLabel(method) {
  return { gp: "gradient pursuit", omp: "orthogonal MP", mp: "matching pursuit", topk: "top-k of the encoder", encoder: "encoder" }[method] ?? String(method);
}

function decodePart(part) {
  const ptr = decodeArray(part.ptr).data;
  return { ptr, features: decodeArray(part.features).data, acts: decodeArray(part.acts).data, error: decodeArray(part.error).data, l0: part.l0 };
}

/** The codes trait decoded, or null when there is none. */
export function decodeCodes(codes) {
  if (!codes?.encoder?.ptr || !codes?.ito?.ptr) return null;
  const encoder = decodePart(codes.encoder);
  const ito = decodePart(codes.ito);
  return { n: encoder.ptr.length - 1, dictionary: codes.dictionary, method: codes.method, l0: codes.l0, encoder, ito };
}

/** Token `i`'s features in one part: [{ feature, activation }], largest first (as sent). */
export function rowOf(part, i) {
  const out = [];
  if (!(i >= 0 && i + 1 < part.ptr.length)) return out;
  for (let j = part.ptr[i]; j < part.ptr[i + 1]; j++) out.push({ feature: part.features[j], activation: part.acts[j] });
  return out;
}

/** Token `i`'s two lists, each row marked `shared` when the other list has its feature too. */
export function tokenLists(decoded, i) {
  const encoder = rowOf(decoded.encoder, i);
  const ito = rowOf(decoded.ito, i);
  const inEncoder = new Set(encoder.map((r) => r.feature));
  const inIto = new Set(ito.map((r) => r.feature));
  const mark = (rows, other) => rows.map((r) => ({ ...r, shared: other.has(r.feature) }));
  const shared = encoder.filter((r) => inIto.has(r.feature)).length;
  return { encoder: mark(encoder, inIto), ito: mark(ito, inEncoder), shared, errors: [decoded.encoder.error[i], decoded.ito.error[i]] };
}

/** Jaccard overlap of the two feature sets at each token (1 when both are empty). */
export function jaccards(decoded) {
  const out = new Float32Array(decoded.n);
  for (let i = 0; i < decoded.n; i++) {
    const a = new Set(rowOf(decoded.encoder, i).map((r) => r.feature));
    const b = rowOf(decoded.ito, i).map((r) => r.feature);
    const both = b.filter((f) => a.has(f)).length;
    const union = a.size + b.length - both;
    out[i] = union === 0 ? 1 : both / union;
  }
  return out;
}

/** Background of a token whose sets overlap by `j` (0: none, white-ish; 1: all, green). */
export function overlapColor(j) {
  if (!Number.isFinite(j)) return "transparent";
  const t = Math.max(0, Math.min(1, j));
  return `rgba(0, 158, 115, ${(0.08 + 0.55 * t).toFixed(3)})`;
}

/** The agreement figures as [label, text, testid, value] rows. */
export function agreementRows(a) {
  if (!a || a.corr === undefined) return [];
  const threshold = formatNumber(a.threshold, { precision: 3 });
  return [
    ["correlation, all active pairs", fixed(a.corr, 3), "corr", a.corr],
    [`correlation, encoder ≥ ${threshold} (strong)`, fixed(a.corr_strong, 3), "corr-strong", a.corr_strong],
    [`correlation, encoder < ${threshold} (weak)`, fixed(a.corr_weak, 3), "corr-weak", a.corr_weak],
    ["Jaccard of the chosen sets, per token", fixed(a.jaccard, 3), "jaccard", a.jaccard],
  ];
}

/** Whether the front end should ask for the FVU curves (not yet complete, a kernel to ask). */
export function wantsPareto(pareto, dictionaries, isStatic) {
  return !isStatic && (dictionaries ?? []).length > 0 && pareto?.complete !== true;
}

/** The table of each method against the encoder (pareto.versus) as rows of cell texts: method,
 * L0, FVU, its difference from the encoder's (absolute) and the ratio. */
export function versusRows(versus) {
  return (versus ?? []).map((r) => ({
    dictionary: r.dictionary,
    cells: [r.method, `${r.target_l0} (${fixed(r.l0, 1)})`, fixed(r.fvu, 3), `${r.difference >= 0 ? "+" : ""}${fixed(r.difference, 3)}`, r.ratio === null || r.ratio === undefined ? "–" : `${fixed(r.ratio, 2)}×`],
    better: r.difference < 0,
  }));
}
