// JSON as devices really send it: bare NaN/inf literals (invalid JSON, sent by real firmware)
// and integers beyond 2^53 (which JSON.parse would round). Both are found by one scan of the
// text outside strings, before JSON.parse sees it.

/** A value that arrived as a bare NaN/inf literal; value rules reject it per field. */
export const NON_FINITE_MARKER = '\u0000ferry-non-finite\u0000';

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
            out += `${text.slice(last, i)}"${token}"`;
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

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function textOf(payload: Uint8Array): string {
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8');
}

/** Reads a dotted path such as `end_device_ids.dev_eui`. */
export function valueAt(root: unknown, path: string): unknown {
  let node: unknown = root;
  for (const key of path.split('.')) {
    if (!isPlainObject(node) || !Object.hasOwn(node, key)) return undefined;
    node = node[key];
  }
  return node;
}
