// The gateway-to-cloud wire format: versioned batch envelopes, acks and gateway status.
import { gunzipSync, gzipSync } from 'node:zlib';
import { z } from 'zod';
import { ID_PATTERN } from './topics.js';
import type { Reading, Rejection } from './reading.js';
import type { ErrorCode } from './errors.js';
import { errorCodes } from './errors.js';

export const ENVELOPE_VERSION = 1;

export const gatewayIdSchema = z.string().regex(ID_PATTERN, 'a gateway id is 1-128 characters without / # + or control characters');

const envelopeHeaderSchema = z.object({
  v: z.literal(ENVELOPE_VERSION),
  gatewayId: gatewayIdSchema,
  /** Monotonic per gateway process; an ack names it. */
  batchId: z.number().int().nonnegative(),
  sentAt: z.number().int(),
});

export const batchEnvelopeSchema = z.discriminatedUnion('compression', [
  envelopeHeaderSchema.extend({ compression: z.literal('none'), readings: z.array(z.unknown()) }).strict(),
  /** `data` is base64 of the gzipped JSON array of readings. */
  envelopeHeaderSchema.extend({ compression: z.literal('gzip'), data: z.string() }).strict(),
]);

export type BatchHeader = z.infer<typeof envelopeHeaderSchema>;
export type Compression = 'none' | 'gzip';

export function encodeBatch(header: BatchHeader, readings: readonly Reading[], compression: Compression = 'none'): Buffer {
  if (compression === 'gzip') {
    const data = gzipSync(JSON.stringify(readings)).toString('base64');
    return Buffer.from(JSON.stringify({ ...header, compression, data }));
  }
  return Buffer.from(JSON.stringify({ ...header, compression, readings }));
}

export type DecodedBatch =
  | { readonly ok: true; readonly header: BatchHeader; readonly readings: readonly unknown[] }
  | { readonly ok: false; readonly rejection: Rejection; readonly header?: Partial<BatchHeader> };

/**
 * Decodes an envelope down to its header and the raw readings; each reading is validated on its
 * own afterwards so that one bad reading never blocks the good ones of its batch.
 */
export function decodeBatch(payload: Uint8Array, maxBytes: number): DecodedBatch {
  if (payload.byteLength > maxBytes) {
    return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_TOO_LARGE', reason: `batch is ${payload.byteLength} bytes, at most ${maxBytes}` } };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    return { ok: false, rejection: { code: 'FERRY_ERR_ENVELOPE_INVALID', reason: 'batch envelope is not valid JSON' } };
  }
  const parsed = batchEnvelopeSchema.safeParse(raw);
  if (!parsed.success) {
    const partial = envelopeHeaderSchema.partial().safeParse(raw);
    const first = parsed.error.issues[0];
    return {
      ok: false,
      rejection: {
        code: 'FERRY_ERR_ENVELOPE_INVALID',
        reason: `batch envelope${first && first.path.length ? ` at ${first.path.join('.')}` : ''}: ${first?.message ?? 'invalid'}`,
        issues: parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
      },
      ...(partial.success ? { header: partial.data as Partial<BatchHeader> } : {}),
    };
  }
  const env = parsed.data;
  const header: BatchHeader = { v: env.v, gatewayId: env.gatewayId, batchId: env.batchId, sentAt: env.sentAt };
  if (env.compression === 'none') return { ok: true, header, readings: env.readings };
  try {
    const readings: unknown = JSON.parse(gunzipSync(Buffer.from(env.data, 'base64'), { maxOutputLength: maxBytes * 64 }).toString('utf8'));
    if (!Array.isArray(readings)) throw new Error('not an array');
    return { ok: true, header, readings };
  } catch (err) {
    return {
      ok: false,
      header,
      rejection: { code: 'FERRY_ERR_ENVELOPE_INVALID', reason: `compressed readings unreadable: ${(err as Error).message}` },
    };
  }
}

const errorCodeSchema = z.string().refine((c): c is ErrorCode => (errorCodes as string[]).includes(c), 'unknown error code');

