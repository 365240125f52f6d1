// Decoding what devices publish into readings. Pure: bytes, topic match and receive time in,
// a reading or a typed rejection out. Nothing here throws on bad input. The usual telemetry
// publish is read by device-fast.ts first; the schemas here decide everything else.
import { z } from 'zod';
import type { Limits } from './limits.js';
import { checkReadingLimits, fieldLimitRejection, metricValueSchema } from './reading.js';
import { checkedDeviceId, fieldRejection, invalidUtf8Rejection, RESERVED_KEYS, tagRejection, utf8Text } from './names.js';
import { NON_FINITE_MARKER, OUT_OF_RANGE_MARKER, parseDeviceJson } from './device-json.js';
import type { DeviceReading, Rejection, MetricValue } from './reading.js';
import type { TopicKind } from './topics.js';
import { dateDeviceTs } from './device-time.js';
import { decodeNativeFast } from './device-fast.js';

export { parseDeviceTime, parseIsoTime } from './device-time.js';

/** Ferry's native telemetry payload. */
export const deviceTelemetrySchema = z
  .object({
    ts: z.union([z.number(), z.string()]).optional(),
    seq: z.number().int().nonnegative().optional(),
    metrics: z.record(z.string(), metricValueSchema),
    tags: z.record(z.string(), z.string()).optional(),
  })
  .strict();

/** A flat object of values, as Tasmota, Shelly or Zigbee2MQTT send; `ts` and `seq` keep their meaning. */
export const flatTelemetrySchema = z.record(z.string(), metricValueSchema);

export const deviceStatusSchema = z.union([
  z.enum(['online', 'offline']),
  z.object({ state: z.enum(['online', 'offline']), ts: z.union([z.number(), z.string()]).optional() }).passthrough(),
]);

export type DecodeResult =
  | { readonly ok: true; readonly reading: DeviceReading; readonly dropped: readonly Rejection[] }
  | { readonly ok: false; readonly rejection: Rejection };

interface ParsedJson {
  readonly value: unknown;
  /** Values set aside so the rest of the payload could be read: bare NaN/inf, integers beyond 64 bits, reserved keys. */
  readonly dropped: Rejection[];
}

/**
 * Device JSON (parseDeviceJson: NaN/inf literals, exact integers beyond 2^53), with what cannot
 * be a value taken out per key: a bare NaN/inf, an integer beyond the 64-bit range, and a key such
 * as `__proto__` (which a schema would otherwise drop without a word).
 */
function parseJson(text: string): ParsedJson | undefined {
  const value = parseDeviceJson(text);
  if (value === undefined) return undefined;
  const dropped: Rejection[] = [];
  setAside(value, '', dropped);
  return { value, dropped };
}

function setAside(node: unknown, path: string, dropped: Rejection[]): void {
  if (node === null || typeof node !== 'object') return;
  const record = node as Record<string, unknown>;
  for (const k of Object.keys(record)) {
    const v = record[k];
    const name = (path ? `${path}.${k}` : k).replace(/^metrics\./, '');
    if (v === NON_FINITE_MARKER) dropped.push({ code: 'FERRY_ERR_VALUE_NOT_FINITE', reason: `metric "${name}" is not a finite number` });
    else if (v === OUT_OF_RANGE_MARKER) dropped.push({ code: 'FERRY_ERR_VALUE_OUT_OF_RANGE', reason: `metric "${name}" is an integer beyond the 64-bit range` });
    else if (RESERVED_KEYS.has(k)) dropped.push({ code: 'FERRY_ERR_NAME_INVALID', reason: `"${name}" is a reserved key, never a field` });
    else {
      setAside(v, path ? `${path}.${k}` : k, dropped);
      continue;
    }
    delete record[k];
  }
}

function zodRejection(error: z.ZodError, what: string): Rejection {
  const first = error.issues[0];
  const where = first && first.path.length > 0 ? ` at ${first.path.join('.')}` : '';
  return {
    code: 'FERRY_ERR_PAYLOAD_SCHEMA',
    reason: `${what}${where}: ${first?.message ?? 'invalid'}`,
    issues: error.issues.map((i) => ({ path: i.path.map(String), message: i.message, code: i.code })),
  };
}

export interface DecodeInput {
  readonly payload: Uint8Array;
  readonly kind: TopicKind;
  readonly deviceId: string;
  readonly receivedAt: number;
  readonly limits: Limits;
}

/** Decodes one device publish into a reading. */
export function decodeDevicePayload(input: DecodeInput): DecodeResult {
  const { payload, kind, receivedAt, limits } = input;
  if (payload.byteLength > limits.maxPayloadBytes) {
    return {
      ok: false,
      rejection: {
        code: 'FERRY_ERR_PAYLOAD_TOO_LARGE',
        reason: `payload is ${payload.byteLength} bytes, at most ${limits.maxPayloadBytes} allowed`,
      },
    };
  }
  const deviceId = checkedDeviceId(input.deviceId);
  if (typeof deviceId !== 'string') return { ok: false, rejection: deviceId };
  const text = utf8Text(payload);
  if (text === undefined) return { ok: false, rejection: invalidUtf8Rejection };
  if (kind === 'status') return decodeStatus(text, deviceId, receivedAt, limits);
  return decodeNativeFast(text, deviceId, receivedAt, limits) ?? decodeTelemetryText(text, deviceId, receivedAt, limits);
}

