import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeArray } from "../shared/arrays.js";
import {
  axisLabels,
  blockTokens,
  cellAt,
  cellLabel,
  cellSize,
  describeCell,
  displayToken,
  FUTURE_COLOR,
  formatValue,
  headSlice,
  LABEL_MIN_PX,
  labelStride,
  patternPixels,
  scaleRange,
  scaleValueText,
  sinkNote,
  statusText,
} from "./index.js";
import { scaleColor } from "../shared/heatmap.js";
import { createMockModel, MOCK_TOKENS, mockState } from "./mock.js";

test("mock patterns decode to causal rows that sum to 1", () => {
  const { patterns, tokens } = mockState();
  const { data, shape } = decodeArray(patterns);
  const n = tokens.length;
  assert.deepEqual(shape, [3, n, n]);
  for (let h = 0; h < 3; h++) {
    const head = headSlice(data, shape, h);
    assert.equal(head.length, n * n);
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (let j = 0; j < n; j++) {
        const v = head[i * n + j];
        if (j > i) assert.ok(Number.isNaN(v), `head ${h} [${i}, ${j}] should be masked`);
        else sum += v;
      }
      assert.ok(Math.abs(sum - 1) < 0.02, `head ${h} row ${i} sums to ${sum}`);
    }
  }
  // head 0 is the previous-token head, head 1 the first-token head
  assert.ok(headSlice(data, shape, 0)[3 * n + 2] > 0.99);
  assert.ok(headSlice(data, shape, 1)[3 * n + 0] > 0.99);
});

test("future cells take FUTURE_COLOR, which is off the colour scale", () => {
  const px = patternPixels(new Float32Array([1, NaN, 0.5, 0]), 2, 2);
  assert.deepEqual(Array.from(px.subarray(4, 7)), FUTURE_COLOR);
  assert.deepEqual(Array.from(px.subarray(0, 3)), scaleColor(1));
  assert.deepEqual(Array.from(px.subarray(12, 15)), scaleColor(0));
  assert.ok([3, 7, 11, 15].every((i) => px[i] === 255));
  for (let t = 0; t <= 1; t += 1 / 255) {
    const c = scaleColor(t);
    const d = Math.hypot(c[0] - FUTURE_COLOR[0], c[1] - FUTURE_COLOR[1], c[2] - FUTURE_COLOR[2]);
    assert.ok(d > 30, `scale at ${t} is too close to the future colour (${d})`);
  }
  // vmax stretches the scale: 0.5 of 0.5 is the top colour
  assert.deepEqual(Array.from(patternPixels(new Float32Array([0.5]), 1, 1, 0.5).subarray(0, 3)), scaleColor(1));
});

test("colour scales: ranges, legend ends, tooltip values and the attention-sink note", () => {
  assert.deepEqual([scaleRange("weights").vmin, scaleRange("weights").vmax], [0, 1]);
  assert.deepEqual([scaleRange("log").vmin, scaleRange("log").vmax], [-4, 0]);
  assert.equal(scaleRange("nonsense").title, "attention");
  assert.match(scaleRange("off_first").title, /without the first token/);
  assert.equal(scaleValueText("weights", 0.25), "attention 0.250");
  assert.equal(scaleValueText("off_first", 0.5, true), "the first token: left out of this scale");
  assert.match(scaleValueText("off_first", 0.5), /^0\.500 of the attention not on the first token/);
  assert.match(scaleValueText("log", -2), /^attention 0\.01 \(log₁₀ -2\.00\)/);
  assert.match(scaleValueText("log", -6), /≤ 0\.0001/);
  assert.match(scaleValueText("log", NaN), /masked/);
  // a log-scale picture spans -4..0: -4 is the bottom colour, 0 the top
  assert.deepEqual(Array.from(patternPixels(Float32Array.from([-4, 0]), 1, 2, 0, -4).subarray(0, 3)), scaleColor(0));
  assert.deepEqual(Array.from(patternPixels(Float32Array.from([-4, 0]), 1, 2, 0, -4).subarray(4, 7)), scaleColor(1));
  assert.equal(sinkNote(8, 0.95, "weights"), "");
  assert.match(sinkNote(8, 0.99962, "weights"), /Head 8 puts >99\.9% .*"without first token".*0\.038%/);
  assert.match(sinkNote(8, 0.995, "off_first"), /99\.5%.*each row shows where the remaining 0\.5% goes/);
});

