// Mock traits for PairExplorer: PatternExplorer's mock patterns plus a decomposition of one cell
// (its rows add up to its score) and one feature's examples, as the kernel would send them.

import { mockState as patternState } from "../pattern_explorer/mock.js";

export function mockState() {
  const base = patternState();
  const { diff_transcoder: _t, diff_masked: _m, ...panels } = base.panels;
  const rows = [
    { kind: "pair", label: "Q12 × K7", q_feature: 12, k_feature: 7, contribution: 0.75, f_q: 2.5, f_k: 1.5, mask: 1, map_weight: 0.2, n_pairs: 1 },
    { kind: "pair", label: "Q3 × K7", q_feature: 3, k_feature: 7, contribution: -0.25, f_q: 1, f_k: 1.5, mask: 0.5, map_weight: -0.333, n_pairs: 1 },
    { kind: "other_pairs", label: "4 other kept pairs", q_feature: null, k_feature: null, contribution: 0.125, f_q: null, f_k: null, mask: null, map_weight: null, n_pairs: 4 },
    { kind: "query_x_key_bias", label: "query features × key bias", contribution: 0.5 },
    { kind: "query_bias_x_key", label: "query bias × key features", contribution: -1 },
    { kind: "bias_x_bias", label: "query bias × key bias", contribution: 0.375 },
  ];
  return {
    ...base,
    panels,
    view: "transcoder",
    map: "masked",
    top: 10,
    clicked: [],
    decomposition: {
      head: 0, dest: 4, src: 2, dest_token: base.tokens[4], src_token: base.tokens[2], kind: "masked",
      score: 0.5, total: 0.5, weight: 0.31, true_weight: 0.4, rows,
    },
    feature: { side: "q", index: 12 },
    feature_info: {
      side: "q", index: 12, layer: 3, density: 0.02, log10_density: Math.log10(0.02),
      histogram: { edges: [-4, -3, -2, -1, 0], counts: [10, 40, 30, 5] }, dead: 3, n_tokens: 4096,
      examples: [{ context: 0, position: 4, activation: 3.5, tokens: [" a", " b", " c"], acts: [0, 3.5, 1], center: 1 }],
    },
  };
}
