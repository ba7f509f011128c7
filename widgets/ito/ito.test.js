import assert from "node:assert/strict";
import { test } from "node:test";

import { chartLayout } from "../shared/charts.js";
import { agreementRows, decodeCodes, jaccards, methodLabel, overlapColor, rowOf, tokenLists, versusRows, wantsPareto } from "./lists.js";
import { ENCODER, ITO, mockState } from "./mock.js";

test("the per-token lists decode from the CSR wire arrays, largest first", () => {
  const d = decodeCodes(mockState().codes);
  assert.equal(d.n, 3);
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(rowOf(d.encoder, i).map((r) => [r.feature, r.activation]), ENCODER[i]);
    assert.deepEqual(rowOf(d.ito, i).map((r) => [r.feature, r.activation]), ITO[i]);
  }
  assert.deepEqual(rowOf(d.ito, 7), []);
  assert.equal(decodeCodes({}), null);
});

test("features both chose are marked shared, and the overlap is their Jaccard", () => {
  const d = decodeCodes(mockState().codes);
  const l = tokenLists(d, 0);
  assert.equal(l.shared, 1);
  assert.deepEqual(l.encoder.map((r) => r.shared), [true, false]);
  assert.deepEqual(l.ito.map((r) => r.shared), [true, false]);
  assert.deepEqual(l.errors.map((e) => Number(e.toFixed(3))), [0.1, 0.05]);
  assert.deepEqual(Array.from(jaccards(d)), [1 / 3, 0, 1].map(Math.fround)); // token 2: both empty
  assert.equal(overlapColor(NaN), "transparent");
  assert.notEqual(overlapColor(0), overlapColor(1));
});

test("agreement rows, labels and when to ask for the curves", () => {
  const rows = agreementRows(mockState().scatter.agreement);
  assert.deepEqual(rows.map((r) => r[2]), ["corr", "corr-strong", "corr-weak", "jaccard"]);
  assert.equal(rows[2][1], "–"); // NaN in Python arrives as null
  assert.match(rows[1][0], /≥ 1\.5/);
  assert.deepEqual(agreementRows({}), []);
  assert.equal(methodLabel("gp"), "gradient pursuit");
  const { dictionaries } = mockState();
  assert.equal(wantsPareto({ complete: true }, dictionaries, false), false);
  assert.equal(wantsPareto({}, dictionaries, false), true);
  assert.equal(wantsPareto({}, dictionaries, true), false); // an export has no kernel
  assert.equal(wantsPareto({}, [], false), false);
});

test("charts: a dashed baseline, a series' own colour, one marker, an interval band", () => {
  const { pareto, ce } = mockState();
  const fvu = chartLayout(pareto.charts[0].spec);
  assert.deepEqual(fvu.series.map((s) => s.dash), [false, true, false]);
  assert.deepEqual(fvu.series.map((s) => s.color), ["#009E73", "#009E73", "#000000"]);
  assert.equal(fvu.series[2].path, ""); // the encoder: a point, no line
  assert.equal(fvu.nPoints, 7);
  const layout = chartLayout(ce.charts[0].spec, { width: 400, height: 200 });
  const s = layout.series[0];
  assert.match(s.bandPath, /^M.*Z$/);
  assert.equal(s.bandPath.split(/[ML]/).length - 1, 6); // three upper ends, three lower
  const ys = s.bandPath.match(/-?[\d.]+/g).filter((_, i) => i % 2 === 1).map(Number);
  assert.ok(ys.every((y) => y >= layout.plot.top && y <= layout.plot.bottom)); // inside the axis
  assert.equal(chartLayout({ kind: "line", series: [{ name: "a", x: [1], y: [1] }] }).series[0].bandPath, "");
});

test("each method against the encoder: the absolute difference beside the ratio", () => {
  const rows = versusRows(mockState().pareto.versus);
  assert.deepEqual(rows[0].cells, ["gp", "2 (1.9)", "0.500", "+0.100", "1.25×"]);
  assert.equal(rows[0].better, false);
  assert.equal(rows[1].cells[4], "–"); // no ratio sent (a zero encoder FVU)
  assert.deepEqual(versusRows(undefined), []);
});