test("headSlice is a view of one head and refuses bad heads and shapes", () => {
  const data = Float32Array.from({ length: 2 * 2 * 3 }, (_, i) => i);
  assert.deepEqual(Array.from(headSlice(data, [2, 2, 3], 1)), [6, 7, 8, 9, 10, 11]);
  assert.equal(headSlice(data, [2, 2, 3], 1).buffer, data.buffer);
  assert.throws(() => headSlice(data, [2, 2, 3], 2), RangeError);
  assert.throws(() => headSlice(data, [2, 2, 3], -1), RangeError);
  assert.throws(() => headSlice(data, [12], 0), RangeError);
});

test("displayToken keeps text as text, shows whitespace and cuts long tokens", () => {
  assert.equal(displayToken("<img src=x onerror=alert(1)>", 40), "<img src=x onerror=alert(1)>");
  assert.equal(displayToken(" Mary"), " Mary");
  assert.equal(displayToken("\n"), "↵");
  assert.equal(displayToken("a\tb"), "a⇥b");
  assert.equal(displayToken("   "), "···");
  assert.equal(displayToken(""), "∅");
  assert.equal(displayToken(undefined), "∅");
  assert.equal(displayToken("abcdefghijklmnopqrstuvwxyz", 8), "abcdefg…");
  // cut by code points: an emoji is never split into half a surrogate pair
  assert.equal(displayToken("😀😀😀😀", 3), "😀😀…");
});

test("cell size: whole pixels for short prompts, fractional for long ones, capped", () => {
  assert.equal(cellSize(6, 480, 26), 26);
  assert.equal(cellSize(19, 480, 26), 25);
  assert.equal(cellSize(100, 480, 26), 4);
  assert.equal(cellSize(512, 480, 26), 480 / 512);
  assert.ok(cellSize(0) > 0);
  for (const n of [1, 7, 19, 60, 119, 121, 300, 512]) {
    assert.ok(n * cellSize(n, 480, 26) <= 480 + 1e-9, `n=${n} overflows`);
  }
});

test("labels are spaced at least LABEL_MIN_PX apart", () => {
  assert.equal(labelStride(26), 1);
  assert.equal(labelStride(LABEL_MIN_PX), 1);
  assert.equal(labelStride(4), Math.ceil(LABEL_MIN_PX / 4));
  for (const px of [0.5, 0.94, 1, 3.3, 4, 7, 12.9, 13, 30]) {
    assert.ok(labelStride(px) * px >= LABEL_MIN_PX - 1e-9, `cell ${px}`);
    assert.ok(labelStride(px) === 1 || (labelStride(px) - 1) * px < LABEL_MIN_PX, `cell ${px} not minimal`);
  }
});

test("cellAt maps a point to its cell, and is null outside", () => {
  assert.deepEqual(cellAt(0, 0, 100, 100, 4, 4), { row: 0, col: 0 });
  assert.deepEqual(cellAt(99.9, 99.9, 100, 100, 4, 4), { row: 3, col: 3 });
  assert.deepEqual(cellAt(30, 60, 100, 100, 4, 4), { row: 2, col: 1 });
  assert.deepEqual(cellAt(10, 10, 100, 50, 2, 10), { row: 0, col: 1 });
  assert.equal(cellAt(-1, 5, 100, 100, 4, 4), null);
  assert.equal(cellAt(5, 100, 100, 100, 4, 4), null);
  assert.equal(cellAt(5, 5, 0, 0, 4, 4), null);
});

