// The content hash as the release that introduced it computed it (content-hash.ts before its
// walk was tuned), kept verbatim as the reference: stored hashes must stay equal across releases,
// so every faster path is property-tested against this one (content-hash.test.ts).
const TAG_NULL = 1;
const TAG_FALSE = 2;
const TAG_TRUE = 3;
const TAG_INT = 4;
const TAG_FLOAT = 5;
const TAG_STRING = 6;
const TAG_ARRAY = 7;
const TAG_OBJECT = 8;
const TAG_END = 9;

const float = new Float64Array(1);
const floatWords = new Uint32Array(float.buffer);

// The lanes' state: contentHash is synchronous and the walk never yields, so one pair serves all.
// In a typed array, not two module variables: a 32-bit value outside the small-integer range
// stored in a variable is a heap number, an allocation per feed.
const lanes = new Int32Array(2);

function feed(x: number): void {
  let k = Math.imul(x, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  let h1 = lanes[0]! ^ Math.imul(k, 0x1b873593);
  h1 = (h1 << 13) | (h1 >>> 19);
  lanes[0] = Math.imul(h1, 5) + 0xe6546b64;
  let j = Math.imul(x, 0x85ebca6b);
  j = (j << 16) | (j >>> 16);
  let h2 = lanes[1]! ^ Math.imul(j, 0xc2b2ae35);
  h2 = (h2 << 17) | (h2 >>> 15);
  lanes[1] = Math.imul(h2, 9) + 0x38b34ae5;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

function feedString(s: string): void {
  feed(TAG_STRING);
  const n = s.length;
  feed(n);
  let i = 0;
  // Two code units a round: the length fed first keeps "ab" + "c" apart from "a" + "bc".
  for (; i + 1 < n; i += 2) feed(s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16));
  if (i < n) feed(s.charCodeAt(i));
}

function feedValue(value: unknown): void {
  switch (typeof value) {
    case 'string':
      feedString(value);
      return;
    case 'number':
      // -0 is 0 here as in JSON; an int32 is its own word, anything else its float64 bits.
      if ((value | 0) === value) {
        feed(TAG_INT);
        feed(value);
      } else {
        float[0] = value;
        feed(TAG_FLOAT);
        feed(floatWords[0] ?? 0);
        feed(floatWords[1] ?? 0);
      }
      return;
    case 'boolean':
      feed(value ? TAG_TRUE : TAG_FALSE);
      return;
    case 'object':
      if (value === null) break;
      if (Array.isArray(value)) {
        feed(TAG_ARRAY);
        feed(value.length);
        for (let i = 0; i < value.length; i++) feedValue(value[i] === undefined ? null : value[i]);
        return;
      } else {
        const record = value as Record<string, unknown>;
        const keys = Object.keys(record);
        // The default sort compares UTF-16 code units, as the canonical JSON did.
        if (keys.length > 1) keys.sort();
        feed(TAG_OBJECT);
        for (const key of keys) {
          const v = record[key];
          if (v === undefined) continue;
          feedString(key);
          feedValue(v);
        }
        feed(TAG_END);
        return;
      }
    case 'bigint':
    case 'function':
    case 'symbol':
    case 'undefined':
      break;
  }
  // null, and what JSON cannot hold (undefined at the top, functions): null, as JSON.stringify would say.
  feed(TAG_NULL);
}

/** The character codes of the hex digits. */
const HEX_CODES = Array.from('0123456789abcdef', (c) => c.charCodeAt(0));

/** The hex digit of `h`'s four bits at `shift`, as a character code. */
function nibble(h: number, shift: number): number {
  return HEX_CODES[(h >>> shift) & 15]!;
}

/** 64 bits of the content of a parsed JSON value, independent of key order: 'x' and 16 hex digits. */
export function referenceContentHash(raw: unknown): string {
  begin();
  feedValue(raw);
  return finish();
}

/** Starts a hash: the lanes' seeds. */
function begin(): void {
  lanes[0] = 0x2545f491;
  lanes[1] = 0x9e3779b9;
}

function finish(): string {
  const h1 = lanes[0]!;
  const h2 = lanes[1]!;
  const a = fmix(h1 ^ h2);
  const b = fmix(h2 ^ Math.imul(a, 0x27d4eb2f));
  // One flat string of 17 characters, not a concatenation: the hash is kept with every reading in
  // flight and in the dedupe records, and a concatenated one is three objects (and several more made and dropped).
  return String.fromCharCode(
    0x78,
    nibble(a, 28), nibble(a, 24), nibble(a, 20), nibble(a, 16), nibble(a, 12), nibble(a, 8), nibble(a, 4), nibble(a, 0),
    nibble(b, 28), nibble(b, 24), nibble(b, 20), nibble(b, 16), nibble(b, 12), nibble(b, 8), nibble(b, 4), nibble(b, 0),
  );
}

