import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeArray } from "../shared/arrays.js";
import { cellLines, columnSums, contributionColor, examplesWanted, MAX_COLS, poolColumns, rowSums, sumCells } from "./index.js";
import { CELLS, mockState } from "./mock.js";

test("the mock's DFA cells, decoded from the wire, add up to its pre-activation", () => {
  const { dfa } = mockState();
  const { data, shape } = decodeArray(dfa.cells);
  assert.deepEqual(shape, [3, 6]);
  assert.equal(sumCells(data) + dfa.remainder, dfa.pre_activation);
  assert.deepEqual(Array.from(rowSums(data, 3, 6)), dfa.by_head);
  assert.deepEqual(Array.from(columnSums(data, 3, 6)), [0.125, 0.25, 0, 1.5, 0.5, 0.125]);
});

test("long prompts are summed into blocks of sources and still add up", () => {
  const cols = 2 * MAX_COLS + 7;
  const data = Float32Array.from({ length: 2 * cols }, (_, i) => (i % 5) - 2);
  const factor = Math.ceil(cols / MAX_COLS);
  const pooled = poolColumns(data, 2, cols, factor);
  assert.equal(pooled.cols, Math.ceil(cols / factor));
  assert.ok(pooled.cols <= MAX_COLS);
  assert.equal(sumCells(pooled.data), sumCells(data));
  assert.equal(pooled.data[0], data[0] + data[1] + data[2]);
  assert.equal(poolColumns(data, 2, cols, 1).data, data);
});

test("shading and hover text", () => {
  assert.equal(contributionColor(0, 1), "transparent");
  assert.equal(contributionColor(1, 0), "transparent");
  assert.equal(contributionColor(1, 1), "rgb(178, 24, 43)"); // the red end
  assert.equal(contributionColor(-2, 1), "rgb(33, 102, 172)"); // clamped to the blue end
  const tokens = mockState().tokens;
  assert.deepEqual(cellLines(tokens, 1, 3, 4, 1.5), ["head 1", 'source 3: " C"', "contribution +1.5000"]);
  assert.match(cellLines(tokens, 0, 2, 5, -0.25)[1], /^sources 2–4: /);
  assert.equal(CELLS.length, 3);
});

test("examples are asked for only when feature_info is not the shown feature's", () => {
  const { dfa, feature_info: info } = mockState();
  assert.equal(examplesWanted(dfa, info), null); // the mock's match
  assert.deepEqual(examplesWanted(dfa, {}), { feature: 7, layer: 3 });
  assert.deepEqual(examplesWanted(dfa, { ...info, layer: 5 }), { feature: 7, layer: 3 }); // same id, another SAE
  assert.deepEqual(examplesWanted({ ...dfa, feature: 2 }, info), { feature: 2, layer: 3 });
  assert.equal(examplesWanted({}, {}), null); // no feature shown
});
