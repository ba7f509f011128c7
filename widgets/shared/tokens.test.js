import assert from "node:assert/strict";
import { test } from "node:test";

import { statusText } from "./patterns.js";
import { axisLabels, blockTokens, cellTokens, zoomWindow } from "./tokens.js";

const TOKENS = Array.from({ length: 40 }, (_, i) => `t${i}`);

test("inside a window, labels and tooltips name prompt positions", () => {
  assert.deepEqual(blockTokens(2, 1, 40, 10), { start: 12, end: 13 });
  assert.deepEqual(blockTokens(3, 4, 40, 20), { start: 32, end: 36 });
  const labels = axisLabels(TOKENS, 3, 1, 1, 10);
  assert.deepEqual(labels.map((l) => l.text), ["10: t10", "11: t11", "12: t12"]);
  assert.equal(labels[0].title, "10: t10");
  assert.deepEqual(cellTokens(TOKENS, 2, 0, 1, 10), ['destination 12: "t12"', 'source 10: "t10"']);
  // without a window, short prompts keep plain token labels
  assert.equal(axisLabels(TOKENS, 1)[0].text, "t0");
});

test("a click on a pooled block zooms to a window holding both ends when it can", () => {
  // 2048 tokens in blocks of 4: block (100, 90) is tokens 400-403 attending to 360-363
  const [start, end] = zoomWindow({ row: 100, col: 90 }, 4, 0, 2048, 512);
  assert.equal(end - start, 512);
  assert.ok(start <= 362 && 402 < end);
  // near the start and end of the prompt the window stays inside it
  assert.deepEqual(zoomWindow({ row: 1, col: 0 }, 4, 0, 2048, 512), [0, 512]);
  assert.deepEqual(zoomWindow({ row: 511, col: 510 }, 4, 0, 2048, 512), [1536, 2048]);
  // too far apart for one window: it ends at the destination
  assert.deepEqual(zoomWindow({ row: 400, col: 2 }, 4, 0, 2048, 512), [1091, 1603]); // token 1602 last
  // a prompt shorter than the window is shown whole
  assert.deepEqual(zoomWindow({ row: 3, col: 1 }, 2, 0, 300, 512), [0, 300]);
});

test("the status line says which stretch is shown", () => {
  const text = statusText({ busy: false, nTokens: 2048, layer: 3, head: 1, downsampled: 1, window: [512, 1024] });
  assert.equal(text, "layer 3 · head 1 · 2048 tokens · showing tokens 512–1023");
});