function decodeStatus(text: string, deviceId: string, receivedAt: number, limits: Limits): DecodeResult {
  const trimmed = text.trim();
  let candidate: unknown = trimmed;
  if (trimmed.startsWith('{') || trimmed.startsWith('"')) {
    const parsed = parseJson(trimmed);
    if (!parsed) return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'status payload is not valid JSON' } };
    candidate = parsed.value;
  }
  const result = deviceStatusSchema.safeParse(candidate);
  if (!result.success) return { ok: false, rejection: zodRejection(result.error, 'device status') };
  const state = typeof result.data === 'string' ? result.data : result.data.state;
  const rawTs = typeof result.data === 'string' ? undefined : result.data.ts;
  return finish({ kind: 'status', deviceId, receivedAt, rawTs, metrics: { state }, tags: undefined, deviceSeq: undefined }, [], limits);
}

/**
 * A telemetry text decoded by the schemas alone, without the fast path (device-fast.ts) in front:
 * the source of truth the fast path is tested against. `deviceId` must already be checked.
 */
export function decodeTelemetryText(text: string, deviceId: string, receivedAt: number, limits: Limits): DecodeResult {
  const parsed = parseJson(text);
  if (!parsed) {
    return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_JSON', reason: `payload is not valid JSON: ${preview(text)}` } };
  }
  const value = parsed.value;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'payload must be a JSON object' } };
  }
  const dropped: Rejection[] = parsed.dropped;
  // JSON.parse turns 1e999 into Infinity; set such values aside per metric before the schema sees them.
  const metricsHolder = 'metrics' in value ? (value).metrics : value;
  if (metricsHolder !== null && typeof metricsHolder === 'object' && !Array.isArray(metricsHolder)) {
    const record = metricsHolder as Record<string, unknown>;
    for (const [name, v] of Object.entries(record)) {
      if (typeof v === 'number' && !Number.isFinite(v)) {
        dropped.push({ code: 'FERRY_ERR_VALUE_NOT_FINITE', reason: `metric "${name}" is ${String(v)}` });
         
        delete record[name];
      }
    }
  }
  if ('metrics' in value) {
    const native = deviceTelemetrySchema.safeParse(value);
    if (!native.success) return { ok: false, rejection: zodRejection(native.error, 'telemetry') };
    const { ts, seq, metrics, tags } = native.data;
    return finish({ kind: 'telemetry', deviceId, receivedAt, rawTs: ts, metrics, tags, deviceSeq: seq }, dropped, limits);
  }
  const flat = flatTelemetrySchema.safeParse(value);
  if (!flat.success) return { ok: false, rejection: zodRejection(flat.error, 'flat telemetry') };
  const metrics: Record<string, MetricValue> = { ...flat.data };
  const rawTs = metrics.ts;
  const rawSeq = metrics.seq;
  delete metrics.ts;
  delete metrics.seq;
  if (rawTs !== undefined && typeof rawTs === 'boolean') {
    return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'ts must be a number or an ISO-8601 string' } };
  }
  let deviceSeq: number | undefined;
  if (rawSeq !== undefined) {
    if (typeof rawSeq !== 'number' || !Number.isSafeInteger(rawSeq) || rawSeq < 0) {
      return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'seq must be a non-negative integer' } };
    }
    deviceSeq = rawSeq;
  }
  return finish({ kind: 'telemetry', deviceId, receivedAt, rawTs, metrics, tags: undefined, deviceSeq }, dropped, limits);
}

interface Draft {
  kind: 'telemetry' | 'status';
  deviceId: string;
  receivedAt: number;
  rawTs: number | string | undefined;
  metrics: Record<string, MetricValue>;
  tags: Record<string, string> | undefined;
  deviceSeq: number | undefined;
}

function finish(draft: Draft, dropped: Rejection[], limits: Limits): DecodeResult {
  const dating = dateDeviceTs(draft.rawTs);
  if (dating === undefined) {
    return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `ts "${String(draft.rawTs).slice(0, 40)}" is not a time` } };
  }
  // The database's name rules per field and per tag: a bad one is set aside alone.
  const metrics: Record<string, MetricValue> = {};
  for (const [name, value] of Object.entries(draft.metrics)) {
    const bad = fieldLimitRejection(name, value, limits) ?? fieldRejection(name, value);
    if (bad) dropped.push(bad);
    else Object.defineProperty(metrics, name, { value, enumerable: true, writable: true, configurable: true });
  }
  let tags: Record<string, string> | undefined;
  for (const [key, value] of Object.entries(draft.tags ?? {})) {
    const bad = tagRejection(key, value);
    if (bad) dropped.push(bad);
    else Object.defineProperty((tags ??= {}), key, { value, enumerable: true, writable: true, configurable: true });
  }
  if (Object.keys(metrics).length === 0 && dropped.length > 0) {
    return { ok: false, rejection: dropped[0] ?? { code: 'FERRY_ERR_VALUE_NOT_FINITE', reason: 'no finite metric' } };
  }
  const reading: DeviceReading = {
    deviceId: draft.deviceId,
    kind: draft.kind,
    ts: typeof dating === 'number' ? dating : draft.receivedAt,
    tsSource: typeof dating === 'number' ? 'device' : 'gateway',
    receivedAt: draft.receivedAt,
    metrics,
    ...(draft.deviceSeq !== undefined ? { deviceSeq: draft.deviceSeq } : {}),
    ...(tags !== undefined ? { tags } : {}),
    ...(dating === 'unsynced' ? { flags: ['clock_unsynced'] } : {}),
  };
  const violation = checkReadingLimits(reading, limits, draft.receivedAt);
  if (violation) return { ok: false, rejection: violation };
  return { ok: true, reading, dropped };
}

function preview(text: string): string {
  const s = text.length > 60 ? `${text.slice(0, 60)}...` : text;
  return JSON.stringify(s);
}
