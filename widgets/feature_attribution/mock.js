// Mock traits for FeatureAttribution as the kernel sends them: a 6-token prompt, the features
// at its last token, one feature's DFA (float32 wire array [heads, dest + 1]; cells + remainder
// = pre-activation) and its held-out examples.

function float32Wire(values, shape) {
  const data = new Float32Array(values);
  return { dtype: "float32", shape, data: new DataView(data.buffer) };
}

export const CELLS = [
  [0, 0.25, 0, 0, 0.5, 0],
  [0, 0, 0, 1.5, 0.25, 0],
  [0.125, 0, 0, 0, -0.25, 0.125],
];

export function mockState() {
  const tokens = ["<|endoftext|>", "A", " B", " C", " A", " B"];
  const remainder = -0.5;
  const pre = CELLS.flat().reduce((a, b) => a + b, 0) + remainder; // 2.0
  return {
    prompt: "A B C A B",
    layer: 3,
    layers: [3, 5],
    tokens,
    n_heads: 3,
    downsampled: 1,
    offset: 0,
    window: [],
    error: "",
    busy: false,
    dictionary: "topk SAE, 512 features, k=16, hook_z of layer 3 of smollm2-135m",
    dest: 5,
    feature: 7,
    top: 20,
    features: {
      dest: 5, token: " B", n_active: 2, layer: 3,
      rows: [
        { feature: 7, activation: pre, pre_activation: pre, heads: [0.2, 0.7, 0.1] },
        { feature: 2, activation: 0.5, pre_activation: 0.5, heads: [0.6, 0.2, 0.2] },
      ],
    },
    dfa: {
      feature: 7, dest: 5, layer: 3, cells: float32Wire(CELLS.flat(), [3, 6]), remainder,
      pre_activation: pre, activation: pre, by_head: CELLS.map((r) => r.reduce((a, b) => a + b, 0)),
    },
    feature_info: {
      feature: 7, layer: 3, n_tokens: 4064, density: 0.02, log10_density: Math.log10(0.02),
      histogram: { edges: [-4, -3, -2, -1, 0], counts: [10, 40, 30, 5] }, dead: 3,
      examples: [{ context: 0, position: 4, activation: 3.5, tokens: [" x", " A", " y"], acts: [0, 3.5, 1], center: 1 }],
    },
  };
}
