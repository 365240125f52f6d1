// Decoding what devices publish into readings. Pure: bytes, topic match and receive time in,
// a reading or a typed rejection out. Nothing here throws on bad input.
import { z } from 'zod';
import type { Limits } from './limits.js';
import { checkReadingLimits, DEVICE_ID_PATTERN, metricValueSchema } from './reading.js';
import type { DeviceReading, Rejection, MetricValue } from './reading.js';
import type { TopicKind } from './topics.js';

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

/** Earliest device time taken as a set clock: before this the device has not synced (1970, ts 0). */
const CLOCK_SYNCED_AFTER_MS = Date.UTC(2001, 0, 1);

/**
 * Reads a device timestamp: epoch seconds, milliseconds, microseconds or nanoseconds (told apart
 * by magnitude) or an ISO-8601 string. Returns undefined when it is not a time.
 */
export function parseDeviceTime(ts: number | string): number | undefined {
  if (typeof ts === 'string') {
    const trimmed = ts.trim();
    if (/^-?\d+(\.\d+)?$/.test(trimmed)) return parseDeviceTime(Number(trimmed));
    const ms = Date.parse(trimmed);
    return Number.isFinite(ms) ? ms : undefined;
  }
  if (!Number.isFinite(ts) || ts < 0) return undefined;
  if (ts < 1e11) return Math.round(ts * 1000);
  if (ts < 1e14) return Math.round(ts);
  if (ts < 1e17) return Math.round(ts / 1000);
  return Math.round(ts / 1e6);
}

const NON_FINITE_TOKEN = /(:\s*)(-?(?:NaN|nan|Infinity|inf|-inf))(\s*[,}\]])/g;

interface ParsedJson {
  readonly value: unknown;
  /** Keys whose bare NaN/Infinity literal was replaced so the rest of the payload could be read. */
  readonly nonFinite: readonly string[];
}

/** JSON.parse, tolerant of the bare `NaN`/`inf` literals some firmware sends: those values are set aside. */
function parseJson(text: string): ParsedJson | undefined {
  try {
    return { value: JSON.parse(text), nonFinite: [] };
  } catch {
    if (!NON_FINITE_TOKEN.test(text)) return undefined;
    NON_FINITE_TOKEN.lastIndex = 0;
    // Escaped in the JSON text; JSON.parse turns it into the NUL-delimited sentinel compared below.
    const marker = '"\\u0000ferry-non-finite\\u0000"';
    try {
      const value: unknown = JSON.parse(text.replace(NON_FINITE_TOKEN, `$1${marker}$3`));
      const nonFinite: string[] = [];
      stripMarkers(value, '', nonFinite);
      return { value, nonFinite };
    } catch {
      return undefined;
    }
  }
}

function stripMarkers(node: unknown, path: string, found: string[]): void {
  if (node === null || typeof node !== 'object') return;
  const record = node as Record<string, unknown>;
  for (const [k, v] of Object.entries(record)) {
    if (v === '\u0000ferry-non-finite\u0000') {
      found.push(path ? `${path}.${k}` : k);
       
      delete record[k];
    } else stripMarkers(v, path ? `${path}.${k}` : k, found);
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
  const { payload, kind, deviceId, receivedAt, limits } = input;
  if (payload.byteLength > limits.maxPayloadBytes) {
    return {
      ok: false,
      rejection: {
        code: 'FERRY_ERR_PAYLOAD_TOO_LARGE',
        reason: `payload is ${payload.byteLength} bytes, at most ${limits.maxPayloadBytes} allowed`,
      },
    };
  }
  if (!DEVICE_ID_PATTERN.test(deviceId)) {
    return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `device id "${deviceId.slice(0, 60)}" is not valid` } };
  }
  const text = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8');
  return kind === 'status' ? decodeStatus(text, deviceId, receivedAt, limits) : decodeTelemetry(text, deviceId, receivedAt, limits);
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

function decodeTelemetry(text: string, deviceId: string, receivedAt: number, limits: Limits): DecodeResult {
  const parsed = parseJson(text);
  if (!parsed) {
    return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_JSON', reason: `payload is not valid JSON: ${preview(text)}` } };
  }
  const value = parsed.value;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'payload must be a JSON object' } };
  }
  const dropped: Rejection[] = parsed.nonFinite.map((path) => ({
    code: 'FERRY_ERR_VALUE_NOT_FINITE' as const,
    reason: `metric "${path.replace(/^metrics\./, '')}" is not a finite number`,
  }));
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
  let ts = draft.receivedAt;
  let tsSource: 'device' | 'gateway' = 'gateway';
  const flags: string[] = [];
  if (draft.rawTs !== undefined) {
    const parsed = parseDeviceTime(draft.rawTs);
    if (parsed === undefined) {
      return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `ts "${String(draft.rawTs).slice(0, 40)}" is not a time` } };
    }
    if (parsed < CLOCK_SYNCED_AFTER_MS) flags.push('clock_unsynced');
    else {
      ts = parsed;
      tsSource = 'device';
    }
  }
  const metrics = draft.metrics;
  if (Object.keys(metrics).length === 0 && dropped.length > 0) {
    return { ok: false, rejection: dropped[0] ?? { code: 'FERRY_ERR_VALUE_NOT_FINITE', reason: 'no finite metric' } };
  }
  const reading: DeviceReading = {
    deviceId: draft.deviceId,
    kind: draft.kind,
    ts,
    tsSource,
    receivedAt: draft.receivedAt,
    metrics,
    ...(draft.deviceSeq !== undefined ? { deviceSeq: draft.deviceSeq } : {}),
    ...(draft.tags !== undefined && Object.keys(draft.tags).length > 0 ? { tags: draft.tags } : {}),
    ...(flags.length > 0 ? { flags } : {}),
  };
  const violation = checkReadingLimits(reading, limits, draft.receivedAt);
  if (violation) return { ok: false, rejection: violation };
  return { ok: true, reading, dropped };
}

function preview(text: string): string {
  const s = text.length > 60 ? `${text.slice(0, 60)}...` : text;
  return JSON.stringify(s);
}
