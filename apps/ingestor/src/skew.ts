// Stage 2b, skew: what happens to a reading whose device time lies outside the configured window
// (limits.maxFutureSkewMs ahead of, limits.maxPastAgeMs behind the receiver clock). Pure.
//
// `deadletter` (default) refuses it. `clamp` writes it at its receive time, a sane time whose sub-
// millisecond part still comes from the reading's own seq, so it lands as a point of its own and
// overwrites nothing; the device time is kept in field `ferry_device_ts_ms`. `flag` writes it at the
// device time, marked with field `ferry_ts_skewed=true`: that point is as distinct as any other
// (the timestamp carries the seq), so it does not replace another reading either.
import { checkTimestampSkew } from '@ferry/protocol';
import type { DeviceReading, Limits, Rejection } from '@ferry/protocol';

export type SkewPolicy = 'deadletter' | 'clamp' | 'flag';

export const DEVICE_TS_FIELD = 'ferry_device_ts_ms';
export const SKEWED_FIELD = 'ferry_ts_skewed';

export type SkewVerdict<R extends DeviceReading> =
  | { readonly ok: true; readonly reading: R; readonly skewed: false }
  | { readonly ok: true; readonly reading: R; readonly skewed: 'clamped' | 'flagged' }
  | { readonly ok: false; readonly rejection: Rejection };

/** Limits with the time window opened, so checkReadingLimits checks everything but the skew. */
export function limitsWithoutSkew(limits: Limits): Limits {
  return { ...limits, maxFutureSkewMs: Number.MAX_SAFE_INTEGER, maxPastAgeMs: Number.MAX_SAFE_INTEGER };
}

/** Why a device time is out of the window, or undefined when it is inside (or not a device time). */
export function skewOf(reading: DeviceReading, limits: Limits, now: number): Rejection | undefined {
  return checkTimestampSkew(reading, limits, now);
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
