// Stage 2b, skew: what happens to a reading whose device time lies outside the configured window
// (limits.maxFutureSkewMs ahead of, limits.maxPastAgeMs behind the receiver clock). Pure.
//
// `deadletter` (default) refuses it. `clamp` writes it at its receive time, a sane time whose sub-
// millisecond part still comes from the reading's own seq, so it lands as a point of its own and
// overwrites nothing; the device time is kept in field `ferry_device_ts_ms`. `flag` writes it at the
// device time, marked with field `ferry_ts_skewed=true`: that point is as distinct as any other
// (the timestamp carries the seq), so it does not replace another reading either.
import type { DeviceReading, Limits, Rejection } from '@ferry/protocol';

export type SkewPolicy = 'deadletter' | 'clamp' | 'flag';

export const DEVICE_TS_FIELD = 'ferry_device_ts_ms';
export const SKEWED_FIELD = 'ferry_ts_skewed';

export type SkewVerdict<R extends DeviceReading> =
  | { readonly ok: true; readonly reading: R; readonly skewed: false }
  | { readonly ok: true; readonly reading: R; readonly skewed: 'clamped' | 'flagged' }
  | { readonly ok: false; readonly rejection: Rejection };

/** ISO text for a time, or the raw number beyond what Date can show (toISOString would throw). */
function timeText(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? `${ms} ms` : date.toISOString();
}

/** Limits with the time window opened, so checkReadingLimits checks everything but the skew. */
export function limitsWithoutSkew(limits: Limits): Limits {
  return { ...limits, maxFutureSkewMs: Number.MAX_SAFE_INTEGER, maxPastAgeMs: Number.MAX_SAFE_INTEGER };
}

/** Why a device time is out of the window, or undefined when it is inside (or not a device time). */
export function skewOf(reading: DeviceReading, limits: Limits, now: number): Rejection | undefined {
  if (reading.tsSource !== 'device') return undefined;
  if (reading.ts > now + limits.maxFutureSkewMs) {
    return {
      code: 'FERRY_ERR_TIMESTAMP_SKEW',
      reason: `timestamp ${timeText(reading.ts)} is more than ${limits.maxFutureSkewMs} ms ahead of the receiver clock`,
    };
  }
  if (reading.ts < now - limits.maxPastAgeMs) {
    return {
      code: 'FERRY_ERR_TIMESTAMP_SKEW',
      reason: `timestamp ${timeText(reading.ts)} is more than ${limits.maxPastAgeMs} ms in the past`,
    };
  }
  return undefined;
}

export function applySkewPolicy<R extends DeviceReading>(reading: R, limits: Limits, policy: SkewPolicy, now: number): SkewVerdict<R> {
  const rejection = skewOf(reading, limits, now);
  if (!rejection) return { ok: true, reading, skewed: false };
  switch (policy) {
    case 'deadletter':
      return { ok: false, rejection };
    case 'clamp':
      return {
        ok: true,
        skewed: 'clamped',
        reading: {
          ...reading,
          ts: reading.receivedAt,
          tsSource: 'gateway',
          metrics: { ...reading.metrics, [DEVICE_TS_FIELD]: reading.ts },
          flags: [...(reading.flags ?? []), 'ts_clamped'],
        },
      };
    case 'flag':
      return {
        ok: true,
        skewed: 'flagged',
        reading: { ...reading, metrics: { ...reading.metrics, [SKEWED_FIELD]: true }, flags: [...(reading.flags ?? []), 'ts_skewed'] },
      };
  }
}
