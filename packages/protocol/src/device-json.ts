// JSON as devices really send it: bare NaN/inf literals (invalid JSON, sent by real firmware)
// and integers beyond 2^53 (which JSON.parse would round). Both are found by one scan of the
// text outside strings, before JSON.parse sees it. The one parser of device JSON: the native
// format (device.ts) and every format of @ferry/decoders read with it.

/** A value that arrived as a bare NaN/inf literal; value rules reject it per field. */
export const NON_FINITE_MARKER = '\u0000ferry-non-finite\u0000';
/** An integer beyond the 64-bit range (below -2^63, above 2^64-1); value rules reject it per field. */
export const OUT_OF_RANGE_MARKER = '\u0000ferry-out-of-range\u0000';
/** A key such as `__proto__` (RESERVED_KEYS); value rules reject it per field. */
export const RESERVED_KEY_MARKER = '\u0000ferry-reserved-key\u0000';

const MIN_INT64 = -(2n ** 63n);
const MAX_UINT64 = 2n ** 64n - 1n;

/** Whether an integer fits a 64-bit integer, signed (int64) or unsigned (uint64): the widest a device sends. */
export function within64Bits(value: bigint): boolean {
  return value >= MIN_INT64 && value <= MAX_UINT64;
}

const NUMBER_TOKEN = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const NON_FINITE_TOKEN = /-?(?:NaN|nan|Infinity|infinity|inf|Inf)/y;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Rewrites the text so JSON.parse keeps big integers exact (as decimal strings) and reads NaN/inf as markers. */
function rewrite(text: string): string {
  let out = '';
  let last = 0;
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      i++;
      while (i < text.length) {
        const s = text.charCodeAt(i);
        if (s === 0x5c /* \ */) i += 2;
        else if (s === 0x22) break;
        else i++;
      }
      i++;
      continue;
    }
    if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39) || c === 0x4e /* N */ || c === 0x6e /* n */ || c === 0x49 /* I */ || c === 0x69 /* i */) {
      NON_FINITE_TOKEN.lastIndex = i;
      const special = NON_FINITE_TOKEN.exec(text);
      if (special) {
        // Escaped: a raw NUL inside a JSON string is invalid; JSON.parse turns this into the marker.
        out += `${text.slice(last, i)}"\\u0000ferry-non-finite\\u0000"`;
        i += special[0].length;
        last = i;
        continue;
      }
      NUMBER_TOKEN.lastIndex = i;
      const num = NUMBER_TOKEN.exec(text);
      if (num) {
        const token = num[0];
        const digits = token.startsWith('-') ? token.length - 1 : token.length;
        if (digits > 15 && /^-?\d+$/.test(token)) {
          const big = BigInt(token);
          if (big > MAX_SAFE || big < -MAX_SAFE) {
            out += within64Bits(big) ? `${text.slice(last, i)}"${token}"` : `${text.slice(last, i)}"\\u0000ferry-out-of-range\\u0000"`;
            last = i + token.length;
          }
        }
        i += token.length;
        continue;
      }
    }
    i++;
  }
  return last === 0 ? text : out + text.slice(last);
}

/** Parses device JSON; undefined when it is not JSON even after the firmware quirks above. */
export function parseDeviceJson(text: string): unknown {
  try {
    return JSON.parse(rewrite(text)) as unknown;
  } catch {
    return undefined;
  }
}
