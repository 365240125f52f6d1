// Device timestamps: the unit is configured per format (Telegraf sends ns, Shelly Gen2 s,
// Ferry ms); magnitude detection is only the fallback for `auto`. A clock that never synced
// (1970, ts 0) is told apart from a real time so the receive time can stand in for it.
import { parseIsoTime } from '@ferry/protocol';
import type { TimestampUnit } from './config.js';

/** Earliest device time taken as a set clock: before this the device has not synced. */
export const CLOCK_SYNCED_AFTER_MS = Date.UTC(2001, 0, 1);

const DIGITS = /^-?\d+$/;
const DECIMAL = /^-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const HAS_OFFSET = /(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$/;
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/;

export type DeviceTime = { readonly ok: true; readonly ms: number } | { readonly ok: false; readonly reason: string };

const PER_MS: Record<'s' | 'ms' | 'us' | 'ns', bigint> = { s: 0n, ms: 1n, us: 1_000n, ns: 1_000_000n };

function fromInteger(value: bigint, unit: 's' | 'ms' | 'us' | 'ns'): number {
  // Exact integer arithmetic: a nanosecond timestamp is beyond 2^53 and would round as a float.
  return unit === 's' ? Number(value * 1000n) : Number(value / PER_MS[unit]);
}

function detectUnit(magnitude: number): 's' | 'ms' | 'us' | 'ns' {
  if (magnitude < 1e11) return 's';
  if (magnitude < 1e14) return 'ms';
  if (magnitude < 1e17) return 'us';
  return 'ns';
}

/**
 * ISO-8601 with or without offset; without one it is taken as UTC (the device's own zone is
 * unknown here). A date or time that does not exist (`2023-02-30`, `24:00:01`) is refused, not
 * rolled over (parseIsoTime).
 */
function fromIso(text: string): DeviceTime {
  const ms = parseIsoTime(text);
  if (ms !== undefined) return { ok: true, ms };
  if (!ISO_DATE_TIME.test(text) && !/^\d{4}-\d{2}-\d{2}$/.test(text)) return { ok: false, reason: `"${text.slice(0, 40)}" is not a time` };
  return { ok: false, reason: `"${text.slice(0, 40)}" is not a valid ISO-8601 date and time (no such day, month or time of day)` };
}

export function isoHasOffset(text: string): boolean {
  return HAS_OFFSET.test(text.trim());
}

/** Reads a device timestamp as epoch milliseconds. */
export function readDeviceTime(raw: unknown, unit: TimestampUnit = 'auto'): DeviceTime {
  if (typeof raw === 'string') {
    const text = raw.trim();
    if (DIGITS.test(text) && unit !== 'iso') {
      const big = BigInt(text);
      if (big < 0n) return { ok: false, reason: `timestamp ${text.slice(0, 30)} is negative` };
      return { ok: true, ms: fromInteger(big, unit === 'auto' ? detectUnit(Number(big)) : unit) };
    }
    if (DECIMAL.test(text) && unit !== 'iso') return readDeviceTime(Number(text), unit);
    return fromIso(text);
  }
  if (typeof raw === 'number') {
    if (!Number.isFinite(raw) || raw < 0) return { ok: false, reason: `timestamp ${String(raw)} is not a time` };
    if (unit === 'iso') return { ok: false, reason: 'timestamp is a number but an ISO-8601 string is configured' };
    const u = unit === 'auto' ? detectUnit(raw) : unit;
    if (Number.isInteger(raw) && Number.isSafeInteger(raw)) return { ok: true, ms: fromInteger(BigInt(raw), u) };
    const factor = u === 's' ? 1000 : u === 'ms' ? 1 : u === 'us' ? 1e-3 : 1e-6;
    const ms = Math.round(raw * factor);
    return Number.isFinite(ms) ? { ok: true, ms } : { ok: false, reason: `timestamp ${String(raw)} is not a time` };
  }
  return { ok: false, reason: 'timestamp must be a number or an ISO-8601 string' };
}
