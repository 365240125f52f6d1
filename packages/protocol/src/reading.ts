// A reading as it travels from gateway to ingestor, and the checks both ends apply to it.
import { z } from 'zod';
import type { ErrorCode } from './errors.js';
import type { Limits } from './limits.js';
import { deviceIdProblem } from './names.js';

/**
 * Device ids may contain `/` (Zigbee2MQTT friendly names do) but no MQTT wildcards or control
 * characters. The full rules (invisible and direction characters, `.`/`..` levels, the database's
 * tag rules, NFC) are deviceIdProblem and checkDeviceId in names.ts.
 */
export const DEVICE_ID_PATTERN = /^[^#+\u0000-\u001f]{1,256}$/;

export const metricValueSchema = z.union([z.number(), z.boolean(), z.string()]);
export type MetricValue = z.infer<typeof metricValueSchema>;

export const readingKindSchema = z.enum(['telemetry', 'status']);
export type ReadingKind = z.infer<typeof readingKindSchema>;

/** Where a reading's `ts` came from: the device's own clock, or the gateway's receive time. */
export const tsSourceSchema = z.enum(['device', 'gateway']);

export const readingSchema = z
  .object({
    /** The gateway's monotonic sequence number: the reading's identity for dedupe and acks. */
    seq: z.number().int().nonnegative(),
    deviceId: z
      .string()
      .regex(DEVICE_ID_PATTERN)
      .superRefine((id, ctx) => {
        const problem = deviceIdProblem(id);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      }),
    kind: readingKindSchema,
    /** Reading time, epoch milliseconds. */
    ts: z.number().int(),
    tsSource: tsSourceSchema,
    /** When the gateway received it, epoch milliseconds. */
    receivedAt: z.number().int(),
    /** The device's own sequence number, when it sends one. */
    deviceSeq: z.number().int().nonnegative().optional(),
    metrics: z.record(z.string(), metricValueSchema),
    tags: z.record(z.string(), z.string()).optional(),
    /** Notes on the reading, e.g. `clock_unsynced` when the device clock was not set. */
    flags: z.array(z.string()).optional(),
  })
  .strict();

export type Reading = z.infer<typeof readingSchema>;
/** A reading before the gateway has given it a sequence number. */
export type DeviceReading = Omit<Reading, 'seq'>;

export interface Rejection {
  readonly code: ErrorCode;
  readonly reason: string;
  /** Structured detail, e.g. zod issues or the offending metric name. */
  readonly issues?: readonly unknown[];
}

/**
 * The per-field limits (name length, string length) as a rejection for that field alone, or
 * undefined: every format sets such a field aside and keeps the rest of the reading.
 */
export function fieldLimitRejection(name: string, value: unknown, limits: Limits): Rejection | undefined {
  if (name.length === 0 || name.length > limits.maxNameLength) {
    return { code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: `metric name "${name.slice(0, 40)}" must be 1 to ${limits.maxNameLength} characters` };
  }
  if (typeof value === 'string' && value.length > limits.maxStringValueLength) {
    return { code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: `metric "${name.slice(0, 40)}" string longer than ${limits.maxStringValueLength} characters` };
  }
  return undefined;
}

/**
 * Applies the configured limits to a reading that already has the right shape.
 * Returns the first violation, or undefined when the reading is acceptable.
 */
export function checkReadingLimits(reading: DeviceReading, limits: Limits, now: number): Rejection | undefined {
  const names = Object.keys(reading.metrics);
  if (names.length === 0) return { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'reading has no metrics' };
  if (names.length > limits.maxMetricsPerReading) {
    return {
      code: 'FERRY_ERR_LIMIT_EXCEEDED',
      reason: `${names.length} metrics, at most ${limits.maxMetricsPerReading} allowed`,
    };
  }
  if (reading.deviceId.length > limits.maxNameLength * 2) {
    return { code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: `device id longer than ${limits.maxNameLength * 2} characters` };
  }
  for (const name of names) {
    if (name.length === 0 || name.length > limits.maxNameLength) {
      return {
        code: 'FERRY_ERR_LIMIT_EXCEEDED',
        reason: `metric name "${name.slice(0, 40)}" must be 1 to ${limits.maxNameLength} characters`,
      };
    }
    const value = reading.metrics[name];
    if (typeof value === 'number' && !Number.isFinite(value)) {
      return { code: 'FERRY_ERR_VALUE_NOT_FINITE', reason: `metric "${name}" is ${String(value)}` };
    }
    if (typeof value === 'string' && value.length > limits.maxStringValueLength) {
      return {
        code: 'FERRY_ERR_LIMIT_EXCEEDED',
        reason: `metric "${name}" string longer than ${limits.maxStringValueLength} characters`,
      };
    }
  }
  const tags = reading.tags ? Object.entries(reading.tags) : [];
  if (tags.length > limits.maxTagsPerReading) {
    return { code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: `${tags.length} tags, at most ${limits.maxTagsPerReading} allowed` };
  }
  for (const [k, v] of tags) {
    if (k.length === 0 || k.length > limits.maxNameLength) {
      return { code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: `tag name "${k.slice(0, 40)}" must be 1 to ${limits.maxNameLength} characters` };
    }
    if (v.length > limits.maxStringValueLength) {
      return { code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: `tag "${k}" value longer than ${limits.maxStringValueLength} characters` };
    }
  }
  return checkTimestampSkew(reading, limits, now);
}

/** Why a device time lies outside the skew window, or undefined when it is inside (or not a device time). */
export function checkTimestampSkew(reading: Pick<DeviceReading, 'ts' | 'tsSource'>, limits: Limits, now: number): Rejection | undefined {
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

/** ISO text for a time, or the raw number when it is beyond what Date can show (toISOString would throw). */
function timeText(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? `${ms} ms` : date.toISOString();
}
