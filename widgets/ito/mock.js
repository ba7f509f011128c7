// Mock traits for ITOExplorer as the kernel sends them: a 3-token prompt with its per-token
// lists (CSR wire arrays), one dictionary's FVU curves (a dashed random baseline, the encoder as
// one point), its CE curve with interval bands, and a feature's scatter with the agreement.

function wire(dtype, values) {
  const data = dtype === "int32" ? new Int32Array(values) : new Float32Array(values);
  return { dtype, shape: [values.length], data: new DataView(data.buffer) };
}

function part(rows, errors) {
  const ptr = [0];
  for (const r of rows) ptr.push(ptr[ptr.length - 1] + r.length);
  return {
    ptr: wire("int32", ptr),
    features: wire("int32", rows.flat().map(([f]) => f)),
    acts: wire("float32", rows.flat().map(([, a]) => a)),
    error: wire("float32", errors),
    l0: rows.flat().length / rows.length,
  };
}

/** Per token, [feature, activation] pairs: the encoder's and ITO's (token 2: neither fires). */
export const ENCODER = [[[5, 2], [3, 1]], [[1, 0.5]], []];
export const ITO = [[[5, 1.75], [7, 0.5]], [], []];

export function mockState() {
  const fvu = {
    kind: "line", title: "z-sae-L1: FVU against L0", x: { title: "L0", log: true }, y: { title: "FVU", log: true },
    series: [
      { name: "gp", color: "#009E73", x: [1, 2, 4], y: [0.8, 0.5, 0.25], labels: ["a", "b", "c"] },
      { name: "gp, random dictionary", color: "#009E73", dash: true, x: [1, 2, 4], y: [0.95, 0.9, 0.8] },
      { name: "encoder (L0 2.0)", color: "#000000", mode: "markers", x: [2], y: [0.4] },
    ],
    frontier: { x: "min", y: "max" },
  };
  const ceSpec = {
    kind: "line", title: "z-sae-L1: CE recovered against L0", x: { title: "L0", log: true }, y: { title: "CE recovered", log: false },
    series: [{ name: "gp", color: "#009E73", x: [1, 2, 4], y: [0.5, 0.7, 0.9], lo: [0.4, 0.6, 0.85], hi: [0.6, 0.8, 0.95], labels: ["x", "y", "⚠ z"] }],
    frontier: { x: "min", y: "max" },
  };
  return {
    prompt: "A B",
    dictionary: "z-sae-L1",
    method: "gp",
    l0: 2,
    token: 0,
    feature: 5,
    dictionaries: [{ name: "z-sae-L1", description: "topk SAE, 16 features, k=2, z of layer 1 of tiny", site: "z", layers: [1], d_sae: 16, splicable: true, note: "" }],
    l0s: [1, 2, 4],
    methods: ["gp"],
    token_methods: ["gp", "omp", "mp", "topk"],
    max_l0: 4,
    tokens: ["<|endoftext|>", "A", " B"],
    codes: { dictionary: "z-sae-L1", method: "gp", l0: 2, n_tokens: 3, encoder: part(ENCODER, [0.1, 0.2, 1]), ito: part(ITO, [0.05, 1, 1]) },
    pareto: {
      rows: [], charts: [{ dictionary: "z-sae-L1", spec: fvu }], n_tokens: 96, complete: true,
      versus: [
        { dictionary: "z-sae-L1", method: "gp", target_l0: 2, l0: 1.9, fvu: 0.5, encoder_l0: 2, encoder_fvu: 0.4, difference: 0.1, ratio: 1.25 },
        { dictionary: "z-sae-L1", method: "gp, random dictionary", target_l0: 2, l0: 2, fvu: 0.9, encoder_l0: 2, encoder_fvu: 0.4, difference: 0.5, ratio: null },
      ],
    },
    ce: { rows: [], charts: [{ dictionary: "z-sae-L1", spec: ceSpec, warnings: ["zero ablation barely hurts"] }], notes: [], complete: true, n_contexts: 4 },
    scatter: {
      feature: 5, dictionary: "z-sae-L1", method: "gp", l0: 2,
      chart: { kind: "line", title: "feature 5", x: { title: "encoder", log: false }, y: { title: "gp", log: false },
        series: [{ name: "held-out tokens", mode: "markers", x: [1, 2, 0], y: [0.9, 2.1, 0.3] }, { name: "ITO = encoder", mode: "lines", dash: true, x: [0, 2.1], y: [0, 2.1] }],
        frontier: { x: "min", y: "max" } },
      stats: { n_tokens: 96, encoder: 2, ito: 3, both: 2, corr: 0.97 },
      agreement: { l0: 2, method: "gp", threshold: 1.5, corr: 0.8, corr_strong: 0.9, corr_weak: null, jaccard: 0.4, pairs: 10, strong_pairs: 4 },
    },
    error: "",
    busy: false,
  };
}
