// InfluxDB line protocol: one point, one line, read the same way by InfluxDB 1.x, 2.x and
// VictoriaMetrics. Points that cannot be written faithfully are refused before sending
// (see point-rules.ts) instead of corrupting or silently shortening a batch.
//
// Escaping follows the line protocol reference:
//   measurement:                      comma and space
//   tag keys, tag values, field keys: comma, equals sign and space
//   string field values:              double-quoted; double quote and backslash escaped
// Numbers are floats written in JavaScript's shortest round-trip form (`21`, `0.1`, `1e+21`,
// `5e-324`): the reference accepts plain and exponent syntax (`1`, `1.0`, `1.e+78`) for
// IEEE-754 doubles, so the database reads back exactly the double that was sent. Integers
// (`1i`) are never written: JSON cannot tell 21 from 21.0, and a field must keep one type.
import { FerryError } from '@ferry/protocol';
import type { FieldValue, Point, PointRejection } from './sink.js';
import { checkPoint, compareUtf8 } from './point-rules.js';

export function escapeMeasurement(measurement: string): string {
  return measurement.replace(/[, ]/g, '\\$&');
}

/** For tag keys, tag values and field keys. */
export function escapeKey(key: string): string {
  return key.replace(/[,= ]/g, '\\$&');
}

export function quoteString(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

/** The shortest text that parses back to the same double; keeps the sign of -0. */
export function formatFloat(value: number): string {
  return Object.is(value, -0) ? '-0' : String(value);
}

export function formatFieldValue(value: FieldValue): string {
  if (typeof value === 'number') return formatFloat(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  return quoteString(value);
}

/** escapeKey, without running the replacement for the usual name that needs none (a loop: cheaper than a regex call on a short name). */
function escapedKey(key: string): string {
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c === 0x2c || c === 0x3d || c === 0x20) return escapeKey(key);
  }
  return key;
}

/** The names of a record in UTF-8 byte order (seriesTags' order), without building entries. */
function sortedNames(record: Readonly<Record<string, unknown>>): string[] {
  const names = Object.keys(record);
  if (names.length === 2) {
    // The usual tag set (device, gateway): one comparison, not a sort.
    if (compareUtf8(names[0]!, names[1]!) > 0) names.reverse();
  } else if (names.length > 2) names.sort(compareUtf8);
  return names;
}

/** The last measurement written and its escaped form: points of one mapping share the same few. */
let lastMeasurement = '';
let lastMeasurementEscaped = '';

function escapedMeasurement(measurement: string): string {
  if (measurement !== lastMeasurement) {
    lastMeasurementEscaped = escapeMeasurement(measurement);
    lastMeasurement = measurement;
  }
  return lastMeasurementEscaped;
}

/** A field's value as line protocol; a number, the usual value, is tested first. */
function fieldText(value: FieldValue): string {
  return typeof value === 'number' ? formatFloat(value) : formatFieldValue(value);
}

/** Encodes a point already known to pass checkPoint. Runs for every point written: plain loops. */
function lineOf(point: Point): string {
  let line = escapedMeasurement(point.measurement);
  const { tags, fields } = point;
  for (const key of sortedNames(tags)) {
    const value = tags[key]!;
    // Empty values are dropped, as seriesTags does.
    if (value.length > 0) line += `,${escapedKey(key)}=${escapedKey(value)}`;
  }
  let separator = ' ';
  for (const key of sortedNames(fields)) {
    line += `${separator}${escapedKey(key)}=${fieldText(fields[key]!)}`;
    separator = ',';
  }
  return `${line} ${point.timestampNs}`;
}

/**
 * One point as one line (no trailing newline). Tags are sorted by key and empty tag values
 * dropped, so the same point always yields the same line.
 * Throws FERRY_ERR_SINK_REJECTED when the point cannot be written (see checkPoint).
 */
export function encodePoint(point: Point): string {
  const problem = checkPoint(point);
  if (problem) throw new FerryError('FERRY_ERR_SINK_REJECTED', problem, { measurement: point.measurement });
  return lineOf(point);
}

export interface EncodedLine {
  /** Index of the point in the batch it was encoded from. */
  readonly index: number;
  readonly line: string;
}

export interface EncodedBatch {
  readonly lines: readonly EncodedLine[];
  /** Points refused before sending, with the reason. */
  readonly rejected: readonly PointRejection[];
}

export interface EncodedBody {
  /** The lines of the points that can be written, joined by '\n' (a line never holds one): one request body. */
  readonly body: string;
  /** Index in the batch passed to `encodeBody` of each line of the body, in order. */
  readonly indices: readonly number[];
  /** Points refused before sending, with the reason. */
  readonly rejected: readonly PointRejection[];
}

/**
 * Encodes a batch as one request body, setting aside the points that cannot be written: what
 * encodePoints gives with its lines joined, without an object per line (every point written
 * passes here). `linesOf` takes the body apart again when a refusal must be searched for.
 */
export function encodeBody(points: readonly Point[]): EncodedBody {
  let body = '';
  const indices: number[] = [];
  let rejected: PointRejection[] | undefined;
  for (let index = 0; index < points.length; index++) {
    const point = points[index]!;
    const problem = checkPoint(point);
    if (problem) {
      (rejected ??= []).push({ index, reason: problem });
      continue;
    }
    const line = lineOf(point);
    body = indices.length === 0 ? line : `${body}\n${line}`;
    indices.push(index);
  }
  return { body, indices, rejected: rejected ?? [] };
}

/** The lines of a body, each with its index in the batch. */
export function linesOf(encoded: EncodedBody): EncodedLine[] {
  const lines = encoded.indices.length === 0 ? [] : encoded.body.split('\n');
  return lines.map((line, i) => ({ index: encoded.indices[i]!, line }));
}

/** Encodes a batch, setting aside the points that cannot be written rather than failing the batch. */
export function encodePoints(points: readonly Point[]): EncodedBatch {
  const lines: EncodedLine[] = [];
  const rejected: PointRejection[] = [];
  points.forEach((point, index) => {
    const problem = checkPoint(point);
    if (problem) rejected.push({ index, reason: problem });
    else lines.push({ index, line: lineOf(point) });
  });
  return { lines, rejected };
}
