// What the ingestors of one fleet tell each other through Redis so that each one's health model
// sees the whole fleet (fleet-sync.ts does the I/O): the readings each one wrote, operators' acks
// and silences, and the keys under which a notification is claimed. Pure: names, wire formats
// (zod, validated on receipt: a message from an older or broken peer is dropped, never applied
// half), and the rules for which of two records wins.
import { z } from 'zod';
import { metricValueSchema } from '@ferry/protocol';
import type { MetricValue } from '@ferry/protocol';
import type { AcknowledgementChange, Alert, Silence } from '@ferry/health';
import type { Clock } from '@ferry/runtime';
import type { HealthObservation } from '../health.js';

/** The Redis keys and channels of the fleet view, under `state.keyPrefix`. */
export interface FleetKeys {
  /** Channel: every chunk a member wrote, as the health model needs it. */
  readonly writtenChannel: string;
  /** Hash deviceId -> the newest reading written of it (`<receivedAt> <json>`): what a starting member catches up from. */
  readonly lastSeen: string;
  /** Channel: acks and silences made through any member. */
  readonly alertsChannel: string;
  /** Hash alert key -> the latest ack or un-ack of its open alert (`<at> <json>`). */
  readonly acks: string;
  /** Sorted set of silence ids, scored by their end. */
  readonly silenceIndex: string;
  /** String: one silence (or its early expiry), gone by itself at its end. */
  silence(id: number): string;
  /** String: who announced the current episode of an alert (`F <startsAt> <member>` or `R <endsAt> <member>`). */
  claim(claimKey: string): string;
}

export function fleetKeys(keyPrefix: string): FleetKeys {
  const p = `${keyPrefix}fleet:`;
  return {
    writtenChannel: `${p}written`,
    lastSeen: `${p}lastseen`,
    alertsChannel: `${p}alerts`,
    acks: `${p}acks`,
    silenceIndex: `${p}silences`,
    silence: (id) => `${p}silence:${id}`,
    claim: (claimKey) => `${p}claim:${claimKey}`,
  };
}

// ---- written readings ----

const metricsSchema = z.record(z.string(), metricValueSchema);

/** One written reading, in the fewest bytes the model and the device page need. */
export const wireReadingSchema = z.object({
  /** deviceId */
  d: z.string().min(1),
  /** gatewayId (absent for direct devices) */
  g: z.string().optional(),
  /** the gateway's outbox seq */
  s: z.number().optional(),
  /** kind: telemetry or status */
  k: z.enum(['t', 's']),
  ts: z.number(),
  /** tsSource: device or gateway */
  src: z.enum(['d', 'g']),
  /** receivedAt */
  at: z.number(),
  /** deviceSeq */
  ds: z.number().optional(),
  /** the metrics the model reads */
  m: metricsSchema,
  /** what the device page shows; absent: nothing was written raw */
  r: z
    .object({
      ts: z.number(),
      /** absent: the reading's own metrics (nothing was processed) */
      m: metricsSchema.optional(),
      f: z.array(z.string()).optional(),
    })
    .optional(),
});
export type WireReading = z.infer<typeof wireReadingSchema>;

export const writtenMessageSchema = z.object({
  v: z.literal(1),
  /** memberId of the writer: a member skips its own */
  from: z.string(),
  /** catch-up: the newest reading per device of a stretch not sent one by one */
  c: z.boolean().optional(),
  r: z.array(wireReadingSchema),
});
export type WrittenMessage = z.infer<typeof writtenMessageSchema>;

// Every member parses every reading of the fleet: a hand check in front of the schema, as
// @ferry/protocol reading-fast.ts does for readings. It only says "certainly valid" or "ask the
// schema", so every refusal and its message still come from zod.
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isNumber = (v: unknown): v is number => typeof v === 'number';
const optional = (v: unknown, ok: (x: unknown) => boolean): boolean => v === undefined || ok(v);

function isMetrics(v: unknown): boolean {
  if (!isObject(v)) return false;
  for (const key in v) {
    const value = v[key];
    if (key === '__proto__' || typeof value !== 'number' && typeof value !== 'boolean' && typeof value !== 'string') return false;
  }
  return true;
}

