// A hand-written check for the usual reading, in front of readingSchema (reading.ts) on the
// ingestor's hot path. It only ever says "certainly valid" or "ask the schema": every refusal, with
// its code and message, still comes from zod, which stays the source of truth. A property test
// (test/reading-fast.test.ts) holds that whatever this accepts, the schema accepts too and parses
// to an equal value.
import type { Reading } from './reading.js';
import { DEVICE_ID_PATTERN } from './reading.js';
import { deviceIdProblem, isPlainDeviceId } from './names.js';

/** A JSON object as JSON.parse makes it (not an array, not null, no other prototype). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype;
}

export function isSafeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value);
}

function isMetricValue(value: unknown): boolean {
  return typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
}

/** Own keys of a record, all plain (no `__proto__`: the schema's record drops it), each value passing `ok`. */
function isRecordOf(value: unknown, ok: (v: unknown) => boolean): boolean {
  if (!isPlainObject(value)) return false;
  for (const key in value) {
    if (key === '__proto__' || !Object.hasOwn(value, key) || !ok(value[key])) return false;
  }
  return true;
}

const isString = (v: unknown): boolean => typeof v === 'string';

/** Every index, holes too (`every` skips a hole, the schema refuses it). */
function isStringArray(value: unknown): boolean {
  if (!Array.isArray(value)) return false;
  for (let i = 0; i < value.length; i++) if (typeof value[i] !== 'string') return false;
  return true;
}

/**
 * The raw reading itself, typed, when it certainly passes readingSchema and the schema would
 * parse it to an equal value (a plain JSON object of the schema's keys and types only); otherwise
 * undefined, and the caller asks readingSchema, which gives the verdict and any refusal.
 */
export function readingFastPath(raw: unknown): Reading | undefined {
  if (!isPlainObject(raw)) return undefined;
  for (const key in raw) {
    if (!Object.hasOwn(raw, key)) return undefined;
    const value = raw[key];
    switch (key) {
      case 'seq':
        if (!isSafeInteger(value) || value < 0) return undefined;
        break;
      case 'deviceId':
        if (typeof value !== 'string') return undefined;
        // A plain id passes the pattern and every rule; anything else is checked in full.
        if (!isPlainDeviceId(value) && (!DEVICE_ID_PATTERN.test(value) || deviceIdProblem(value) !== undefined)) return undefined;
        break;
      case 'kind':
        if (value !== 'telemetry' && value !== 'status') return undefined;
        break;
      case 'ts':
      case 'receivedAt':
        if (!isSafeInteger(value)) return undefined;
        break;
      case 'tsSource':
        if (value !== 'device' && value !== 'gateway') return undefined;
        break;
      case 'deviceSeq':
        if (!isSafeInteger(value) || value < 0) return undefined;
        break;
      case 'metrics':
        if (!isRecordOf(value, isMetricValue)) return undefined;
        break;
      case 'tags':
        if (!isRecordOf(value, isString)) return undefined;
        break;
      case 'flags':
        if (!isStringArray(value)) return undefined;
        break;
      default:
        return undefined;
    }
  }
  // The required keys: present (a missing one is the schema's to report).
  if (raw.seq === undefined || raw.deviceId === undefined || raw.kind === undefined || raw.ts === undefined) return undefined;
  if (raw.tsSource === undefined || raw.receivedAt === undefined || raw.metrics === undefined) return undefined;
  return raw as Reading;
}
