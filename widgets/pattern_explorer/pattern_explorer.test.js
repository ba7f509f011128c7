import assert from "node:assert/strict";
import { test } from "node:test";

import { absMax, decodePanels, differencePixels, formatKl, thumbCaption } from "../shared/patterns.js";
import { divergingColor } from "../shared/heatmap.js";
import { formatSigned } from "../shared/tokens.js";
import { describeCells, PANELS } from "./index.js";

function float32Wire(values, shape) {
  const data = new DataView(new Float32Array(values).buffer);
  return { dtype: "float32", shape, data };
}

test("panels decode together and must agree in shape", () => {
  const a = float32Wire([1, NaN, 0.5, 0.5], [1, 2, 2]);
  const { shape, data } = decodePanels({ true: a, transcoder: a, masked: {} });
  assert.deepEqual(shape, [1, 2, 2]);
  assert.deepEqual(Object.keys(data), ["true", "transcoder"]);
  assert.equal(decodePanels({}), null);
  assert.throws(() => decodePanels({ true: a, transcoder: float32Wire([1], [1, 1, 1]) }), /has shape \[1, 1, 1\], not \[1, 2, 2\]/);
  assert.throws(() => decodePanels({ true: float32Wire([1, 2], [2]) }), /expected \[heads, dest, src\]/);
});

test("differences use the diverging scale, white at zero, future cells masked", () => {
  const px = differencePixels(Float32Array.from([-0.2, 0, 0.2, NaN]), 2, 2, 0.2);
  assert.deepEqual(Array.from(px.slice(0, 3)), divergingColor(0));
  assert.deepEqual(Array.from(px.slice(4, 7)), divergingColor(0.5));
  assert.deepEqual(Array.from(px.slice(8, 11)), divergingColor(1));
  assert.equal(px[15], 0); // masked: transparent over the hatched background
  assert.ok([3, 7, 11].every((i) => px[i] === 255));
  const [r, g, b] = divergingColor(0.5);
  assert.ok(r > 240 && g > 240 && b > 240);
  assert.equal(absMax(Float32Array.from([NaN, -0.5, 0.25])), 0.5);
});

test("thumbnail captions carry each reconstruction's KL", () => {
  assert.equal(thumbCaption(2, { transcoder: [0, 0, 0.0456], masked: [0, 0, 0.05] }), "head 2\nKL tc 0.046\nKL map 0.050");
  assert.equal(thumbCaption(0, { transcoder: [0.1] }), "head 0\nKL tc 0.100");
  assert.equal(formatKl(undefined), "–");
});

test("the tooltip names both tokens and the three values", () => {
  const tokens = ["<s>", "The", " cat"];
  const lines = describeCells(tokens, 2, 1, { true: 0.5, transcoder: 0.25, masked: 0.3, diff: -0.25 });
  assert.deepEqual(lines, [
    'destination 2: " cat"',
    'source 1: "The"',
    "model       0.500",
    "transcoder  0.250",
    "masked map  0.300",
    "transcoder − model  −0.250",
  ]);
  assert.match(describeCells(tokens, 0, 2, { true: NaN })[2], /masked: a token never sees later tokens/);
  assert.match(describeCells(tokens, 0, 0, { true: 1, transcoder: 1 }, 4)[2], /max over a 4×4 block/);
  const log = describeCells(tokens, 2, 1, { true: -1, transcoder: -2, diff: 0.1 }, 1, "transcoder", 0, "log");
  assert.deepEqual(log.slice(2), ["attention (log scale)", "model       0.1", "transcoder  0.01", "transcoder − model  +0.100 (of the weights)"]);
  assert.equal(formatSigned(0.0001), "0.000");
  assert.equal(PANELS.length, 4);
});

test("the mock panels decode to five [heads, dest, src] arrays with masked futures", async () => {
  const { mockState } = await import("./mock.js");
  const state = mockState();
  const { shape, data } = decodePanels(state.panels);
  assert.deepEqual(shape, [3, 6, 6]);
  assert.deepEqual(Object.keys(data).sort(), ["diff_masked", "diff_transcoder", "masked", "transcoder", "true"]);
  assert.ok(Number.isNaN(data.true[1]) && !Number.isNaN(data.true[6]));
  assert.ok(state.kl.masked.every((v, h) => v >= state.kl.transcoder[h])); // more blur, more KL
});

test("the panels fit the output's width: four, two or one to a row", async () => {
  const { MIN_PANEL_PX, panelLayout, panelOrder } = await import("./index.js");
  const wide = panelLayout(1900);
  assert.equal(wide.perRow, 4);
  const notebook = panelLayout(968); // JupyterLab with the file browser open
  assert.equal(notebook.perRow, 2);
  assert.ok(notebook.px >= MIN_PANEL_PX && 2 * notebook.px + 130 + 14 <= 968);
  assert.equal(panelLayout(700).perRow, 2);
  assert.equal(panelLayout(450).perRow, 1);
  for (const width of [700, 968, 1378, 1900]) {
    const { perRow, px } = panelLayout(width);
    assert.ok(perRow * px + 130 + 14 * (perRow - 1) <= width, `width ${width} overflows`);
  }
  assert.deepEqual(panelOrder(2).slice(0, 2), ["true", "diff"]); // model beside the difference
  assert.equal(panelLayout(968, 3).perRow, 2);
});