function isWireReading(v: unknown): v is WireReading {
  if (!isObject(v)) return false;
  const r = v['r'];
  return (
    typeof v['d'] === 'string' &&
    v['d'] !== '' &&
    optional(v['g'], (x) => typeof x === 'string') &&
    optional(v['s'], isNumber) &&
    (v['k'] === 't' || v['k'] === 's') &&
    isNumber(v['ts']) &&
    (v['src'] === 'd' || v['src'] === 'g') &&
    isNumber(v['at']) &&
    optional(v['ds'], isNumber) &&
    isMetrics(v['m']) &&
    optional(r, (x) => isObject(x) && isNumber(x['ts']) && optional(x['m'], isMetrics) && optional(x['f'], (f) => Array.isArray(f) && f.every((s) => typeof s === 'string')))
  );
}

/** A written-readings message, or the schema's first complaint about it. */
export function parseWrittenMessage(text: string): { readonly message: WrittenMessage } | { readonly issue: string } {
  const value = parseJson(text);
  if (isObject(value) && value['v'] === 1 && typeof value['from'] === 'string' && optional(value['c'], (c) => typeof c === 'boolean') && Array.isArray(value['r']) && value['r'].every(isWireReading)) {
    return { message: value as WrittenMessage };
  }
  const parsed = writtenMessageSchema.safeParse(value);
  if (parsed.success) return { message: parsed.data };
  return { issue: parsed.error.issues[0]?.message ?? 'not a written-readings message' };
}

/** String metrics the model reads: a status's `state`, and the firmware fields of telemetry. */
export interface WireMetricPolicy {
  readonly firmwareFields: readonly string[];
}

function modelMetrics(kind: 'telemetry' | 'status', metrics: Readonly<Record<string, MetricValue>>, policy: WireMetricPolicy): Record<string, MetricValue> {
  const out: Record<string, MetricValue> = {};
  for (const [name, value] of Object.entries(metrics)) {
    if (typeof value !== 'string') out[name] = value;
    else if (kind === 'status' ? name === 'state' : policy.firmwareFields.includes(name)) out[name] = value;
  }
  return out;
}

/** Numbers and booleans: all the device page keeps of a reading (recent.ts). */
function pageMetrics(metrics: Readonly<Record<string, MetricValue>>): Record<string, MetricValue> {
  const out: Record<string, MetricValue> = {};
  for (const [name, value] of Object.entries(metrics)) if (typeof value !== 'string') out[name] = value;
  return out;
}

export function toWire(observation: HealthObservation, policy: WireMetricPolicy): WireReading {
  const { reading, recent } = observation;
  const wire: WireReading = {
    d: reading.deviceId,
    k: reading.kind === 'status' ? 's' : 't',
    ts: reading.ts,
    src: reading.tsSource === 'device' ? 'd' : 'g',
    at: reading.receivedAt,
    m: modelMetrics(reading.kind, reading.metrics, policy),
  };
  if (reading.gatewayId !== undefined) wire.g = reading.gatewayId;
  if (reading.seq !== undefined) wire.s = reading.seq;
  if (reading.deviceSeq !== undefined) wire.ds = reading.deviceSeq;
  if (recent) {
    wire.r = { ts: recent.ts };
    // The same object when nothing was processed (health.ts recentOf): sent once.
    if (recent.metrics !== reading.metrics) wire.r.m = pageMetrics(recent.metrics);
    if (recent.flags !== undefined) wire.r.f = [...recent.flags];
  }
  return wire;
}

export function fromWire(wire: WireReading, options: { readonly catchUp: boolean; readonly withRecent: boolean }): HealthObservation {
  const kind = wire.k === 's' ? 'status' : 'telemetry';
  const reading = {
    deviceId: wire.d,
    gatewayId: wire.g,
    seq: wire.s,
    kind,
    ts: wire.ts,
    tsSource: wire.src === 'd' ? 'device' : 'gateway',
    receivedAt: wire.at,
    deviceSeq: wire.ds,
    metrics: wire.m,
    ...(options.catchUp ? { catchUp: true } : {}),
  } as const;
  if (!wire.r || !options.withRecent) return { reading };
  return { reading, recent: { ts: wire.r.ts, kind, metrics: wire.r.m ?? wire.m, ...(wire.r.f ? { flags: wire.r.f } : {}) } };
}

/** Later arrival wins: the gateway's receive time, then its seq. */
export function isNewerReading(a: WireReading, b: WireReading): boolean {
  if (a.at !== b.at) return a.at > b.at;
  return (a.s ?? -1) > (b.s ?? -1);
}

