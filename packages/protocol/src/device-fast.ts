// A hand-written check of the usual telemetry publish, in front of the schemas (device.ts) on the
// gateway's hot path: `{"ts":..,"seq":..,"metrics":{..},"tags":{..}}` or a flat object of values,
// read by JSON.parse alone, every name and value acceptable. It only ever answers "this reading,
// exactly as the schema path decodes it" or "ask the schema path": anything unusual or invalid
// (NaN/inf, big integers, reserved keys, other keys or types, a bad name, a limit, a bad time)
// goes there, so every refusal, set-aside value, code and message still comes from the zod
// schemas. A property test (test/device-fast.test.ts) holds the two paths equal.
import type { Limits } from './limits.js';
import type { DecodeResult } from './device.js';
import type { DeviceReading, MetricValue } from './reading.js';
import { checkReadingLimits, fieldLimitRejection } from './reading.js';
import type { Rejection } from './reading.js';
import { fieldRejection, RESERVED_KEYS, tagRejection } from './names.js';
import { dateDeviceTs } from './device-time.js';
import { NON_FINITE_MARKER, OUT_OF_RANGE_MARKER } from './device-json.js';

/** A fast-path reading sets nothing aside: one shared empty list instead of one per message. */
const NOTHING_DROPPED: readonly Rejection[] = Object.freeze([]);

function parse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * A value the schema path keeps as it is: a number within +-(2^53-1), a boolean, or a string that
 * is not one of device-json.ts's markers (a device can spell one with escapes; the schema path
 * sets such a value aside). The bound also proves parseDeviceJson read the number as JSON.parse
 * did: it rewrites only integers beyond 2^53-1 (and NaN/inf, which JSON.parse refuses).
 */
function isPlainValue(v: unknown): v is MetricValue {
  if (typeof v === 'number') return Math.abs(v) <= Number.MAX_SAFE_INTEGER;
  if (typeof v === 'string') return v !== NON_FINITE_MARKER && v !== OUT_OF_RANGE_MARKER;
  return typeof v === 'boolean';
}

/**
 * An object of plain values (strings only, for tags), own keys only (a key inherited from a
 * polluted prototype is not the payload's) and no reserved key; its key count, or -1.
 */
function plainRecordSize(v: unknown, stringsOnly: boolean): number {
  if (!isObject(v)) return -1;
  let count = 0;
  for (const key in v) {
    const value = v[key];
    if (!Object.hasOwn(v, key) || RESERVED_KEYS.has(key) || !isPlainValue(value) || (stringsOnly && typeof value !== 'string')) return -1;
    count++;
  }
  return count;
}

/**
 * The reading the schema path would give for this telemetry text, with nothing dropped, or
 * undefined: then the schema path decodes it (and gives any refusal). `deviceId` is already checked.
 */
export function decodeNativeFast(text: string, deviceId: string, receivedAt: number, limits: Limits): DecodeResult | undefined {
  // What parseDeviceJson gives the schema path when JSON.parse takes the text as it is and every
  // number in it is within +-(2^53-1) (isPlainValue): it rewrites nothing else.
  const value = parse(text);
  if (!isObject(value)) return undefined;
  let metrics: Record<string, MetricValue>;
  let rawTs: unknown;
  let rawSeq: unknown;
  let tags: Record<string, string> | undefined;
  if ('metrics' in value) {
    // deviceTelemetrySchema: ts, seq, metrics, tags and nothing else.
    for (const key in value) {
      if (key !== 'ts' && key !== 'seq' && key !== 'metrics' && key !== 'tags') return undefined;
    }
    const rawMetrics = value.metrics;
    if (plainRecordSize(rawMetrics, false) <= 0) return undefined;
    metrics = rawMetrics as Record<string, MetricValue>;
    rawTs = value.ts;
    rawSeq = value.seq;
    if ('tags' in value) {
      const size = plainRecordSize(value.tags, true);
      if (size < 0) return undefined;
      if (size > 0) tags = value.tags as Record<string, string>;
    }
  } else {
    // flatTelemetrySchema, then ts and seq taken out of the metrics.
    if (plainRecordSize(value, false) < 0) return undefined;
    rawTs = value.ts;
    rawSeq = value.seq;
    metrics = value as Record<string, MetricValue>;
    if (rawTs !== undefined || rawSeq !== undefined) {
      metrics = {};
      for (const key in value) if (key !== 'ts' && key !== 'seq') metrics[key] = value[key] as MetricValue;
    }
  }
  if (rawTs !== undefined && (!isPlainValue(rawTs) || typeof rawTs === 'boolean')) return undefined;
  if (rawSeq !== undefined && (typeof rawSeq !== 'number' || !Number.isSafeInteger(rawSeq) || rawSeq < 0)) return undefined;

  const dating = dateDeviceTs(rawTs);
  if (dating === undefined) return undefined;

  // Every field and tag passes the name rules (a bad one would be set aside: the schema path's to report).
  let count = 0;
  for (const name in metrics) {
    const v = metrics[name];
    if (fieldLimitRejection(name, v, limits) ?? fieldRejection(name, v)) return undefined;
    count++;
  }
  if (count === 0) return undefined;
  if (tags !== undefined) {
    for (const key in tags) if (tagRejection(key, tags[key] as string)) return undefined;
  }

  // Keys in the order the schema path gives them (finish in device.ts).
  const ts = typeof dating === 'number' ? dating : receivedAt;
  const reading: DeviceReading = { deviceId, kind: 'telemetry', ts, tsSource: typeof dating === 'number' ? 'device' : 'gateway', receivedAt, metrics };
  if (rawSeq !== undefined) reading.deviceSeq = rawSeq;
  if (tags !== undefined) reading.tags = tags;
  if (dating === 'unsynced') reading.flags = ['clock_unsynced'];
  if (checkReadingLimits(reading, limits, receivedAt)) return undefined;
  return { ok: true, reading, dropped: NOTHING_DROPPED };
}
