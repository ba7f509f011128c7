// Mock traits for PatternExplorer in the real wire format: a 6-token prompt, 3 heads, the
// model's pattern and two reconstructions (blurred copies of it), their differences and KLs.
// For the node tests and for trying the widget without a kernel:
//
//   import widget from "./index.js";
//   import { createMockModel } from "../attention_view/mock.js";
//   import { mockState } from "./mock.js";
//   widget.render({ model: createMockModel(mockState()), el: document.body });

import { encodeUint8, MOCK_TOKENS, mockPatternRows } from "../attention_view/mock.js";

/** A reconstruction: each causal row mixed with the uniform row by `blur`. */
export function blurRows(rows3d, blur) {
  return rows3d.map((rows) =>
    rows.map((row, i) => row.map((v, j) => (j <= i ? (1 - blur) * v + blur / (i + 1) : NaN))),
  );
}

function minus(a, b) {
  return a.map((rows, h) => rows.map((row, i) => row.map((v, j) => v - b[h][i][j])));
}

function meanRowKl(p, q) {
  return p.map((rows, h) => {
    let sum = 0;
    for (let i = 1; i < rows.length; i++) {
      for (let j = 0; j <= i; j++) if (rows[i][j] > 0) sum += rows[i][j] * Math.log(rows[i][j] / Math.max(q[h][i][j], 1e-30));
    }
    return rows.length > 1 ? sum / (rows.length - 1) : 0;
  });
}

export function mockState(tokens = MOCK_TOKENS, heads = 3) {
  const truth = mockPatternRows(tokens.length, heads);
  const transcoder = blurRows(truth, 0.2);
  const masked = blurRows(truth, 0.3);
  return {
    prompt: tokens.slice(1).join(""),
    layer: 3,
    layers: [3, 15, 25],
    head: 0,
    n_heads: heads,
    tokens: [...tokens],
    downsampled: 1,
    window: [],
    offset: 0,
    window_size: 512,
    error: "",
    busy: false,
    has_masked: true,
    dictionary: "QK transcoder 1024+1024 features, layer 3 of a mock model, 5,217 kept pairs",
    kl: { transcoder: meanRowKl(truth, transcoder), masked: meanRowKl(truth, masked) },
    panels: {
      true: encodeUint8(truth),
      transcoder: encodeUint8(transcoder),
      masked: encodeUint8(masked),
      diff_transcoder: encodeUint8(minus(transcoder, truth)),
      diff_masked: encodeUint8(minus(masked, truth)),
    },
  };
}
