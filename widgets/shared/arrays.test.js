import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { decodeArray, finiteRange, halfToFloat, shapeSize } from "./arrays.js";

/** A DataView over little-endian uint16 words, optionally inside a larger buffer. */
function u16View(words, { pad = 0 } = {}) {
  const buffer = new ArrayBuffer(pad + words.length * 2 + 5);
  const dv = new DataView(buffer, pad, words.length * 2);
  words.forEach((w, i) => dv.setUint16(i * 2, w, true));
  return dv;
}

describe("halfToFloat", () => {
  const cases = [
    [0x0000, 0],
    [0x3c00, 1],
    [0xc000, -2],
    [0x3800, 0.5],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0xfbff, -65504],
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x0400, 2 ** -14], // smallest normal
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  for (const [bits, expected] of cases) {
    test(`0x${bits.toString(16).padStart(4, "0")} -> ${expected}`, () => {
      assert.equal(halfToFloat(bits), expected);
    });
  }

  test("negative zero keeps its sign", () => {
    assert.ok(Object.is(halfToFloat(0x8000), -0));
  });

  test("every exponent-31 pattern with a fraction is NaN", () => {
    for (const bits of [0x7c01, 0x7e00, 0x7fff, 0xfc01, 0xfe00, 0xffff]) {
      assert.ok(Number.isNaN(halfToFloat(bits)), bits.toString(16));
    }
  });

  test("monotone over all positive finite patterns", () => {
    let prev = -1;
    for (let bits = 0; bits < 0x7c00; bits++) {
      const v = halfToFloat(bits);
      assert.ok(v > prev, `0x${bits.toString(16)}`);
      prev = v;
    }
  });
});

describe("decodeArray float16", () => {
  test("known bit patterns, shape kept", () => {
    const words = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x7e00];
    const { data, shape, dtype } = decodeArray({ dtype: "float16", shape: [2, 3], data: u16View(words) });
    assert.equal(dtype, "float16");
    assert.deepEqual(shape, [2, 3]);
    assert.ok(data instanceof Float32Array);
    assert.deepEqual(Array.from(data.subarray(0, 5)), [1, -2, 65504, Math.fround(2 ** -24), Infinity]);
    assert.ok(Number.isNaN(data[5]));
  });

  test("DataView at an odd byteOffset into a larger buffer", () => {
    const view = u16View([0x3c00, 0x4000, 0x4200], { pad: 7 });
    assert.equal(view.byteOffset, 7);
    const { data } = decodeArray({ dtype: "float16", shape: [3], data: view });
    assert.deepEqual(Array.from(data), [1, 2, 3]);
  });

  test("DataView at an even byteOffset (aligned fast path)", () => {
    const view = u16View([0xbc00, 0x3800], { pad: 8 });
    const { data } = decodeArray({ dtype: "float16", shape: [1, 2], data: view });
    assert.deepEqual(Array.from(data), [-1, 0.5]);
  });
});

describe("decodeArray uint8", () => {
  test("dequantises offset + scale * byte; 255 masked -> NaN", () => {
    const bytes = new Uint8Array([0, 1, 127, 254, 255, 10]);
    const { data, shape } = decodeArray({
      dtype: "uint8",
      shape: [3, 2],
      data: new DataView(bytes.buffer),
      scale: 0.5,
      offset: -1,
      masked: true,
    });
    assert.deepEqual(shape, [3, 2]);
    assert.ok(data instanceof Float32Array);
    assert.deepEqual(Array.from(data.subarray(0, 4)), [-1, -0.5, 62.5, 126]);
    assert.ok(Number.isNaN(data[4]));
    assert.equal(data[5], 4);
  });

  test("255 is an ordinary value when not masked", () => {
    const bytes = new Uint8Array([255]);
    const { data } = decodeArray({ dtype: "uint8", shape: [1], data: bytes, scale: 2, offset: 1 });
    assert.equal(data[0], 511);
  });

  test("view into a larger buffer", () => {
    const big = new Uint8Array([9, 9, 9, 0, 2, 255, 9]);
    const view = new DataView(big.buffer, 3, 3);
    const { data } = decodeArray({ dtype: "uint8", shape: [3], data: view, scale: 0.25, offset: 0, masked: true });
    assert.deepEqual(Array.from(data.subarray(0, 2)), [0, 0.5]);
    assert.ok(Number.isNaN(data[2]));
  });
});

