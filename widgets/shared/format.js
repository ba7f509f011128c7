// Numbers as text, the one formatter every widget uses (tables, tooltips, legends, chart ticks).
// Pure (no DOM).

/**
 * `v` as text: `digits` decimals, or `precision` significant digits (trailing zeros dropped);
 * `signed` writes the sign ("+0.012", "−0.340"; none when it rounds to zero). Missing values
 * (null, undefined, NaN, ±Infinity, not a number) are `missing`.
 */
export function formatNumber(v, { digits = 3, precision = null, signed = false, missing = "–" } = {}) {
  if (typeof v !== "number" || !Number.isFinite(v)) return missing;
  const abs = Math.abs(v);
  const s = precision === null ? abs.toFixed(digits) : String(Number(abs.toPrecision(precision)));
  if (Number(s) === 0) return s;
  if (signed) return `${v < 0 ? "−" : "+"}${s}`;
  return v < 0 ? `-${s}` : s;
}

/** An attention weight: three decimals, "<0.001" for tiny non-zero weights, "masked" for NaN. */
export function formatValue(v) {
  if (Number.isNaN(v)) return "masked";
  if (v > 0 && v < 0.0005) return "<0.001";
  return formatNumber(v);
}

/** A signed number with its sign: "+0.012", "−0.340"; "–" when missing. */
export function formatSigned(v, digits = 3) {
  return formatNumber(v, { digits, signed: true });
}

/** A KL value (nats): three decimals, "–" when missing. */
export function formatKl(v) {
  return formatNumber(v);
}

/** A number with `digits` decimals, "–" when missing. */
export function fixed(v, digits = 3) {
  return formatNumber(v, { digits });
}

/** An axis tick: plain for 0.001 <= |v| < 1e5, else in powers of ten ("1e-4", "2.5e+6"). */
export function formatTick(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "";
  const abs = Math.abs(v);
  if (abs === 0 || (abs >= 1e-3 && abs < 1e5)) return formatNumber(v, { precision: 4 });
  const [mantissa, exponent] = v.toExponential().split("e");
  return `${formatNumber(Number(mantissa), { precision: 3 })}e${exponent}`;
}
