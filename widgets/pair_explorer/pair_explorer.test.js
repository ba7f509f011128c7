import assert from "node:assert/strict";
import { test } from "node:test";

import { activationColor, displayCell, fixed, histogramBin, sumContributions } from "./index.js";

test("a token cell maps to its block when the pattern is pooled", () => {
  assert.deepEqual(displayCell(20, 17), { row: 20, col: 17 });
  assert.deepEqual(displayCell(20, 17, 4), { row: 5, col: 4 });
});

test("the total is the sum of every row, whatever its kind", () => {
  const rows = [
    { kind: "pair", contribution: 0.25 },
    { kind: "other_pairs", contribution: -0.125 },
    { kind: "bias_x_bias", contribution: 1 },
    { kind: "pair", contribution: null },
  ];
  assert.equal(sumContributions(rows), 1.125);
  assert.equal(sumContributions(undefined), 0);
});

test("density bins and activation shading", () => {
  const edges = [-4, -3, -2, -1, 0];
  assert.equal(histogramBin(edges, -3.5), 0);
  assert.equal(histogramBin(edges, -1), 3);
  assert.equal(histogramBin(edges, 0), 3); // the top edge belongs to the last bin
  assert.equal(histogramBin(edges, -5), -1);
  assert.equal(histogramBin(edges, null), -1);
  assert.equal(activationColor(0, 1), "transparent");
  assert.match(activationColor(1, 2), /^rgba\(\d+, \d+, \d+, 0\.85\)$/);
  assert.equal(fixed(null), "–");
  assert.equal(fixed(1.23456, 2), "1.23");
});

test("the mock decomposition adds up to its score", async () => {
  const { mockState } = await import("./mock.js");
  const { decomposition, feature_info: info } = mockState();
  assert.equal(sumContributions(decomposition.rows), decomposition.score);
  assert.equal(histogramBin(info.histogram.edges, info.log10_density), 2);
});
