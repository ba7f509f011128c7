import assert from "node:assert/strict";
import { test } from "node:test";

import { chartLayout } from "../shared/charts.js";
import { boundaries, clusterColor, decodeState, fitText, heatmapValues, mapPixels, nearestPoint, rankCluster, rowOf, sortedIndexAt } from "./layout.js";
import { FEATURES, LOADINGS, mockState, RANKED_0 } from "./mock.js";

const state = () => {
  const m = mockState();
  return decodeState(m.data, m.clustering);
};

test("the mock decodes into features, loadings and clusters", () => {
  const s = state();
  assert.equal(s.n, 6);
  assert.equal(s.cols, 3);
  assert.deepEqual(Array.from(s.features), FEATURES);
  assert.deepEqual(boundaries(s.sizes), [0, 4, 6]);
  assert.equal(rowOf(s, 20), 2);
  assert.equal(rowOf(s, 99), -1);
  assert.equal(decodeState({}, {}), null);
});

test("a cluster's features come nearest the centre first", () => {
  const s = state();
  assert.deepEqual(rankCluster(s, 0).map((r) => r.row), RANKED_0);
  assert.deepEqual(rankCluster(s, 1).map((r) => r.row), [2, 5]);
  const d = rankCluster(s, 0).map((r) => r.distance);
  assert.deepEqual(d, [...d].sort((a, b) => a - b));
});

test("the heatmap is heads x sorted features, pooled by the mean", () => {
  const s = state();
  const full = heatmapValues(s, 6);
  // row 0 (head 0) in sorted order: rows 1, 3, 0, 4, 2, 5
  assert.deepEqual(Array.from(full.values.subarray(0, 6)).map((v) => +v.toFixed(3)), [0.7, 0.8, 0.9, 0.6, 0.1, 0.2]);
  assert.equal(+full.max.toFixed(3), 0.9);
  const pooled = heatmapValues(s, 3);
  assert.equal(+pooled.values[0].toFixed(3), 0.75); // mean of 0.8 and 0.7
  assert.equal(+pooled.values[2 * 3 + 2].toFixed(3), 0.8); // head 2, last bin: rows 2 and 5
  // the feature under the mouse lies in the pooled column drawn there
  for (let x = 0; x < 1; x += 0.01) {
    const j = sortedIndexAt(x, 6);
    const bin = Math.floor(x * 3);
    assert.ok(j >= Math.floor((bin * 6) / 3) && j < Math.floor(((bin + 1) * 6) / 3));
  }
  assert.equal(LOADINGS.length, 6);
});

test("thousands of features stay cheap to draw", () => {
  const n = 20000;
  const cols = 18;
  const loadings = Float32Array.from({ length: n * cols }, (_, i) => ((i * 7919) % 101) / 101);
  const order = Int32Array.from({ length: n }, (_, i) => (i * 37) % n);
  const t = performance.now();
  const { values } = heatmapValues({ n, cols, loadings, order }, 640);
  const px = mapPixels(Float32Array.from({ length: 2 * n }, (_, i) => Math.sin(i)), n, 300);
  nearestPoint(px, 150, 150);
  assert.equal(values.length, cols * 640);
  assert.ok(performance.now() - t < 500, `took ${performance.now() - t} ms`);
});

test("cluster colours differ, the map fits its box, hover finds the nearest point", () => {
  const colours = new Set(Array.from({ length: 64 }, (_, c) => clusterColor(c).join(",")));
  assert.equal(colours.size, 64);
  const s = state();
  const px = mapPixels(s.map, s.n, 300, 8);
  for (const v of px) assert.ok(v >= 8 - 1e-6 && v <= 292 + 1e-6);
  assert.equal(nearestPoint(px, px[4], px[5]), 2);
  assert.equal(nearestPoint(px, -50, -50), -1);
  assert.ok(px[3] > px[5]); // larger y is drawn higher up
});

test("fit text and a line chart whose series draw as markers or lines", () => {
  assert.equal(fitText({ slope: -1.234, r2: 0.9712, stderr: 0.05 }), "slope −1.23 ± 0.05, R² 0.97");
  assert.equal(fitText(null), "no fit");
  const layout = chartLayout(mockState().charts.sizes);
  assert.equal(layout.series[0].path, ""); // markers only
  assert.match(layout.series[1].path, /^M/); // the fitted line
  assert.equal(layout.nPoints, 2); // only the clusters are points
  // log-log: the points' heights follow log(size)
  const [a, b] = layout.series[0].points;
  assert.ok(a.py < b.py);
});
