// What a reading said, as 64 bits: the dedupe stores keep it per gateway seq and per device
// identity, so a resend with the same content is a duplicate and with other content a conflict.
//
// The hash walks the parsed JSON value directly (no string is built): a type tag, then the value
// (strings as their UTF-16 code units with their length, numbers as int32 or as the bits of their
// float64, objects as their keys in sorted order with their values, arrays with their length).
// Equal JSON content therefore hashes equally whatever the key order, as the canonical JSON did.
// Two lanes of a MurmurHash3-style mix give 64 bits; a collision could only hide a conflict (two
// different readings taken for the same), never lose a reading. It is not a cryptographic hash:
// the content comes from authenticated gateways and devices.
//
// Format: 'x' followed by 16 hex digits (17 characters). Releases before this one stored the first
// 16 hex digits of SHA-256 over the canonical JSON (16 characters, `legacyContentHash`): records
// of that form are still recognised, so a dedupe file survives the upgrade (`sameContent`).
import { createHash } from 'node:crypto';

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

// The lanes' state between the steps of a walk: contentHash is synchronous and the walk never
// yields, so one pair serves all. In a typed array, not two module variables: a 32-bit value
// outside the small-integer range stored in a variable is a heap number, an allocation per feed.
const lanes = new Int32Array(2);

// Each word goes into both lanes: a MurmurHash3 x86_32 round in the first, one with other
// constants and rotations in the second. The round is written out where it runs (here and in
// feedString's loop) rather than called: V8 does not always inline a helper called from many
// places, and a call per word was most of the hash's time.
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
  // Two code units a word: the length fed first keeps "ab" + "c" apart from "a" + "bc". The
  // lanes stay in locals for the loop, the round as in feed().
  let h1 = lanes[0]!;
  let h2 = lanes[1]!;
  for (let i = 0; i < n; i += 2) {
    const x = i + 1 < n ? s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16) : s.charCodeAt(i);
    let k = Math.imul(x, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h1 ^= Math.imul(k, 0x1b873593);
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
    let j = Math.imul(x, 0x85ebca6b);
    j = (j << 16) | (j >>> 16);
    h2 ^= Math.imul(j, 0xc2b2ae35);
    h2 = (h2 << 17) | (h2 >>> 15);
    h2 = (Math.imul(h2, 9) + 0x38b34ae5) | 0;
  }
  lanes[0] = h1;
  lanes[1] = h2;
}

/** -0 is 0 here as in JSON; an int32 is its own word, anything else its float64 bits. */
function feedNumber(value: number): void {
  if ((value | 0) === value) {
    feed(TAG_INT);
    feed(value);
  } else {
    float[0] = value;
    feed(TAG_FLOAT);
    feed(floatWords[0]!);
    feed(floatWords[1]!);
  }
}

/** An object's own keys in UTF-16 order, as Array.prototype.sort's default puts them (an insertion sort: objects here have few keys, and usually come sorted). */
function sortedKeys(record: Readonly<Record<string, unknown>>): string[] {
  const keys = Object.keys(record);
  const n = keys.length;
  if (n > 16) return keys.sort();
  for (let i = 1; i < n; i++) {
    const key = keys[i]!;
    let j = i - 1;
    if (!(keys[j]! > key)) continue;
    while (j >= 0 && keys[j]! > key) {
      keys[j + 1] = keys[j]!;
      j--;
    }
    keys[j + 1] = key;
  }
  return keys;
}

function feedValue(value: unknown): void {
  switch (typeof value) {
    case 'string':
      feedString(value);
      return;
    case 'number':
      feedNumber(value);
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
        // Sorted by UTF-16 code units, as the canonical JSON did.
        const keys = sortedKeys(record);
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
export function contentHash(raw: unknown): string {
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

/** One key of an object whose keys are walked in sorted order by the caller; undefined is left out, as in feedValue. */
function feedEntry(key: string, value: unknown): void {
  if (value === undefined) return;
  feedString(key);
  feedValue(value);
}

/**
 * contentHash of a reading that passed readingSchema (strict: no key but the schema's). Its keys
 * are fed in UTF-16 order (as Array.prototype.sort puts them), each read by name. The same value
 * as contentHash (property tests hold them together: content-hash.test.ts).
 */
export function readingContentHash(reading: Readonly<Record<string, unknown>>): string {
  begin();
  feed(TAG_OBJECT);
  feedEntry('deviceId', reading.deviceId);
  feedEntry('deviceSeq', reading.deviceSeq);
  feedEntry('flags', reading.flags);
  feedEntry('kind', reading.kind);
  feedEntry('metrics', reading.metrics);
  feedEntry('receivedAt', reading.receivedAt);
  feedEntry('seq', reading.seq);
  feedEntry('tags', reading.tags);
  feedEntry('ts', reading.ts);
  feedEntry('tsSource', reading.tsSource);
  feed(TAG_END);
  return finish();
}

/** What a device said, as hashed for its identity (device-dedupe.ts): the object of these five. */
export interface DeviceContent {
  readonly kind: unknown;
  readonly metrics: unknown;
  readonly tags: unknown;
  readonly deviceSeq: number | undefined;
  readonly ts: number | undefined;
}

/** contentHash of a DeviceContent object given field by field, without building it; the same value (content-hash.test.ts). */
export function deviceFieldsHash(kind: unknown, metrics: unknown, tags: unknown, deviceSeq: number | undefined, ts: number | undefined): string {
  begin();
  feed(TAG_OBJECT);
  feedEntry('deviceSeq', deviceSeq);
  feedEntry('kind', kind);
  feedEntry('metrics', metrics);
  feedEntry('tags', tags);
  feedEntry('ts', ts);
  feed(TAG_END);
  return finish();
}

/** contentHash of a DeviceContent object; the same value (content-hash.test.ts). */
export function deviceContentHash(content: DeviceContent): string {
  return deviceFieldsHash(content.kind, content.metrics, content.tags, content.deviceSeq, content.ts);
}

/** JSON with object keys sorted, so equal content always serialises equally whatever the key order. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i > 0 ? ',' : '') + canonicalJson(value[i] === undefined ? null : value[i]);
    return `${out}]`;
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).sort();
  let out = '{';
  for (const key of keys) {
    const v = record[key];
    if (v === undefined) continue;
    out += `${out.length > 1 ? ',' : ''}${JSON.stringify(key)}:${canonicalJson(v)}`;
  }
  return `${out}}`;
}

/** The hash releases before this one stored: the first 16 hex digits of SHA-256 over the canonical JSON. */
export function legacyContentHash(raw: unknown): string {
  return createHash('sha256').update(canonicalJson(raw)).digest('hex').slice(0, 16);
}

/** A stored hash in the earlier releases' form. */
export function isLegacyHash(stored: string): boolean {
  return stored.length === 16;
}

/** Whether a stored hash (of either form) is the hash of `content`, whose current hash is `hash`. */
export function sameContent(stored: string, hash: string, content: unknown): boolean {
  return stored === hash || (isLegacyHash(stored) && stored === legacyContentHash(content));
}
