// From leaves (name + raw value) to a checked reading: the value rules per field, the time
// rules, then the limits both ends enforce. Values that fail are set aside one by one.
import { checkReadingLimits, DEVICE_ID_PATTERN } from '@ferry/protocol';
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
  if (!DEVICE_ID_PATTERN.test(draft.deviceId) || draft.deviceId.length > ctx.limits.maxNameLength * 2) {
    return {
      ok: false,
      rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `device id "${draft.deviceId.slice(0, 60)}" is not valid` },
      dropped,
    };
  }
  const metrics: Record<string, MetricValue> = {};
  let count = 0;
  for (const leaf of draft.leaves) {
    if (leaf.name.length === 0 || leaf.name.length > ctx.limits.maxNameLength) {
      dropped.push({
        code: 'FERRY_ERR_LIMIT_EXCEEDED',
        reason: `metric name "${leaf.name.slice(0, 40)}" must be 1 to ${ctx.limits.maxNameLength} characters`,
      });
      continue;
    }
    const verdict = coerceValue(leaf.name, leaf.value, ruleFor(leaf.name, ctx.defaults, ctx.coerce));
    if (verdict.ok === 'skip') continue;
    if (!verdict.ok) {
      dropped.push(verdict.rejection);
      continue;
    }
    if (typeof verdict.value === 'string' && verdict.value.length > ctx.limits.maxStringValueLength) {
      dropped.push({
        code: 'FERRY_ERR_LIMIT_EXCEEDED',
        reason: `metric "${leaf.name}" string longer than ${ctx.limits.maxStringValueLength} characters`,
      });
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
  const tags = draft.tags && Object.keys(draft.tags).length > 0 ? { ...draft.tags } : undefined;
  const reading: DeviceReading = {
    deviceId: draft.deviceId,
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
export function availability(deviceId: string, state: 'online' | 'offline', receivedAt: number, limits: Limits, tsMs?: number): DecodeOutcome {
  if (!DEVICE_ID_PATTERN.test(deviceId) || deviceId.length > limits.maxNameLength * 2) {
    return { readings: [], dropped: [], rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `device id "${deviceId.slice(0, 60)}" is not valid` } };
  }
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
  if (readings.length === 0 && firstFailure) return { readings, dropped: [...failures.slice(1), ...dropped], rejection: firstFailure, ...id };
  return { readings, dropped: [...failures, ...dropped], ...id };
}
