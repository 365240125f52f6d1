// The one rule book for names and text that end up in the database: device ids, metric (field)
// names, tag keys and values, measurements, string values. The gateway applies it per field (a bad
// field is set aside alone), the sinks apply it per point before writing (packages/sinks
// point-rules.ts), so a name that passes one passes the other.
import type { Rejection } from './reading.js';

const LINE_BREAK = /[\n\r]/;
/** InfluxDB 1.x skips a NUL or tab at the start of a field key and drops DEL: control characters in names are refused. */
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/**
 * A backslash that InfluxDB 1.x/2.x and VictoriaMetrics read differently: `\\` is two
 * backslashes to InfluxDB but one to VictoriaMetrics; InfluxDB reads `\"` in a measurement
 * as `"`, VictoriaMetrics as `\"`; a backslash before an escaped character or at the end of
 * a name cannot be written at all (InfluxDB takes it as an escape). A backslash before any
 * other character is read literally by both.
 */
const AMBIGUOUS_BACKSLASH = /\\(?=[\\ ,="]|$)/;

/**
 * Whether a text has a character textProblem looks at (a line break, a surrogate). A loop, not a
 * regex: it runs for every string value of every point, and a short text is done before a regex
 * call would have started.
 */
function hasSuspectText(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x0a || c === 0x0d || (c >= 0xd800 && c <= 0xdfff)) return true;
  }
  return false;
}

/**
 * Whether nameProblem passes a name without looking further: not empty, and none of the characters
 * it looks at (controls, DEL, backslash, surrogates). A loop, not a regex: it runs for every name
 * of every point, and the callers below skip building the name's description for a plain one.
 */
function isPlainName(name: string): boolean {
  if (name.length === 0) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return false;
  }
  return true;
}

/** Why a text (name or string value) cannot be carried by line protocol, or undefined. */
export function textProblem(what: string, text: string): string | undefined {
  if (!hasSuspectText(text)) return undefined;
  if (LINE_BREAK.test(text)) return `${what} contains a line break, which line protocol cannot carry`;
  if (LONE_SURROGATE.test(text)) return `${what} contains an unpaired UTF-16 surrogate, which is not valid UTF-8`;
  return undefined;
}

/**
 * Why a measurement, tag key, tag value or field key cannot be written, or undefined. `describe`
 * names it in the refusal and is called only for one (this runs for every name of every point).
 */
export function nameProblem(describe: () => string, name: string): string | undefined {
  if (isPlainName(name)) return undefined;
  if (name.length === 0) return `${describe()} is empty`;
  const what = describe();
  const problem = textProblem(what, name);
  if (problem) return problem;
  const control = CONTROL_CHARACTER.exec(name);
  if (control) {
    const code = control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    return `${what} contains the control character U+${code}, which InfluxDB drops or misreads in names`;
  }
  if (AMBIGUOUS_BACKSLASH.test(name)) {
    return `${what} has a backslash at its end or before a backslash, space, comma, equals sign or double quote, which InfluxDB and VictoriaMetrics read differently`;
  }
  return undefined;
}

export function quotedName(name: string): string {
  return JSON.stringify(name.length > 60 ? `${name.slice(0, 60)}...` : name);
}

/**
 * Keys that name an object's own machinery in JavaScript: kept as a field they would reach the
 * prototype of whatever object a later stage builds from the reading. Refused wherever they appear.
 */
export const RESERVED_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Why a field (metric) name cannot be written, or undefined. */
export function fieldKeyProblem(key: string): string | undefined {
  if (isPlainName(key) && !key.includes('"')) return undefined;
  const problem = nameProblem(() => `field key ${quotedName(key)}`, key);
  if (problem) return problem;
  // InfluxDB reads `\"` in a field key as `"`; VictoriaMetrics loses or misreads a line whose
  // field key holds a lone double quote. No spelling works for both.
  if (key.includes('"')) return `field key ${quotedName(key)} contains a double quote, which VictoriaMetrics cannot read in a field key`;
  return undefined;
}

/** Why a tag (key and value) cannot be written, or undefined. An empty value means "no such tag" and passes. */
export function tagProblem(key: string, value: string): string | undefined {
  if (isPlainName(key) && (value.length === 0 || isPlainName(value))) return undefined;
  const keyProblem = nameProblem(() => `tag key ${quotedName(key)}`, key);
  if (keyProblem) return keyProblem;
  return value.length > 0 ? nameProblem(() => `value of tag ${quotedName(key)}`, value) : undefined;
}

/** Why a measurement name cannot be written, or undefined. */
export function measurementProblem(measurement: string): string | undefined {
  const problem = nameProblem(() => 'measurement', measurement);
  if (problem) return problem;
  // A line starting with `#` is a comment: InfluxDB would answer 204 and silently drop the point.
  if (measurement.startsWith('#')) return `measurement ${quotedName(measurement)} starts with "#", which line protocol reads as a comment`;
  return undefined;
}

/** Why a string field value cannot be written, or undefined. */
export function stringValueProblem(key: string, value: string): string | undefined {
  return textProblem(`string value of field ${quotedName(key)}`, value);
}

/**
 * Why one field (name and value) a device sent cannot be taken, as a rejection, or undefined: the
 * database's rules, and no reserved key (the sinks store those safely; a reading never carries one).
 */
export function fieldRejection(name: string, value: unknown): Rejection | undefined {
  const problem = RESERVED_KEYS.has(name)
    ? `field key ${quotedName(name)} is reserved (__proto__, constructor, prototype)`
    : (fieldKeyProblem(name) ?? (typeof value === 'string' ? stringValueProblem(name, value) : undefined));
  return problem ? { code: 'FERRY_ERR_NAME_INVALID', reason: problem } : undefined;
}

