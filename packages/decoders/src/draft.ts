// From leaves (name + raw value) to a checked reading: the value rules per field, the time
// rules, then the limits both ends enforce. Values that fail are set aside one by one.
import { checkDeviceId, checkReadingLimits, fieldLimitRejection, fieldRejection, tagRejection } from '@ferry/protocol';
import type { DeviceReading, Limits, MetricValue, ReadingKind, Rejection } from '@ferry/protocol';
import type { CoercionRule, TimestampUnit } from './config.js';
import type { Leaf } from './names.js';
import { CLOCK_SYNCED_AFTER_MS, readDeviceTime } from './time.js';
import { coerceValue, ruleFor } from './values.js';
import type { DecodeInput, DecodeOutcome } from './decoder.js';
import type { FieldDefaults } from './values.js';

export interface ReadingDraft {
  readonly deviceId: string;
  readonly kind: ReadingKind;
  readonly leaves: readonly Leaf[];
  /** The device's timestamp as sent, if any. */
  readonly rawTs?: unknown;
  /** Already in epoch ms (e.g. a Sparkplug uint64 read exactly); skips unit handling. */
  readonly tsMs?: number;
  readonly tags?: Readonly<Record<string, string>>;
  readonly flags?: readonly string[];
}

export interface DraftContext {
  readonly receivedAt: number;
  readonly limits: Limits;
  readonly defaults: FieldDefaults;
  readonly coerce: Readonly<Record<string, CoercionRule>>;
  readonly timestampUnit: TimestampUnit;
}

/** The usual context: the input's receive time, limits and coercion, the format's field defaults, and its timestamp unit unless configured. */
export function draftContext(input: DecodeInput, defaults: FieldDefaults, defaultUnit: TimestampUnit): DraftContext {
  return {
    receivedAt: input.receivedAt,
    limits: input.limits,
    defaults,
    coerce: input.options.coerce,
    timestampUnit: input.options.timestampUnit ?? defaultUnit,
  };
}

export type DraftResult =
  | { readonly ok: true; readonly reading: DeviceReading | undefined; readonly dropped: readonly Rejection[] }
  | { readonly ok: false; readonly rejection: Rejection; readonly dropped: readonly Rejection[] };

/**
 * Builds one reading. `reading` is undefined (with no rejection) when the message held nothing
 * but nulls; when every value was set aside the first reason becomes the message's rejection.
 */
export function buildReading(draft: ReadingDraft, ctx: DraftContext): DraftResult {
  const dropped: Rejection[] = [];
  const id = checkDeviceId(draft.deviceId, ctx.limits.maxNameLength * 2);
  if (!id.ok) return { ok: false, rejection: id.rejection, dropped };
  const deviceId = id.deviceId;
  const metrics: Record<string, MetricValue> = {};
  let count = 0;
  for (const leaf of draft.leaves) {
    const badName = fieldLimitRejection(leaf.name, undefined, ctx.limits);
    if (badName) {
      dropped.push(badName);
      continue;
    }
    const verdict = coerceValue(leaf.name, leaf.value, ruleFor(leaf.name, ctx.defaults, ctx.coerce));
    if (verdict.ok === 'skip') continue;
    if (!verdict.ok) {
      dropped.push(verdict.rejection);
      continue;
    }
    // The database's name rules and the string limit, per field: the sink would refuse the whole
    // point for one bad name.
    const badField = fieldRejection(leaf.name, verdict.value) ?? fieldLimitRejection(leaf.name, verdict.value, ctx.limits);
    if (badField) {
      dropped.push(badField);
      continue;
    }
    if (!Object.hasOwn(metrics, leaf.name)) count++;
    Object.defineProperty(metrics, leaf.name, { value: verdict.value, enumerable: true, writable: true, configurable: true });
  }
  if (count === 0) {
    const first = dropped[0];
    if (first) return { ok: false, rejection: first, dropped: dropped.slice(1) };
    return { ok: true, reading: undefined, dropped };
  }

  let ts = ctx.receivedAt;
  let tsSource: 'device' | 'gateway' = 'gateway';
  const flags = [...(draft.flags ?? [])];
  let deviceMs: number | undefined = draft.tsMs;
  if (deviceMs === undefined && draft.rawTs !== undefined && draft.rawTs !== null) {
    const time = readDeviceTime(draft.rawTs, ctx.timestampUnit);
    if (!time.ok) return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `ts: ${time.reason}` }, dropped };
    deviceMs = time.ms;
  }
  if (deviceMs !== undefined) {
    if (deviceMs < CLOCK_SYNCED_AFTER_MS) flags.push('clock_unsynced');
    else {
      ts = deviceMs;
      tsSource = 'device';
    }
  }
  let tags: Record<string, string> | undefined;
  for (const [key, value] of Object.entries(draft.tags ?? {})) {
    const bad = tagRejection(key, value);
    if (bad) dropped.push(bad);
    else Object.defineProperty((tags ??= {}), key, { value, enumerable: true, writable: true, configurable: true });
  }
  const reading: DeviceReading = {
    deviceId,
    kind: draft.kind,
    ts,
    tsSource,
    receivedAt: ctx.receivedAt,
    metrics,
    ...(tags ? { tags } : {}),
    ...(flags.length > 0 ? { flags: [...new Set(flags)] } : {}),
  };
  const violation = checkReadingLimits(reading, ctx.limits, ctx.receivedAt);
  if (violation) return { ok: false, rejection: violation, dropped };
  return { ok: true, reading, dropped };
}

