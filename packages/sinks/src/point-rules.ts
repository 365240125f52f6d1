// The rules every sink applies to a point before writing it, so a point's fate (written or
// rejected) does not depend on which database is configured, plus the canonical tag order. The
// name rules themselves are @ferry/protocol's (names.ts), which the gateway applies per field.
import { fieldKeyProblem, measurementProblem, quotedName, stringValueProblem, tagProblem } from '@ferry/protocol';
import type { FieldValue, Point } from './sink.js';

/** InfluxDB's valid timestamp range (the extremes of int64 are reserved). */
export const MIN_TIMESTAMP_NS = -9_223_372_036_854_775_806n;
export const MAX_TIMESTAMP_NS = 9_223_372_036_854_775_806n;

function quoted(name: string): string {
  return quotedName(name);
}

/** The last measurement that passed: points of one mapping share the same few, checked once. */
let passedMeasurement: string | undefined;

/** Returns why the point cannot be written, or undefined when it can. */
export function checkPoint(point: Point): string | undefined {
  if (point.measurement !== passedMeasurement) {
    const measurement = measurementProblem(point.measurement);
    if (measurement) return measurement;
    passedMeasurement = point.measurement;
  }
  for (const key in point.tags) {
    if (!Object.hasOwn(point.tags, key)) continue;
    // An empty tag value means "no such tag" (line protocol cannot express it): it is dropped, not refused.
    const problem = tagProblem(key, point.tags[key]!);
    if (problem) return problem;
  }
  // Own keys in order, as Object.entries lists them, without building its pairs.
  let fields = 0;
  for (const key in point.fields) {
    if (!Object.hasOwn(point.fields, key)) continue;
    fields++;
    const problem = fieldProblem(key, point.fields[key]);
    if (problem) return problem;
  }
  if (fields === 0) return 'point has no fields';
  return timestampProblem(point.timestampNs);
}

function timestampProblem(timestampNs: unknown): string | undefined {
  if (typeof timestampNs !== 'bigint') return 'timestamp is not a bigint of nanoseconds';
  if (timestampNs < MIN_TIMESTAMP_NS || timestampNs > MAX_TIMESTAMP_NS) {
    return `timestamp ${timestampNs} ns is outside the range InfluxDB can store`;
  }
  return undefined;
}

function fieldProblem(key: string, value: unknown): string | undefined {
  const keyProblem = fieldKeyProblem(key);
  if (keyProblem) return keyProblem;
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : `field ${quoted(key)} is ${String(value)}, which databases cannot store`;
  if (typeof value === 'string') return stringValueProblem(key, value);
  if (typeof value !== 'boolean') return `field ${quoted(key)} has unsupported type ${typeof value}`;
  return undefined;
}

/**
 * The point without the fields and tags the name rules refuse, and why each went: one bad field
 * or tag must not cost the point its good fields. The measurement and the timestamp are not
 * repaired here, and a point with no good field is returned as it is: checkPoint refuses those
 * whole, naming the real reason.
 */
export function withoutBadNames(point: Point): { readonly point: Point; readonly dropped: readonly string[] } {
  let dropped: string[] | undefined;
  let tags: Record<string, string> | undefined;
  for (const key in point.tags) {
    if (!Object.hasOwn(point.tags, key)) continue;
    const problem = tagProblem(key, point.tags[key]!);
    if (!problem) continue;
    (dropped ??= []).push(problem);
    tags ??= copyOf(point.tags);
    delete tags[key];
  }
  let fields: Record<string, FieldValue> | undefined;
  for (const key in point.fields) {
    if (!Object.hasOwn(point.fields, key)) continue;
    const problem = fieldProblem(key, point.fields[key]);
    if (!problem) continue;
    (dropped ??= []).push(problem);
    fields ??= copyOf(point.fields);
    delete fields[key];
  }
  if (!dropped || (fields && Object.keys(fields).length === 0)) return { point, dropped: NONE_DROPPED };
  return { point: { ...point, tags: tags ?? point.tags, fields: fields ?? point.fields }, dropped };
}

const NONE_DROPPED: readonly string[] = Object.freeze([]);

/** A copy as own properties: a key such as `__proto__` stays a key, never the prototype. */
function copyOf<V>(record: Readonly<Record<string, V>>): Record<string, V> {
  const out: Record<string, V> = {};
  for (const [k, v] of Object.entries(record)) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  return out;
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