describe("decodeArray other dtypes", () => {
  test("float32 at a misaligned offset", () => {
    const buffer = new ArrayBuffer(3 + 8);
    const dv = new DataView(buffer, 3, 8);
    dv.setFloat32(0, 1.5, true);
    dv.setFloat32(4, -0.25, true);
    const { data } = decodeArray({ dtype: "float32", shape: [2], data: dv });
    assert.ok(data instanceof Float32Array);
    assert.deepEqual(Array.from(data), [1.5, -0.25]);
  });

  test("int32 and uint16", () => {
    const i32 = new DataView(new ArrayBuffer(8));
    i32.setInt32(0, -7, true);
    i32.setInt32(4, 2 ** 31 - 1, true);
    const a = decodeArray({ dtype: "int32", shape: [2, 1], data: i32 });
    assert.ok(a.data instanceof Int32Array);
    assert.deepEqual(Array.from(a.data), [-7, 2 ** 31 - 1]);
    const b = decodeArray({ dtype: "uint16", shape: [2], data: u16View([0, 65535], { pad: 1 }) });
    assert.ok(b.data instanceof Uint16Array);
    assert.deepEqual(Array.from(b.data), [0, 65535]);
  });
});

describe("decodeArray shapes and errors", () => {
  test("scalar shape [] holds one element", () => {
    assert.equal(shapeSize([]), 1);
    const { data, shape } = decodeArray({ dtype: "float16", shape: [], data: u16View([0x3c00]) });
    assert.deepEqual(shape, []);
    assert.deepEqual(Array.from(data), [1]);
  });

  test("empty arrays", () => {
    const { data, shape } = decodeArray({ dtype: "float16", shape: [0, 4], data: new DataView(new ArrayBuffer(0)) });
    assert.deepEqual(shape, [0, 4]);
    assert.equal(data.length, 0);
  });

  test("3-D shape, C order", () => {
    // float16 patterns of 0, 1, ..., 11
    const words = [0x0000, 0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800, 0x4880, 0x4900, 0x4980];
    const { data, shape } = decodeArray({ dtype: "float16", shape: [2, 2, 3], data: u16View(words) });
    assert.deepEqual(shape, [2, 2, 3]);
    assert.deepEqual(Array.from(data), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    const at = (i, j, k) => data[(i * 2 + j) * 3 + k]; // last axis fastest
    assert.equal(at(1, 0, 2), 8);
    assert.equal(at(1, 1, 1), 10);
  });

  test("byte count must match the shape", () => {
    assert.throws(
      () => decodeArray({ dtype: "float16", shape: [2, 2], data: u16View([0, 0, 0]) }),
      /needs 8 bytes, got 6/,
    );
  });

  test("unknown dtype and bad shape are refused", () => {
    assert.throws(() => decodeArray({ dtype: "float64", shape: [1], data: new ArrayBuffer(8) }), /unknown dtype/);
    assert.throws(() => decodeArray({ dtype: "uint8", shape: [-1], data: new ArrayBuffer(0) }), /bad shape/);
    assert.throws(() => decodeArray({ dtype: "uint8", shape: [1], data: [1] }), /must be a DataView/);
  });
});

describe("finiteRange", () => {
  test("ignores NaN and infinities", () => {
    assert.deepEqual(finiteRange(new Float32Array([NaN, 3, -Infinity, -2, Infinity])), { min: -2, max: 3 });
  });
  test("no finite values", () => {
    assert.deepEqual(finiteRange(new Float32Array([NaN, Infinity])), { min: null, max: null });
    assert.deepEqual(finiteRange(new Float32Array(0)), { min: null, max: null });
  });
});
