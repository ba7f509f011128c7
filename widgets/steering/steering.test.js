import assert from "node:assert/strict";
import { test } from "node:test";

import { chartLayout } from "../shared/charts.js";
import { mockState } from "./mock.js";
import { pieces, pointOf, pointSummary } from "./text.js";

test("a continuation is cut into plain and marked pieces at the hits", () => {
  const { steered, unsteered } = mockState().generation;
  assert.deepEqual(pieces(steered.text, steered.hits), [
    { text: " so ", hit: false }, { text: "angry", hit: true }, { text: ", ", hit: false }, { text: "ANGRY", hit: true }, { text: "!", hit: false },
  ]);
  assert.deepEqual(pieces(unsteered.text, unsteered.hits), [{ text: unsteered.text, hit: false }]);
  assert.deepEqual(pieces("abc", [[2, 9], [-1, 1], [1, 2]]), [{ text: "a", hit: false }, { text: "b", hit: true }, { text: "c", hit: false }]);
  assert.deepEqual(pieces("", []), [{ text: "", hit: false }]);
});

test("a clicked point is found in the sweep and summarised with its intervals", () => {
  const state = mockState();
  const p = pointOf(state.sweep, state.point);
  assert.equal(p.method, "ActAdd");
  assert.equal(p.rollouts.length, 2);
  assert.match(pointSummary(p), /P\(success\) 0\.50 \[0\.30, 0\.70\] · loss \+0\.020 \[\+0\.010, \+0\.030\]/);
  assert.equal(pointOf(state.sweep, []), null);
  assert.equal(pointOf(state.sweep, [5, 0]), null);
});

test("the sweep chart has a frontier per method", () => {
  const layout = chartLayout(mockState().sweep.chart);
  assert.equal(layout.series.length, 2);
  assert.ok(layout.series.every((s) => s.frontier.length >= 1));
});
