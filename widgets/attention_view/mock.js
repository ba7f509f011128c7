// Small mock data for AttentionView: the traits the kernel would send for a 6-token prompt
// and 3 heads, in the real wire format (uint8, future cells masked), plus a minimal
// anywidget-like model. For the node tests and for trying the widget without a kernel:
//
//   import widget from "./index.js";
//   import { createMockModel, mockState } from "./mock.js";
//   widget.render({ model: createMockModel(mockState()), el: document.body });

export const MOCK_TOKENS = ["<|endoftext|>", "When", " Mary", " and", " John", " went"];

const LEVELS = 254;
const MASKED = 255;

/** Causal patterns [heads, n, n] as plain arrays of rows; NaN above the diagonal. */
export function mockPatternRows(n, heads = 3) {
  const out = [];
  for (let h = 0; h < heads; h++) {
    const rows = [];
    for (let i = 0; i < n; i++) {
      const row = new Array(n).fill(NaN);
      for (let j = 0; j <= i; j++) row[j] = 0;
      if (h % 3 === 0) {
        row[i === 0 ? 0 : i - 1] = 1; // previous token
      } else if (h % 3 === 1) {
        row[0] = 1; // first token (an attention sink)
      } else {
        for (let j = 0; j <= i; j++) row[j] = 1 / (i + 1); // uniform over the past
      }
      rows.push(row);
    }
    out.push(rows);
  }
  return out;
}

/** Quantise like attnviz.widgets.arrays.encode_array(x, "uint8", masked=isnan(x)). */
export function encodeUint8(rows3d) {
  const flat = rows3d.flat(2);
  const finite = flat.filter((v) => Number.isFinite(v));
  const lo = finite.length ? Math.min(...finite) : 0;
  const hi = finite.length ? Math.max(...finite) : 0;
  const scale = (hi - lo) / LEVELS;
  const bytes = new Uint8Array(flat.length);
  flat.forEach((v, i) => {
    bytes[i] = Number.isFinite(v) ? (scale > 0 ? Math.round((v - lo) / scale) : 0) : MASKED;
  });
  const shape = [rows3d.length, rows3d[0].length, rows3d[0][0].length];
  // ipywidgets delivers buffers as DataViews, possibly into a larger buffer: do the same.
  const buffer = new ArrayBuffer(bytes.length + 3);
  new Uint8Array(buffer, 3).set(bytes);
  return {
    dtype: "uint8",
    shape,
    data: new DataView(buffer, 3, bytes.length),
    scale,
    offset: lo,
    masked: flat.some((v) => !Number.isFinite(v)),
  };
}

/** The widget's traits for the mock prompt. */
export function mockState(tokens = MOCK_TOKENS, heads = 3) {
  return {
    prompt: tokens.slice(1).join(""),
    layer: 0,
    head: 0,
    tokens: [...tokens],
    patterns: encodeUint8(mockPatternRows(tokens.length, heads)),
    layers: [0, 1],
    n_heads: heads,
    downsampled: 1,
    error: "",
    busy: false,
  };
}

/** A minimal stand-in for anywidget's model: get / set / on / off / save_changes. */
export function createMockModel(state = mockState()) {
  const values = { ...state };
  const listeners = new Map();
  const saved = [];
  return {
    get: (name) => values[name],
    set(name, value) {
      values[name] = value;
      for (const fn of listeners.get(`change:${name}`) ?? []) fn();
    },
    on(event, fn) {
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event).add(fn);
    },
    off(event, fn) {
      listeners.get(event)?.delete(fn);
    },
    save_changes() {
      saved.push({ ...values });
    },
    saved,
    listenerCount: () => [...listeners.values()].reduce((n, s) => n + s.size, 0),
  };
}
