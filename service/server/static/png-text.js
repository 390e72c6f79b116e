// Text in a PNG file: iTXt chunks (UTF-8, uncompressed; PNG spec 11.3.4.5) put after the IHDR chunk, so that
// image viewers and file managers show the downloaded heatmap's Title and Description.

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// keyword (Latin-1, 1-79 bytes) NUL, compression flag 0, method 0, empty language tag NUL, empty translated
// keyword NUL, UTF-8 text
function itxtChunk(keyword, text) {
  const encoder = new TextEncoder();
  const data = new Uint8Array([...encoder.encode("iTXt"), ...encoder.encode(keyword), 0, 0, 0, 0, 0, ...encoder.encode(text)]);
  const chunk = new Uint8Array(4 + data.length + 4);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length - 4);
  chunk.set(data, 4);
  view.setUint32(4 + data.length, crc32(data));
  return chunk;
}

const SIGNATURE_AND_IHDR = 8 + 4 + 4 + 13 + 4;

// the PNG blob with a chunk for each { keyword: text } entry
export async function withText(png, entries) {
  const bytes = new Uint8Array(await png.arrayBuffer());
  const chunks = Object.entries(entries).map(([keyword, text]) => itxtChunk(keyword, text));
  return new Blob([bytes.subarray(0, SIGNATURE_AND_IHDR), ...chunks, bytes.subarray(SIGNATURE_AND_IHDR)], { type: "image/png" });
}