test("axis labels: one per token, or one per block when downsampled", () => {
  const labels = axisLabels(MOCK_TOKENS, MOCK_TOKENS.length);
  assert.equal(labels.length, MOCK_TOKENS.length);
  assert.deepEqual(labels[2], { index: 2, text: " Mary", title: "2:  Mary" });
  const sparse = axisLabels(MOCK_TOKENS, 6, 1, 4);
  assert.deepEqual(sparse.map((l) => l.text), ["0: <|endofte…", "4: " + " John"]);

  const tokens = Array.from({ length: 10 }, (_, i) => `t${i}`);
  assert.deepEqual(blockTokens(0, 4, 10), { start: 0, end: 4 });
  assert.deepEqual(blockTokens(2, 4, 10), { start: 8, end: 10 });
  const block = cellLabel(tokens, 2, 4);
  assert.equal(block.text, "8: t8");
  assert.equal(block.title, "8–9: t8t9");
  assert.equal(axisLabels(tokens, 3, 4).length, 3);
});

test("the tooltip names destination, source and value", () => {
  const lines = describeCell(MOCK_TOKENS, 4, 2, 0.73456);
  assert.deepEqual(lines, ['destination 4: " John"', 'source 2: " Mary"', "attention 0.735"]);
  assert.match(describeCell(MOCK_TOKENS, 1, 3, NaN)[2], /masked/);
  const tokens = Array.from({ length: 10 }, (_, i) => `t${i}`);
  const pooled = describeCell(tokens, 2, 0, 0.5, 4);
  assert.deepEqual(pooled, ['destination 8–9: "t8" …', 'source 0–3: "t0" …', "attention 0.500 (max over a 4×4 block)"]);
  assert.equal(formatValue(0.0001), "<0.001");
  assert.equal(formatValue(0), "0.000");
  assert.equal(formatValue(1), "1.000");
});

test("status line: busy wins; downsampling is said", () => {
  assert.equal(statusText({ busy: true, nTokens: 5, layer: 1, head: 2, downsampled: 1 }), "computing…");
  assert.equal(statusText({ busy: false, nTokens: 5, layer: 1, head: 2, downsampled: 1 }), "layer 1 · head 2 · 5 tokens");
  assert.equal(statusText({ busy: false, nTokens: 1, layer: 0, head: 0, downsampled: 1 }), "layer 0 · head 0 · 1 token");
  assert.match(statusText({ busy: false, nTokens: 900, layer: 0, head: 0, downsampled: 2 }), /2×2 blocks/);
});

test("the mock model fires change events and records saves", () => {
  const model = createMockModel(mockState());
  const seen = [];
  const fn = () => seen.push(model.get("head"));
  model.on("change:head", fn);
  model.set("head", 2);
  model.save_changes();
  assert.deepEqual(seen, [2]);
  assert.equal(model.saved.at(-1).head, 2);
  model.off("change:head", fn);
  assert.equal(model.listenerCount(), 0);
});

test("the prompt box keeps a prompt's \\r\\n line endings (a textarea turns them into \\n)", async () => {
  const { keepLineEndings } = await import("../shared/prompt_view.js");
  assert.equal(keepLineEndings("a\nb", "a\r\nb"), "a\r\nb"); // unedited: exactly the original
  assert.equal(keepLineEndings("a\nb\nc", "a\r\nb"), "a\r\nb\r\nc"); // edited: its style kept
  assert.equal(keepLineEndings("a\nb", "a\rb"), "a\rb");
  assert.equal(keepLineEndings("x\ny", "a\nb"), "x\ny");
});

test("token view: the picked token's row (from) or column (to), on the colour scale", async () => {
  const { tokenShades } = await import("./index.js");
  const slice = Float32Array.from([1, NaN, NaN, 0.25, 0.75, NaN, 0.5, 0.25, 0.25]);
  const from = tokenShades(slice, 3, 1, "from", { vmin: 0, vmax: 1 });
  assert.deepEqual(from.map((s) => s && s.value), [0.25, 0.75, null]);
  const to = tokenShades(slice, 3, 0, "to", { vmin: 0, vmax: 1 });
  assert.deepEqual(to.map((s) => s.value), [1, 0.25, 0.5]);
  const logged = tokenShades(Float32Array.from([-2]), 1, 0, "from", { vmin: -4, vmax: 0 });
  assert.equal(logged[0].t, 0.5);
});
