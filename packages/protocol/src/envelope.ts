// The gateway-to-cloud wire format: versioned batch envelopes, acks and gateway status.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { z } from 'zod';
import { ID_PATTERN } from './topics.js';
import type { Reading, Rejection } from './reading.js';
import type { ErrorCode } from './errors.js';
import { errorCodes } from './errors.js';
import { isPlainObject, isSafeInteger } from './reading-fast.js';

/** Version of the gateway status message. */
export const ENVELOPE_VERSION = 1;

/**
 * Version of batch envelopes and acks. v2 adds `nonce`: batch ids are sequential, so an ack must
 * also echo the batch's random nonce before a gateway deletes anything (docs/protocol.md, "Ack").
 */
export const BATCH_VERSION = 2;
/** Batches and acks without a nonce, from gateways and ingestors before v2. */
export const LEGACY_BATCH_VERSION = 1;

export const gatewayIdSchema = z.string().regex(ID_PATTERN, 'a gateway id is 1-128 characters without / # + or control characters');

const NONCE_PATTERN = /^[A-Za-z0-9_-]{22,128}$/;

/** At least 128 random bits, base64url. */
export const batchNonceSchema = z.string().regex(NONCE_PATTERN, 'a batch nonce is 22-128 base64url characters');

/** A fresh nonce for one batch id: 128 random bits. */
export function newBatchNonce(): string {
  return randomBytes(16).toString('base64url');
}

/** Compares nonces in constant time (for equal lengths), so a forger learns nothing from timing. */
export function sameBatchNonce(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const batchVersionSchema = z.union([z.literal(BATCH_VERSION), z.literal(LEGACY_BATCH_VERSION)]);

/** v2 carries a nonce, v1 has none. */
function checkNonceForVersion(value: { v: number; nonce?: string | undefined }, ctx: z.RefinementCtx): void {
  if (value.v === BATCH_VERSION && value.nonce === undefined) {
    ctx.addIssue({ code: 'custom', path: ['nonce'], message: `a v${BATCH_VERSION} batch or ack carries the batch nonce` });
  }
  if (value.v === LEGACY_BATCH_VERSION && value.nonce !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['nonce'], message: `a v${LEGACY_BATCH_VERSION} batch or ack has no nonce` });
  }
}

const envelopeHeaderSchema = z.object({
  v: batchVersionSchema,
  gatewayId: gatewayIdSchema,
  /** Monotonic per gateway; an ack names it. */
  batchId: z.number().int().nonnegative(),
  sentAt: z.number().int(),
  /** v2: random per batch id; the ack must echo it. Absent in v1. */
  nonce: batchNonceSchema.optional(),
});

export const batchEnvelopeSchema = z
  .discriminatedUnion('compression', [
    envelopeHeaderSchema.extend({ compression: z.literal('none'), readings: z.array(z.unknown()) }).strict(),
    /** `data` is base64 of the gzipped JSON array of readings. */
    envelopeHeaderSchema.extend({ compression: z.literal('gzip'), data: z.string() }).strict(),
  ])
  .superRefine(checkNonceForVersion);

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
 * The usual envelope (uncompressed, of the schema's keys and types only) read by hand, in front of
 * batchEnvelopeSchema: the schema copies the readings array item by item, this takes it as it is.
 * It only says "certainly valid" or "ask the schema", so every refusal and its message still come
 * from zod; a property test (test/envelope-fast.test.ts) holds that whatever this accepts, the
 * schema accepts as an equal value. `raw` is JSON.parse output (no holes, no undefined).
 */
export function plainBatchFastPath(raw: unknown): Extract<DecodedBatch, { ok: true }> | undefined {
  if (!isPlainObject(raw)) return undefined;
  const env = raw;
  let keys = 0;
  for (const key in env) {
    if (!Object.hasOwn(env, key)) return undefined;
    if (key !== 'v' && key !== 'gatewayId' && key !== 'batchId' && key !== 'sentAt' && key !== 'nonce' && key !== 'compression' && key !== 'readings') return undefined;
    keys++;
  }
  const { v, gatewayId, batchId, sentAt, nonce, compression, readings } = env;
  if (compression !== 'none' || !Array.isArray(readings)) return undefined;
  if (typeof gatewayId !== 'string' || !ID_PATTERN.test(gatewayId)) return undefined;
  if (!isSafeInteger(batchId) || batchId < 0 || !isSafeInteger(sentAt)) return undefined;
  if (v === BATCH_VERSION) {
    if (typeof nonce !== 'string' || !NONCE_PATTERN.test(nonce) || keys !== 7) return undefined;
    return { ok: true, header: { v, gatewayId, batchId, sentAt, nonce }, readings: readings as unknown[] };
  }
  if (v === LEGACY_BATCH_VERSION && keys === 6 && nonce === undefined) {
    return { ok: true, header: { v, gatewayId, batchId, sentAt }, readings: readings as unknown[] };
  }
  return undefined;
}

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
  const fast = plainBatchFastPath(raw);
  if (fast) return fast;
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
  const header: BatchHeader = {
    v: env.v,
    gatewayId: env.gatewayId,
    batchId: env.batchId,
    sentAt: env.sentAt,
    ...(env.nonce !== undefined ? { nonce: env.nonce } : {}),
  };
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

export const errorCodeSchema = z.string().refine((c): c is ErrorCode => (errorCodes as string[]).includes(c), 'unknown error code');

export const ackSchema = z
  .object({
    /** The version of the batch it answers: v2 echoes the batch's nonce, v1 has none. */
    v: batchVersionSchema,
    gatewayId: gatewayIdSchema,
    batchId: z.number().int().nonnegative(),
    /** The nonce of the batch, echoed: a gateway deletes nothing for an ack without the right one. */
    nonce: batchNonceSchema.optional(),
    /** Readings written now (confirmed by the database). */
    accepted: z.number().int().nonnegative(),
    /** Readings already written before (a resend); they are safe to delete too. */
    duplicates: z.number().int().nonnegative(),
    /** Readings refused for good; the ingestor has kept each in its dead-letter store. */
    rejected: z.array(z.object({ seq: z.number().int().nonnegative().nullable(), code: errorCodeSchema, reason: z.string() })),
    ackedAt: z.number().int(),
  })
  .strict()
  .superRefine(checkNonceForVersion);

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
    /**
     * The uplink session this status belongs to: a number the gateway never gives out twice and
     * takes afresh at each connect attempt, so a larger epoch is a newer session. Its Last Will
     * carries the same epoch as the session's statuses. Absent from gateways before it existed.
     */
    epoch: z.number().int().nonnegative().optional(),
    /** How often the gateway publishes its status: a gateway quiet for a few of these is offline. */
    statusIntervalMs: z.number().int().positive().optional(),
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
