// Device JSON helpers for the formats: the parser itself (NaN/inf literals, integers beyond 2^53)
// lives in @ferry/protocol (device-json.ts), shared with the native format.
import { FerryError, invalidUtf8Rejection, utf8Text } from '@ferry/protocol';

export { NON_FINITE_MARKER, OUT_OF_RANGE_MARKER, RESERVED_KEY_MARKER, parseDeviceJson, within64Bits } from '@ferry/protocol';

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * The payload as text. Throws FERRY_ERR_PAYLOAD_ENCODING when it is not valid UTF-8 (guarded turns
 * that into the message's rejection): decoded leniently, bad bytes would become U+FFFD in values
 * and names.
 */
export function textOf(payload: Uint8Array): string {
  const text = utf8Text(payload);
  if (text === undefined) throw new FerryError(invalidUtf8Rejection.code, invalidUtf8Rejection.reason);
  return text;
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
