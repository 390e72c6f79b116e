// A reader of safetensors files (https://huggingface.co/docs/safetensors), the binary answer of POST /attend to
// Accept: application/x-safetensors: an 8-byte little-endian header length, a JSON header giving each tensor's
// dtype, shape and byte range after the header (and `__metadata__`, strings only), then the tensors'
// little-endian bytes. F32 and F16 become Float32Array, F64 Float64Array; -inf stays -inf (masked). Integers (the
// summaries' top_keys) become Int32Array (I32) or BigInt64Array (I64).

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const TYPED = {
  F32: [4, Float32Array, "getFloat32"], F64: [8, Float64Array, "getFloat64"],
  I32: [4, Int32Array, "getInt32"], I64: [8, BigInt64Array, "getBigInt64"],
};

// { metadata: {name: string}, tensors: {name: {shape, data}} } of the file in `buffer` (an ArrayBuffer)
export function readSafetensors(buffer) {
  if (buffer.byteLength < 8) throw new Error(`a safetensors file of ${buffer.byteLength} bytes; expected at least 8`);
  const headerLength = Number(new DataView(buffer).getBigUint64(0, true));
  if (8 + headerLength > buffer.byteLength) {
    throw new Error(`a safetensors header of ${headerLength} bytes in a file of ${buffer.byteLength}`);
  }
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
  const start = 8 + headerLength;
  const tensors = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [begin, end] = entry.data_offsets;
    const count = entry.shape.reduce((product, size) => product * size, 1);
    if (start + end > buffer.byteLength || begin > end) {
      throw new Error(`tensor ${name}: bytes ${begin} to ${end} past the file's ${buffer.byteLength - start}`);
    }
    tensors[name] = { shape: entry.shape, data: decoded(name, entry.dtype, buffer, start + begin, start + end, count) };
  }
  return { metadata: header.__metadata__ || {}, tensors };
}

function decoded(name, dtype, buffer, begin, end, count) {
  const size = dtype === "F16" ? 2 : TYPED[dtype] ? TYPED[dtype][0] : null;
  if (size === null) throw new Error(`tensor ${name} of dtype ${dtype}; expected F32, F16, F64, I32 or I64`);
  if (end - begin !== count * size) throw new Error(`tensor ${name}: ${end - begin} bytes for ${count} ${dtype} values`);
  if (dtype === "F16") return halvesAsFloats(new DataView(buffer, begin, end - begin), count);
  const [, Typed, getter] = TYPED[dtype];
  if (LITTLE_ENDIAN_HOST) {
    // in place when aligned; else one copy, which starts aligned
    return begin % size === 0 ? new Typed(buffer, begin, count) : new Typed(buffer.slice(begin, end));
  }
  const view = new DataView(buffer, begin, end - begin);
  return Typed.from({ length: count }, (_, index) => view[getter](index * size, true));
}

// IEEE 754 half precision (1 sign, 5 exponent, 10 fraction bits), each value exactly
function halvesAsFloats(view, count) {
  const floats = new Float32Array(count);
  for (let index = 0; index < count; index++) {
    const bits = view.getUint16(2 * index, true);
    const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
    floats[index] = exponent === 0 ? sign * fraction * 2 ** -24
      : exponent === 31 ? (fraction === 0 ? sign * Infinity : NaN)
        : sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }
  return floats;
}