export const ackSchema = z
  .object({
    v: z.literal(ENVELOPE_VERSION),
    gatewayId: gatewayIdSchema,
    batchId: z.number().int().nonnegative(),
    /** Readings written now (confirmed by the database). */
    accepted: z.number().int().nonnegative(),
    /** Readings already written before (a resend); they are safe to delete too. */
    duplicates: z.number().int().nonnegative(),
    /** Readings refused for good; the ingestor has kept each in its dead-letter store. */
    rejected: z.array(z.object({ seq: z.number().int().nonnegative().nullable(), code: errorCodeSchema, reason: z.string() })),
    ackedAt: z.number().int(),
  })
  .strict();

export type Ack = z.infer<typeof ackSchema>;

export function encodeAck(ack: Ack): Buffer {
  return Buffer.from(JSON.stringify(ack));
}

export function decodeAck(payload: Uint8Array): Ack | undefined {
  try {
    const parsed = ackSchema.safeParse(JSON.parse(Buffer.from(payload).toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** What a gateway dropped, named: a device's readings between two seqs / times, and why. */
export const gapRecordSchema = z.object({
  id: z.number().int().nonnegative(),
  /** Null when the loss cannot be tied to a device (an unreadable corrupt outbox). */
  deviceId: z.string().nullable(),
  /** outbox_full, outbox_bytes, outbox_age, corrupt, ... */
  reason: z.string(),
  /** Readings lost; null when unknown. */
  count: z.number().int().nonnegative().nullable(),
  firstSeq: z.number().int().nullable(),
  lastSeq: z.number().int().nullable(),
  firstTs: z.number().int().nullable(),
  lastTs: z.number().int().nullable(),
  firstDeviceSeq: z.number().int().nullable(),
  lastDeviceSeq: z.number().int().nullable(),
  updatedAt: z.number().int(),
});

export type GapRecord = z.infer<typeof gapRecordSchema>;

/** The filesystem holding a gateway's outbox: how full it is and what the outbox takes of it. */
export const gatewayDiskSchema = z.object({
  totalBytes: z.number().int().nonnegative(),
  /** What the gateway may still write (statfs f_bavail). */
  freeBytes: z.number().int().nonnegative(),
  /** The outbox file and its WAL, bytes. */
  outboxBytes: z.number().int().nonnegative(),
  /** The byte bound in force (`maxBytes`, or what `auto` derived from the free space). */
  maxBytes: z.number().nonnegative(),
  /** The reserve that keeps the drain working on a full disk is in place. */
  reserveHeld: z.boolean(),
  /** Commits are failing because the disk is full (devices are not acknowledged). */
  full: z.boolean(),
});

export type GatewayDisk = z.infer<typeof gatewayDiskSchema>;

export const gatewayStatusSchema = z
  .object({
    v: z.literal(ENVELOPE_VERSION),
    gatewayId: gatewayIdSchema,
    state: z.enum(['online', 'offline']),
    ts: z.number().int(),
    version: z.string().optional(),
    outbox: z
      .object({
        depth: z.number().int().nonnegative(),
        bytes: z.number().int().nonnegative(),
        oldestTs: z.number().int().nullable(),
      })
      .optional(),
    /** Readings dropped at the gateway, by reason code, since the outbox was created. */
    dropped: z.record(z.string(), z.number().int().nonnegative()).optional(),
    deadLetters: z.number().int().nonnegative().optional(),
    uplink: z.string().optional(),
    /**
     * The most recent gap records: which readings the gateway dropped, named. A record keeps its
     * id while it grows (consecutive drops of one device and reason); keep the latest per id.
     */
    gaps: z.array(gapRecordSchema).optional(),
    /** Backlog drain progress: readings held, acked per second, seconds left (null: not draining). */
    drain: z
      .object({
        backlog: z.number().int().nonnegative(),
        ratePerSec: z.number().nonnegative(),
        etaSec: z.number().int().nonnegative().nullable(),
      })
      .optional(),
    /** Bytes written to the gateway's storage per reading committed (SD-card wear); null before any. */
    diskWriteBytesPerReading: z.number().nonnegative().nullable().optional(),
    disk: gatewayDiskSchema.optional(),
  })
  .passthrough();

export type GatewayStatus = z.infer<typeof gatewayStatusSchema>;

export function decodeGatewayStatus(payload: Uint8Array): GatewayStatus | undefined {
  try {
    const parsed = gatewayStatusSchema.safeParse(JSON.parse(Buffer.from(payload).toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
