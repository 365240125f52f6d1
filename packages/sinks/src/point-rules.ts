// The rules every sink applies to a point before writing it, so a point's fate (written or
// rejected) does not depend on which database is configured, plus the canonical tag order.
import type { Point } from './sink.js';

/** InfluxDB's valid timestamp range (the extremes of int64 are reserved). */
export const MIN_TIMESTAMP_NS = -9_223_372_036_854_775_806n;
export const MAX_TIMESTAMP_NS = 9_223_372_036_854_775_806n;

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

function textProblem(what: string, text: string): string | undefined {
  if (LINE_BREAK.test(text)) return `${what} contains a line break, which line protocol cannot carry`;
  if (LONE_SURROGATE.test(text)) return `${what} contains an unpaired UTF-16 surrogate, which is not valid UTF-8`;
  return undefined;
}

/** Every character textProblem looks at. */
const SUSPECT_TEXT = /[\n\r\uD800-\uDFFF]/;

/** Every character any rule below looks at: a name without one of them passes them all. */
const SUSPECT = /[\u0000-\u001f\u007f\\\uD800-\uDFFF]/;

/** `what` names the name in a refusal; it is built only for a refusal (this runs for every name of every point). */
function nameProblem(describe: () => string, name: string): string | undefined {
  if (name.length === 0) return `${describe()} is empty`;
  if (!SUSPECT.test(name)) return undefined;
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

function quoted(name: string): string {
  return JSON.stringify(name.length > 60 ? `${name.slice(0, 60)}...` : name);
}

/** Returns why the point cannot be written, or undefined when it can. */
export function checkPoint(point: Point): string | undefined {
  const measurementProblem = nameProblem(() => 'measurement', point.measurement);
  if (measurementProblem) return measurementProblem;
  // A line starting with `#` is a comment: InfluxDB would answer 204 and silently drop the point.
  if (point.measurement.startsWith('#')) return `measurement ${quoted(point.measurement)} starts with "#", which line protocol reads as a comment`;
  for (const key in point.tags) {
    if (!Object.hasOwn(point.tags, key)) continue;
    const value = point.tags[key]!;
    const keyProblem = nameProblem(() => `tag key ${quoted(key)}`, key);
    if (keyProblem) return keyProblem;
    // An empty tag value means "no such tag" (line protocol cannot express it): it is dropped, not refused.
    if (value.length > 0) {
      const valueProblem = nameProblem(() => `value of tag ${quoted(key)}`, value);
      if (valueProblem) return valueProblem;
    }
  }
  const fields = Object.entries(point.fields);
  if (fields.length === 0) return 'point has no fields';
  for (const [key, value] of fields) {
    const keyProblem = nameProblem(() => `field key ${quoted(key)}`, key);
    if (keyProblem) return keyProblem;
    // InfluxDB reads `\"` in a field key as `"`; VictoriaMetrics loses or misreads a line whose
    // field key holds a lone double quote. No spelling works for both.
    if (key.includes('"')) return `field key ${quoted(key)} contains a double quote, which VictoriaMetrics cannot read in a field key`;
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) return `field ${quoted(key)} is ${String(value)}, which databases cannot store`;
    } else if (typeof value === 'string') {
      const problem = SUSPECT_TEXT.test(value) ? textProblem(`string value of field ${quoted(key)}`, value) : undefined;
      if (problem) return problem;
    } else if (typeof value !== 'boolean') {
      return `field ${quoted(key)} has unsupported type ${typeof value}`;
    }
  }
  if (typeof point.timestampNs !== 'bigint') return 'timestamp is not a bigint of nanoseconds';
  if (point.timestampNs < MIN_TIMESTAMP_NS || point.timestampNs > MAX_TIMESTAMP_NS) {
    return `timestamp ${point.timestampNs} ns is outside the range InfluxDB can store`;
  }
  return undefined;
}

function isSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdfff;
}

/** Orders strings by their UTF-8 bytes, as Go's bytes.Compare does (UTF-16 order differs above U+FFFF). */
export function compareUtf8(a: string, b: string): number {
  // Called for every tag of every point written: compare UTF-16 units without encoding. Away
  // from surrogates, UTF-16 and UTF-8 order agree (code point order), and a string that is a
  // prefix of the other sorts first either way (even when it ends in half a pair: a lone
  // surrogate encodes as EF BF BD, below any 4-byte sequence); where a surrogate decides, encode.
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (isSurrogate(x) || isSurrogate(y)) return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
    return x < y ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** The tags that identify the point's series: empty values dropped, sorted by key (InfluxDB's recommended order). */
export function seriesTags(point: Point): Array<[string, string]> {
  return Object.entries(point.tags)
    .filter(([, value]) => value.length > 0)
    .sort(([a], [b]) => compareUtf8(a, b));
}