/** The newest reading of each device among these (a chunk, or what piled up while Redis was away). */
export function newestPerDevice(readings: Iterable<WireReading>, into = new Map<string, WireReading>()): Map<string, WireReading> {
  for (const r of readings) {
    const held = into.get(r.d);
    if (!held || !isNewerReading(held, r)) into.set(r.d, r);
  }
  return into;
}

/** A last-seen hash value: the receive time first, so the Lua script compares without decoding JSON. */
export function encodeLastSeen(r: WireReading): string {
  return `${r.at} ${JSON.stringify(r)}`;
}

export function decodeLastSeen(value: string): WireReading | undefined {
  const space = value.indexOf(' ');
  if (space < 0) return undefined;
  const parsed = wireReadingSchema.safeParse(parseJson(value.slice(space + 1)));
  return parsed.success ? parsed.data : undefined;
}

// ---- acks and silences ----

/** The latest ack or un-ack of an alert key, as every member applies it. */
export const ackRecordSchema = z.object({
  acknowledged: z.boolean(),
  by: z.string(),
  at: z.number(),
  comment: z.string().optional(),
  /** memberId it was made through: breaks a tie in `at` the same way everywhere */
  from: z.string(),
});
export type AckRecord = z.infer<typeof ackRecordSchema>;

export function ackRecordOf(change: AcknowledgementChange, from: string): AckRecord {
  return { acknowledged: change.acknowledged, by: change.by, at: change.at, ...(change.comment !== undefined ? { comment: change.comment } : {}), from };
}

/** Last writer wins, by the time it was made; a tie goes to the greater member id on every member alike. */
export function ackSupersedes(next: AckRecord, held: AckRecord | undefined): boolean {
  if (!held) return true;
  if (next.at !== held.at) return next.at > held.at;
  return next.from > held.from;
}

export function encodeAck(record: AckRecord): string {
  return `${record.at} ${JSON.stringify(record)}`;
}

export function decodeAck(value: string): AckRecord | undefined {
  const space = value.indexOf(' ');
  const parsed = ackRecordSchema.safeParse(parseJson(value.slice(space + 1)));
  return space >= 0 && parsed.success ? parsed.data : undefined;
}

export const silenceSchema = z.object({
  id: z.number().int().positive(),
  matchers: z.object({ rule: z.string().optional(), subject: z.string().optional() }),
  startsAt: z.number(),
  endsAt: z.number(),
  by: z.string(),
  comment: z.string().optional(),
});

/** What a silence key holds: the silence, or that it was expired early (kept till its end, so no member brings it back). */
export const silenceRecordSchema = z.union([z.object({ silence: silenceSchema }), z.object({ expired: z.object({ id: z.number().int().positive(), endsAt: z.number() }) })]);
export type SilenceRecord = z.infer<typeof silenceRecordSchema>;

export function silenceFromRecord(record: z.infer<typeof silenceSchema>): Silence {
  const { rule, subject } = record.matchers;
  return { ...record, matchers: { ...(rule !== undefined ? { rule } : {}), ...(subject !== undefined ? { subject } : {}) } } as Silence;
}

export const alertsMessageSchema = z.union([
  z.object({ v: z.literal(1), from: z.string(), type: z.literal('ack'), key: z.string(), ack: ackRecordSchema }),
  /** The alert's episode ended: ack records made up to then are over. */
  z.object({ v: z.literal(1), from: z.string(), type: z.literal('ack-ended'), key: z.string(), endsAt: z.number() }),
  z.object({ v: z.literal(1), from: z.string(), type: z.literal('silence'), record: silenceRecordSchema }),
]);
export type AlertsMessage = z.infer<typeof alertsMessageSchema>;

/**
 * Silence ids made by several members must not collide: the creator's time in ms times 1000 plus
 * a random part (safe integers until the 23rd century), never repeating within this process.
 */
export function fleetSilenceIds(clock: Clock, random: () => number = Math.random): () => number {
  let last = 0;
  return () => {
    let id = Math.max(1, clock.now() * 1000 + Math.floor(random() * 1000));
    if (id <= last) id = last + 1;
    last = id;
    return id;
  };
}

// ---- notification claims ----

/**
 * What names an alert alike on every member (its claim and its ack record): its `rule|kind|subject`
 * key. An ingestor's own alerts (its dead letters) are its own condition, not the fleet's: their
 * name carries the member id, so no other member announces them or applies their acks.
 */
export function fleetAlertKey(alert: Pick<Alert, 'key' | 'subject'>, memberId: string): string {
  return alert.subject.kind === 'ingestor' ? `${alert.key}|${memberId}` : alert.key;
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
