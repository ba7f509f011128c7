import assert from "node:assert/strict";
import { test } from "node:test";

import { chartLayout, chartSeries, domainOf, niceTicks, paretoFrontier, pointLines, scaleOf } from "./charts.js";
import { logBarsSpec, paretoSpec } from "./charts_mock.js";
import { fixed, formatNumber, formatSigned, formatTick, formatValue } from "./format.js";

test("wire arrays and lists both become points; undrawable ones are left out", () => {
  const [pareto] = chartSeries(paretoSpec());
  assert.equal(pareto.points.length, 7); // the NaN x is dropped
  assert.equal(pareto.points[3].label, "alpha 3");
  const bars = chartSeries(logBarsSpec());
  assert.deepEqual(bars.map((s) => s.points.length), [3, 4]); // y = 0 has no place on a log axis
  assert.equal(bars[1].points[2].err, 1);
});

test("the Pareto frontier keeps exactly the points nothing beats", () => {
  const xs = [1, 2, 3, 2.5, 4, NaN];
  const ys = [1, 3, 2, 3.5, 5, 9];
  assert.deepEqual(paretoFrontier(xs, ys), [0, 1, 3, 4]);
  assert.deepEqual(paretoFrontier(xs, ys, "max", "max"), [4]);
  assert.deepEqual(paretoFrontier(xs, ys, "min", "min"), [0]);
  const layout = chartLayout(paretoSpec());
  assert.deepEqual(layout.series[0].frontier.map((p) => p.index), [0, 1, 3, 5]);
  assert.match(layout.series[0].frontierPath, /^M[\d.]+,[\d.]+(H[\d.]+V[\d.]+){3}$/);
});

test("scales map domains onto pixels, log scales by decades", () => {
  const lin = scaleOf([0, 10], [100, 200]);
  assert.equal(lin(5), 150);
  const log = scaleOf([1, 100], [0, 200], true);
  assert.equal(log(10), 100);
  const [lo, hi] = domainOf([1, 1000], true);
  assert.ok(lo < 1 && lo > 0.5 && hi > 1000 && hi < 2000);
  assert.deepEqual(domainOf([3, 3]), [2.7, 3.3 + 0.6 * 0.05].map((v, i) => (i ? v : 3 - 0.3 - 0.6 * 0.05)));
});

test("ticks fall on 1-2-5 steps, or powers of ten on log axes", () => {
  assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0.5, 1.2e4, true), [1, 10, 100, 1000, 10000]);
  assert.deepEqual(niceTicks(1, 60, true), [1, 2, 5, 10, 20, 50]);
});

test("every drawable point has a place inside the plot; bars stand on the axis", () => {
  const layout = chartLayout(logBarsSpec(), { width: 400, height: 250 });
  assert.equal(layout.nPoints, 7);
  for (const s of layout.series) {
    for (const p of s.points) {
      assert.ok(p.px >= layout.plot.left && p.px <= layout.plot.right);
      assert.ok(p.py >= layout.plot.top && p.py <= layout.plot.bottom);
      assert.ok(Math.abs(p.bar.y + p.bar.height - layout.plot.bottom) < 1e-9);
    }
  }
  const first = layout.series.map((s) => s.points[0].bar.x);
  assert.ok(first[0] < first[1]); // side by side, not on top of each other
  assert.deepEqual(pointLines(layout, layout.series[1], layout.series[1].points[2]), ["k", "L0: 100", "count: 4 ± 1"]);
});

test("one number formatter under every format", () => {
  assert.equal(formatNumber(0.12345), "0.123");
  assert.equal(formatNumber(-2.5, { digits: 1 }), "-2.5");
  assert.equal(formatNumber(NaN), "–");
  assert.equal(formatNumber(1234.5678, { precision: 3 }), "1230");
  assert.equal(formatSigned(-0.34), "−0.340");
  assert.equal(formatSigned(0.0001), "0.000");
  assert.equal(formatValue(NaN), "masked");
  assert.equal(formatValue(0.0001), "<0.001");
  assert.equal(fixed(undefined), "–");
  assert.equal(formatTick(0.0001), "1e-4");
  assert.equal(formatTick(2.5e6), "2.5e+6");
  assert.equal(formatTick(250), "250");
});

test("a series marked behind keeps its place in the spec and says so to the drawing", () => {
  const layout = chartLayout({ kind: "line", series: [{ name: "a", x: [1, 2], y: [1, 2] }, { name: "null", x: [1, 2], y: [1, 2], behind: true }] });
  assert.deepEqual(layout.series.map((s) => [s.name, s.behind]), [["a", false], ["null", true]]);
});
