// Mock traits for HeadLoadingExplorer as the kernel sends them: 6 live features over 3 heads in
// two clusters (sizes 4 and 2), their PCA map, the cluster-size chart and one cluster's details.

function wire(Type, dtype, values, shape) {
  const data = new Type(values);
  return { dtype, shape, data: new DataView(data.buffer) };
}
const f32 = (values, shape) => wire(Float32Array, "float32", values, shape);
const i32 = (values, shape) => wire(Int32Array, "int32", values, shape);

/** Rows sum to 1; features 10-13 load on head 0, 20-21 on head 2. */
export const LOADINGS = [
  [0.9, 0.05, 0.05],
  [0.7, 0.2, 0.1],
  [0.1, 0.1, 0.8],
  [0.8, 0.1, 0.1],
  [0.6, 0.3, 0.1],
  [0.2, 0.0, 0.8],
];
export const FEATURES = [10, 11, 20, 12, 13, 21];
export const LABELS = [0, 0, 1, 0, 0, 1];
export const CENTRES = [
  [0.75, 0.1625, 0.0875],
  [0.13, 0.07, 0.8],
];

/** Cluster 0 nearest its centre first: rows by distance to CENTRES[0]. */
export const RANKED_0 = [1, 3, 0, 4];

export function mockState() {
  const order = [...RANKED_0, 2, 5];
  return {
    k: 2, cluster: 0, feature: -1, dictionary: "topk SAE, 8 features, z of layer 1 of tiny",
    notes: ["columns: query heads"], heads: ["L1 H0", "L1 H1", "L1 H2"], head_kind: "query",
    ks: [2, 3, 4], has_model: false, analysed: true, error: "", busy: false,
    data: {
      features: i32(FEATURES, [6]), loadings: f32(LOADINGS.flat(), [6, 3]),
      norms: f32([1, 1, 1, 1, 1, 1], [6]), map: f32([0, 0, 1, 0, 5, 5, 0.5, 0.2, 0.8, 0.1, 5, 4], [6, 2]),
      projection: "PCA", explained: [0.8, 0.15], d_sae: 8,
    },
    clustering: {
      k: 2, labels: i32(LABELS, [6]), order: i32(order, [6]), sizes: [4, 2],
      centres: f32(CENTRES.flat(), [2, 3]), profiles: f32(CENTRES.flat(), [2, 3]),
      inertia: 0.2, silhouette: 0.7, null_silhouette: 0.1, fit: { slope: -1, intercept: 1.386, r2: 1, stderr: null, n: 2 },
      null_sizes: [3, 3], null_fit: { slope: 0, intercept: 1.1, r2: 1, stderr: null, n: 2 },
    },
    charts: {
      sizes: {
        kind: "line", title: "cluster sizes at k = 2", x: { title: "rank", log: true }, y: { title: "features", log: true },
        series: [
          { name: "clusters (k = 2)", x: f32([1, 2], [2]), y: f32([4, 2], [2]), mode: "markers", labels: ["cluster 0: 4 features", "cluster 1: 2 features"] },
          { name: "fit: slope -1.00, R² 1.00", x: f32([1, 2], [2]), y: f32([4, 2], [2]), mode: "lines" },
        ],
        frontier: { x: "min", y: "max" },
      },
    },
    cluster_info: { cluster: 0, k: 2, size: 4, features: i32(RANKED_0.map((r) => FEATURES[r]), [4]), distances: f32([0.05, 0.07, 0.2, 0.2], [4]) },
    feature_info: {},
  };
}