/** Why one tag a device sent cannot be taken, as a rejection, or undefined (as fieldRejection). */
export function tagRejection(key: string, value: string): Rejection | undefined {
  const problem = RESERVED_KEYS.has(key) ? `tag key ${quotedName(key)} is reserved (__proto__, constructor, prototype)` : tagProblem(key, value);
  return problem ? { code: 'FERRY_ERR_NAME_INVALID', reason: problem } : undefined;
}

/**
 * Characters refused in a device id besides the database's name rules: C0 and C1 controls, the
 * bidi embeddings, overrides, isolates and marks (U+202A-202E, U+2066-2069, U+200E/200F), which
 * make an id display as another, and the zero-width characters (U+200B-200D, U+2060, U+FEFF),
 * which make two ids that look the same differ.
 */
const DEVICE_ID_INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]/;

/** NFC: `Küche` composed and decomposed is one device. */
export function normalizeDeviceId(id: string): string {
  // Only a non-ASCII id can change; skip the work for the usual one.
  return /^[\u0000-\u007f]*$/.test(id) ? id : id.normalize('NFC');
}

/**
 * An id of letters, digits and `_ : @ -` alone, 1 to maxLength of them, breaks none of the rules
 * below (checked once per reading: the usual id skips them). A loop, cheaper than a regex call.
 */
export function isPlainDeviceId(id: string, maxLength = 256): boolean {
  const n = id.length;
  if (n === 0 || n > maxLength) return false;
  for (let i = 0; i < n; i++) {
    const c = id.charCodeAt(i);
    // 0-9 : @ A-Z _ a-z -
    if ((c >= 0x30 && c <= 0x3a) || (c >= 0x40 && c <= 0x5a) || c === 0x5f || (c >= 0x61 && c <= 0x7a) || c === 0x2d) continue;
    return false;
  }
  return true;
}

/**
 * Why a device id (already NFC) is not valid, or undefined. Beyond the MQTT rules (no `#`, `+`),
 * the id is a tag value in the database and a path-like name for operators: no invisible or
 * direction-changing characters, no `.` or `..` level, and the database's tag-value rules.
 */
export function deviceIdProblem(id: string, maxLength = 256): string | undefined {
  if (isPlainDeviceId(id, maxLength)) return undefined;
  const shown = quotedName(id);
  if (id.length === 0) return 'device id is empty';
  if (id.length > maxLength) return `device id ${shown} is longer than ${maxLength} characters`;
  if (id.includes('#') || id.includes('+')) return `device id ${shown} contains an MQTT wildcard (# or +)`;
  const invisible = DEVICE_ID_INVISIBLE.exec(id);
  if (invisible) {
    const code = invisible[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    return `device id ${shown} contains U+${code}, a control, zero-width or text-direction character`;
  }
  if (id.split('/').some((level) => level === '.' || level === '..')) return `device id ${shown} has a "." or ".." level`;
  if (id.includes('\uFFFD')) return `device id ${shown} contains U+FFFD, the mark of bytes that were not valid UTF-8`;
  return nameProblem(() => `device id ${shown}`, id);
}

export type DeviceIdVerdict = { readonly ok: true; readonly deviceId: string } | { readonly ok: false; readonly rejection: Rejection };

/**
 * checkDeviceId without its verdict object, for the path every device message takes: the id
 * normalised (NFC) and checked, or why it is refused. A plain id (isPlainDeviceId) is ASCII, which
 * NFC leaves as it is, and breaks no rule: it is taken as it came.
 */
export function checkedDeviceId(raw: string, maxLength = 256): string | Rejection {
  if (isPlainDeviceId(raw, maxLength)) return raw;
  const deviceId = normalizeDeviceId(raw);
  const problem = deviceIdProblem(deviceId, maxLength);
  return problem ? { code: 'FERRY_ERR_DEVICE_ID_INVALID', reason: problem } : deviceId;
}

/** Normalises a device id (NFC) and checks it: the id a reading carries is the one returned here. */
export function checkDeviceId(raw: string, maxLength = 256): DeviceIdVerdict {
  const checked = checkedDeviceId(raw, maxLength);
  return typeof checked === 'string' ? { ok: true, deviceId: checked } : { ok: false, rejection: checked };
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The payload as text, or undefined when its bytes are not valid UTF-8 (a truncated sequence, an
 * overlong encoding, a surrogate, raw Latin-1): decoded leniently, each would become U+FFFD in
 * values and even in metric names.
 */
export function utf8Text(payload: Uint8Array): string | undefined {
  try {
    return STRICT_UTF8.decode(payload);
  } catch {
    return undefined;
  }
}

export const invalidUtf8Rejection: Rejection = {
  code: 'FERRY_ERR_PAYLOAD_ENCODING',
  reason: 'payload is not valid UTF-8 (a truncated or overlong sequence, or bytes of another encoding)',
};

/**
 * Why a topic cannot be taken, or undefined. MQTT topics are UTF-8 without U+0000; the MQTT
 * libraries decode topic bytes leniently, so invalid bytes arrive as U+FFFD (or a lone surrogate).
 */
export function topicProblem(topic: string): string | undefined {
  if (topic.includes('\u0000')) return 'topic contains U+0000, which MQTT forbids';
  if (topic.includes('\uFFFD') || LONE_SURROGATE.test(topic)) return 'topic is not valid UTF-8';
  return undefined;
}
