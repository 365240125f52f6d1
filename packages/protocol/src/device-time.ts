// Device timestamps: what a device may send as `ts` and how it becomes a reading's time. Shared
// by the schema path (device.ts) and the fast path (device-fast.ts), so both date alike.

/** Earliest device time taken as a set clock: before this the device has not synced (1970, ts 0). */
const CLOCK_SYNCED_AFTER_MS = Date.UTC(2001, 0, 1);

/**
 * How a reading is dated: by the device's time (epoch ms), or by its receive time, either because
 * the device sent no `ts` (`'received'`) or because it sent one from before its clock was set
 * (`'unsynced'`: the reading is flagged clock_unsynced).
 */
export type DeviceDating = number | 'received' | 'unsynced';

/**
 * Dates a reading by the `ts` its device sent, if any; undefined when that is not a time. No
 * object: it runs for every reading.
 */
export function dateDeviceTs(rawTs: number | string | undefined): DeviceDating | undefined {
  if (rawTs === undefined) return 'received';
  const parsed = parseDeviceTime(rawTs);
  if (parsed === undefined) return undefined;
  return parsed < CLOCK_SYNCED_AFTER_MS ? 'unsynced' : parsed;
}

const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?([zZ]|([+-])(\d{2})(?::?(\d{2}))?)?)?$/;

function daysIn(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/**
 * Reads an ISO-8601 date or date-time as epoch milliseconds; without an offset it is taken as
 * UTC (the device's zone is unknown). Undefined for anything else, and for a date or time that
 * does not exist (`2023-02-30`, `2023-13-01`, `24:00:01`, Feb 29 of a common year), which
 * Date.parse would roll over into the next month or day.
 */
export function parseIsoTime(text: string): number | undefined {
  const m = ISO_TIME.exec(text);
  if (!m) return undefined;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const [hour, minute, second] = [Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)];
  if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  const ms = Number((m[7] ?? '0').slice(0, 3).padEnd(3, '0'));
  let offsetMin = 0;
  if (m[9] !== undefined) {
    const [oh, om] = [Number(m[10]), Number(m[11] ?? 0)];
    if (oh > 23 || om > 59) return undefined;
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, ms);
  return date.getTime() - offsetMin * 60_000;
}

/**
 * Reads a device timestamp: epoch seconds, milliseconds, microseconds or nanoseconds (told apart
 * by magnitude) or an ISO-8601 string (parseIsoTime). Returns undefined when it is not a time.
 */
export function parseDeviceTime(ts: number | string): number | undefined {
  if (typeof ts === 'string') {
    const trimmed = ts.trim();
    if (/^-?\d+(\.\d+)?$/.test(trimmed)) return parseDeviceTime(Number(trimmed));
    return parseIsoTime(trimmed);
  }
  if (!Number.isFinite(ts) || ts < 0) return undefined;
  if (ts < 1e11) return Math.round(ts * 1000);
  if (ts < 1e14) return Math.round(ts);
  if (ts < 1e17) return Math.round(ts / 1000);
  return Math.round(ts / 1e6);
}
