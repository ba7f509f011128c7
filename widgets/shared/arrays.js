// Decoding of the arrays that attnviz sends from Python (attnviz/widgets/arrays.py).
//
// Wire format (one JSON-able object per array, the payload travelling as a binary buffer):
//
//   { dtype: "float16" | "float32" | "uint8" | "int32" | "uint16",
//     shape: [d0, d1, ...],          // C order (last axis fastest); [] is a scalar
//     data:  <bytes>,                // little-endian, exactly prod(shape) * itemsize bytes
//     scale, offset, masked }        // uint8 only
//
// uint8 is a quantised float: value = offset + scale * byte for bytes 0..254. When
// `masked` is true, byte 255 means "masked / NaN / not finite" and decodes to NaN.
// float16 and float32 carry masked cells as NaN (and keep +-Infinity).
//
// ipywidgets hands binary buffers to JS as a DataView, which may be a window into a larger
// ArrayBuffer (non-zero byteOffset, any alignment); ArrayBuffer and typed arrays are
// accepted too. decodeArray returns a fresh, aligned typed array:
//   float16, float32, uint8 -> Float32Array;  int32 -> Int32Array;  uint16 -> Uint16Array.

const ITEMSIZE = { float16: 2, float32: 4, uint8: 1, int32: 4, uint16: 2 };

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Convert one IEEE 754 binary16 bit pattern (0..0xFFFF) to a JS number. */
export function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x03ff;
  if (exponent === 0) {
    // zero or subnormal: fraction * 2^-24 (2^-24 = 5.960464477539063e-8)
    return sign * fraction * 5.960464477539063e-8;
  }
  if (exponent === 0x1f) {
    return fraction === 0 ? sign * Infinity : NaN;
  }
  // normal: (1 + fraction / 1024) * 2^(exponent - 15), exact in a double
  return sign * (1024 + fraction) * 2 ** (exponent - 25);
}

let halfTable = null; // all 65536 float16 values, built on first use (256 KiB)

function halfLookup() {
  if (halfTable === null) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) halfTable[i] = halfToFloat(i);
  }
  return halfTable;
}

/** The bytes of `data` as a Uint8Array view (no copy). */
function asBytes(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(
    `attnviz array: "data" must be a DataView, ArrayBuffer or typed array, got ${Object.prototype.toString.call(data)}`,
  );
}

/** Elements of a little-endian buffer as a typed array of `Type`, copied only when needed. */
function viewAs(Type, bytes, count, getter) {
  const size = Type.BYTES_PER_ELEMENT;
  if (LITTLE_ENDIAN_HOST && bytes.byteOffset % size === 0) {
    return new Type(bytes.buffer, bytes.byteOffset, count);
  }
  if (LITTLE_ENDIAN_HOST) {
    // misaligned window: copy the bytes into a fresh (aligned) buffer
    return new Type(bytes.slice().buffer, 0, count);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Type(count);
  for (let i = 0; i < count; i++) out[i] = dv[getter](i * size, true);
  return out;
}

/** Number of elements of an array of this shape (1 for a scalar, shape []). */
export function shapeSize(shape) {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Decode one wire-format array. Returns { data, shape, dtype } where `data` is a new typed
 * array (see the table at the top) that does not alias the message's buffer for float16 and
 * uint8 (it may alias it for float32, int32 and uint16).
 */
export function decodeArray(message) {
  if (message === null || typeof message !== "object") {
    throw new TypeError("attnviz array: expected an object {dtype, shape, data}");
  }
  const { dtype } = message;
  const itemsize = ITEMSIZE[dtype];
  if (itemsize === undefined) {
    throw new TypeError(`attnviz array: unknown dtype ${JSON.stringify(dtype)}`);
  }
  const shape = Array.from(message.shape ?? [], Number);
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new RangeError(`attnviz array: bad shape ${JSON.stringify(message.shape)}`);
  }
  const count = shapeSize(shape);
  const bytes = asBytes(message.data);
  if (bytes.byteLength !== count * itemsize) {
    throw new RangeError(
      `attnviz array: ${dtype} shape [${shape.join(", ")}] needs ${count * itemsize} bytes, got ${bytes.byteLength}`,
    );
  }

  let data;
  switch (dtype) {
    case "float16": {
      const table = halfLookup();
      const bits = viewAs(Uint16Array, bytes, count, "getUint16");
      data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = table[bits[i]];
      break;
    }
    case "float32":
      data = viewAs(Float32Array, bytes, count, "getFloat32");
      break;
    case "int32":
      data = viewAs(Int32Array, bytes, count, "getInt32");
      break;
    case "uint16":
      data = viewAs(Uint16Array, bytes, count, "getUint16");
      break;
    case "uint8": {
      const scale = Number(message.scale ?? 1);
      const offset = Number(message.offset ?? 0);
      const table = new Float32Array(256);
      for (let b = 0; b < 256; b++) table[b] = offset + scale * b;
      if (message.masked) table[255] = NaN;
      data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = table[bytes[i]];
      break;
    }
  }
  return { data, shape, dtype };
}

/** Min and max over the finite values (NaN and +-Infinity ignored); nulls when there are none. */
export function finiteRange(data) {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v < min && v !== -Infinity) min = v;
    if (v > max && v !== Infinity) max = v;
  }
  return min <= max ? { min, max } : { min: null, max: null };
}
