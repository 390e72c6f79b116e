// Token labels a person can read. Byte-level BPE tokenizers (GPT-2, RoBERTa, Llama 3, Qwen2) write each byte of
// the text as a printable character: a space is "Ġ", a newline "Ċ", "é" is the two characters "Ã©". The page
// shows such tokens as the text they stand for, with whitespace made visible ("Ġcat" as "␣cat") and a byte
// that is not a whole UTF-8 character of its own as <0xNN>. Other tokenizers' tokens are shown as they are.

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes (controls, space,
// DEL, no-break space, soft hyphen) for the characters from U+0100 on, in byte order
const BYTE_OF_CHARACTER = (() => {
  const map = new Map();
  const printable = (byte) => (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || byte >= 0xae;
  let next = 0x100;
  for (let byte = 0; byte < 256; byte++) map.set(String.fromCharCode(printable(byte) ? byte : next++), byte);
  return map;
})();
const VISIBLE = { " ": "␣", "\n": "↵", "\t": "⇥" };

// the bytes a byte-level token stands for, or null when a character of it is not one of the 256
function bytesOf(token) {
  const bytes = [];
  for (const character of token) {
    const byte = BYTE_OF_CHARACTER.get(character);
    if (byte === undefined) return null;
    bytes.push(byte);
  }
  return Uint8Array.from(bytes);
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function hex(byte) {
  return `<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`;
}

// the UTF-8 characters of `bytes`, whitespace visible, each byte outside a whole character (a character split
// between tokens, a control character) as <0xNN>
function readableBytes(bytes) {
  let text = "";
  for (let at = 0; at < bytes.length;) {
    const lead = bytes[at];
    const length = lead < 0x80 ? 1 : lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3
      : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
    let character = null;
    if (length > 0 && at + length <= bytes.length) {
      try { character = strictUtf8.decode(bytes.subarray(at, at + length)); } catch { character = null; }
    }
    if (character === null || (length === 1 && (lead < 0x20 || lead === 0x7f) && !(character in VISIBLE))) {
      text += hex(lead);
      at += 1;
    } else {
      text += VISIBLE[character] ?? character;
      at += length;
    }
  }
  return text;
}

// Whether the tokens are byte-level BPE: every token is made of the 256 byte characters, and the bytes of each
// text's tokens, read as UTF-8, contain that text (special tokens such as <s> are plain ASCII and stay).
// texts[b] is what was sent for batch item b; tokens[b] its tokens, the first lengths[b] of them real.
export function isByteLevel(tokens, lengths, texts) {
  if (!tokens || !texts || texts.length !== tokens.length) return false;
  return tokens.every((row, b) => {
    const real = row.slice(0, lengths ? lengths[b] : row.length);
    const bytes = real.map(bytesOf);
    if (bytes.some((part) => part === null)) return false;
    const joined = new Uint8Array(bytes.reduce((sum, part) => sum + part.length, 0));
    bytes.reduce((at, part) => { joined.set(part, at); return at + part.length; }, 0);
    const decoded = new TextDecoder().decode(joined).normalize("NFC");
    return decoded.includes(texts[b].normalize("NFC"));
  });
}

// the label of one byte-level token (of a text whose tokens isByteLevel found to be byte-level)
export function readableToken(token) {
  const bytes = bytesOf(token);
  return bytes ? readableBytes(bytes) : token;
}

// the labels to show for tokens[b] (all positions): readable byte-level tokens, or the tokens themselves
export function readableTokens(tokens, lengths, texts) {
  if (!isByteLevel(tokens, lengths, texts)) return tokens;
  return tokens.map((row) => row.map(readableToken));
}