/** A status reading (`state` online/offline), as availability topics and DEATH messages yield. */
export function availability(rawDeviceId: string, state: 'online' | 'offline', receivedAt: number, limits: Limits, tsMs?: number): DecodeOutcome {
  const id = checkDeviceId(rawDeviceId, limits.maxNameLength * 2);
  if (!id.ok) return { readings: [], dropped: [], rejection: id.rejection, deviceId: rawDeviceId };
  const deviceId = id.deviceId;
  const useDevice = tsMs !== undefined && tsMs >= CLOCK_SYNCED_AFTER_MS && tsMs <= receivedAt + limits.maxFutureSkewMs && tsMs >= receivedAt - limits.maxPastAgeMs;
  const reading: DeviceReading = {
    deviceId,
    kind: 'status',
    ts: useDevice ? tsMs : receivedAt,
    tsSource: useDevice ? 'device' : 'gateway',
    receivedAt,
    metrics: { state },
  };
  return { readings: [reading], dropped: [], deviceId };
}

/**
 * Gathers the drafts of one message: when some readings were taken, a failed draft is one more
 * value set aside; when none was, the first failure is the message's rejection.
 */
export function outcomeOf(results: readonly DraftResult[], deviceId: string | undefined): DecodeOutcome {
  const readings: DeviceReading[] = [];
  const dropped: Rejection[] = [];
  const failures: Rejection[] = [];
  for (const result of results) {
    dropped.push(...result.dropped);
    if (!result.ok) failures.push(result.rejection);
    else if (result.reading) readings.push(result.reading);
  }
  const id = deviceId !== undefined ? { deviceId } : {};
  const firstFailure = failures[0];
  if (readings.length === 0 && firstFailure) return { readings, dropped: [], rejection: allOf(firstFailure, [...failures.slice(1), ...dropped]), ...id };
  return { readings, dropped: [...failures, ...dropped], ...id };
}

/**
 * One rejection for a message refused whole that names every failure in it (each line of a
 * line-protocol message, each value set aside): the receiver files the rejection alone, and an
 * operator must see every line that failed, not the first.
 */
function allOf(first: Rejection, others: readonly Rejection[]): Rejection {
  if (others.length === 0) return first;
  const shown = others.slice(0, 20).map((r) => r.reason);
  const more = others.length > shown.length ? `; and ${others.length - shown.length} more` : '';
  return {
    code: first.code,
    reason: `${first.reason}; also ${shown.join('; ')}${more}`.slice(0, 2000),
    issues: [first, ...others].map((r) => ({ code: r.code, message: r.reason })),
  };
}
