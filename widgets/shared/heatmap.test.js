import assert from "node:assert/strict";
import { test } from "node:test";

import { colorize, MASK_COLOR, scaleColor } from "./heatmap.js";

const rgbAt = (px, i) => Array.from(px.subarray(i * 4, i * 4 + 3));

test("vmin and vmax map to the ends of the scale, out-of-range values clamp", () => {
  const px = colorize(new Float32Array([0, 1, -5, 7, -Infinity, Infinity]), 2, 3, { vmin: 0, vmax: 1 });
  assert.equal(px.length, 2 * 3 * 4);
  assert.deepEqual(rgbAt(px, 0), scaleColor(0));
  assert.deepEqual(rgbAt(px, 1), scaleColor(1));
  assert.deepEqual(rgbAt(px, 2), scaleColor(0));
  assert.deepEqual(rgbAt(px, 3), scaleColor(1));
  assert.deepEqual(rgbAt(px, 4), scaleColor(0));
  assert.deepEqual(rgbAt(px, 5), scaleColor(1));
  for (let i = 0; i < 6; i++) assert.equal(px[i * 4 + 3], 255);
});

test("NaN cells take the mask colour, which is not on the scale", () => {
  const px = colorize(new Float32Array([NaN, 0.5]), 1, 2);
  assert.deepEqual(rgbAt(px, 0), MASK_COLOR);
  for (let t = 0; t <= 1; t += 1 / 255) {
    const c = scaleColor(t);
    const distance = Math.hypot(c[0] - MASK_COLOR[0], c[1] - MASK_COLOR[1], c[2] - MASK_COLOR[2]);
    assert.ok(distance > 40, `scale at ${t} is too close to the mask colour`);
  }
});

test("the scale darkens monotonically", () => {
  const luma = ([r, g, b]) => 0.2126 * r + 0.7152 * g + 0.0722 * b;
  let prev = Infinity;
  for (let i = 0; i <= 255; i++) {
    const l = luma(scaleColor(i / 255));
    assert.ok(l <= prev + 1e-9, `step ${i}`);
    prev = l;
  }
});

test("a constant field takes one colour; too little data is refused", () => {
  const px = colorize(new Float32Array([3, 3]), 1, 2, { vmin: 3, vmax: 3 });
  assert.deepEqual(rgbAt(px, 0), rgbAt(px, 1));
  assert.throws(() => colorize(new Float32Array(3), 2, 2), /needs 4 values/);
});
