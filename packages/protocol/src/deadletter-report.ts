// Gateway dead letters, reported to the centre: the messages on ferry/v1/gw/<id>/deadletters
// (gateway -> ingestor: reports, replay results) and .../deadletters-ctl (ingestor -> gateway:
// report acks, replay requests). Versioned on their own, like the status message; docs/protocol.md.
import { z } from 'zod';
import { batchNonceSchema, errorCodeSchema, gatewayIdSchema } from './envelope.js';

export const DEAD_LETTER_REPORT_VERSION = 1;
/** A report carries at most this many letters; the rest follow in the next reports. */
export const MAX_LETTERS_PER_REPORT = 50;
/** The bytes of a letter's payload a report carries (a prefix; `truncated` says when it is one). */
export const REPORTED_PAYLOAD_BYTES = 4096;
/** Device/code groups in a report's counts, the largest first. */
export const MAX_COUNT_GROUPS_PER_REPORT = 200;
export const MAX_REPORTED_REASON_CHARS = 4096;

const version = z.literal(DEAD_LETTER_REPORT_VERSION);
/** Random per report or request, base64url (the same shape as a batch nonce). */
export const reportIdSchema = batchNonceSchema;

export const reportedLetterSchema = z
  .object({
    /** The letter's id in the gateway's own store: with the gateway id, its identity at the centre. */
    id: z.number().int().positive(),
    at: z.number().int(),
    code: errorCodeSchema,
    reason: z.string().max(MAX_REPORTED_REASON_CHARS),
    issues: z.array(z.unknown()).max(100).optional(),
    deviceId: z.string().min(1).max(256).optional(),
    topic: z.string().max(65_535).optional(),
    replayedAt: z.number().int().nullable(),
    payloadEncoding: z.enum(['utf8', 'base64']),
    /** At most REPORTED_PAYLOAD_BYTES of the payload the gateway holds, from its start. */
    payload: z.string().max(Math.ceil(REPORTED_PAYLOAD_BYTES / 3) * 4),
    /** Size of the payload as the device sent it (the gateway itself keeps at most 1 MiB of it). */
    payloadBytes: z.number().int().nonnegative(),
    /** The payload carried is only the first bytes of it. */
    truncated: z.boolean(),
  })
  .strict();

export type ReportedLetter = z.infer<typeof reportedLetterSchema>;

export const deadLetterCountsReportSchema = z
  .object({
    /** Letters held by the gateway now. */
    held: z.number().int().nonnegative(),
    /** Letters its bound discarded (some may never have been reported). */
    discarded: z.number().int().nonnegative(),
    /** Letters ever added, by code. */
    byCode: z.record(z.string(), z.number().int().nonnegative()),
    /** Letters held and not replayed, by device and code (null: no device known). */
    byDevice: z
      .array(z.object({ deviceId: z.string().nullable(), code: errorCodeSchema, held: z.number().int().nonnegative() }).strict())
      .max(MAX_COUNT_GROUPS_PER_REPORT),
  })
  .strict();

export type DeadLetterCountsReport = z.infer<typeof deadLetterCountsReportSchema>;

export const deadLetterReportSchema = z
  .object({
    v: version,
    type: z.literal('report'),
    gatewayId: gatewayIdSchema,
    reportId: reportIdSchema,
    sentAt: z.number().int(),
    /** The letters are those with after < id <= through; an ack moves the gateway's watermark to `through`. */
    after: z.number().int().nonnegative(),
    through: z.number().int().nonnegative(),
    letters: z.array(reportedLetterSchema).max(MAX_LETTERS_PER_REPORT),
    counts: deadLetterCountsReportSchema,
  })
  .strict()
  .refine((r) => r.through >= r.after && r.letters.every((l) => l.id > r.after && l.id <= r.through), {
    message: 'every letter id lies in (after, through]',
    path: ['letters'],
  });

export type DeadLetterReport = z.infer<typeof deadLetterReportSchema>;

export const GATEWAY_REPLAY_OUTCOMES = ['committed', 'rejected', 'not-found', 'already-replayed', 'unreplayable', 'failed'] as const;
export type GatewayReplayOutcome = (typeof GATEWAY_REPLAY_OUTCOMES)[number];

export const replayResultSchema = z
  .object({
    v: version,
    type: z.literal('replay-result'),
    gatewayId: gatewayIdSchema,
    requestId: reportIdSchema,
    letterId: z.number().int().positive(),
    at: z.number().int(),
    /**
     * committed: its readings are durable in the outbox and the letter is marked replayed;
     * rejected: refused again, kept with the new code and reason; failed: the outbox did not
     * take them (ask again later); unreplayable: a letter that must not be replayed.
     */
    outcome: z.enum(GATEWAY_REPLAY_OUTCOMES),
    readings: z.number().int().nonnegative().optional(),
    code: errorCodeSchema.optional(),
    reason: z.string().max(MAX_REPORTED_REASON_CHARS).optional(),
    issues: z.array(z.unknown()).max(100).optional(),
  })
  .strict();

export type ReplayResult = z.infer<typeof replayResultSchema>;

/** Gateway -> ingestor on uplinkTopics.deadLetters. */
export const gatewayDeadLetterMessageSchema = z.union([deadLetterReportSchema, replayResultSchema]);
export type GatewayDeadLetterMessage = DeadLetterReport | ReplayResult;

export const reportAckSchema = z
  .object({
    v: version,
    type: z.literal('report-ack'),
    gatewayId: gatewayIdSchema,
    reportId: reportIdSchema,
    through: z.number().int().nonnegative(),
    /** Letters new to the centre, and letters it already held (a resent report). */
    added: z.number().int().nonnegative(),
    duplicates: z.number().int().nonnegative(),
    ackedAt: z.number().int(),
  })
  .strict();

export type ReportAck = z.infer<typeof reportAckSchema>;

export const replayRequestSchema = z
  .object({
    v: version,
    type: z.literal('replay'),
    gatewayId: gatewayIdSchema,
    requestId: reportIdSchema,
    letterId: z.number().int().positive(),
    requestedAt: z.number().int(),
  })
  .strict();

export type ReplayRequest = z.infer<typeof replayRequestSchema>;

/** Ingestor -> gateway on uplinkTopics.deadLetterControl. */
export const deadLetterControlSchema = z.discriminatedUnion('type', [reportAckSchema, replayRequestSchema]);
export type DeadLetterControl = ReportAck | ReplayRequest;

function decodeJson<T>(schema: z.ZodType<T>, payload: Uint8Array): { ok: true; value: T } | { ok: false; reason: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    return { ok: false, reason: 'not valid JSON' };
  }
  const parsed = schema.safeParse(raw);
  if (parsed.success) return { ok: true, value: parsed.data };
  const first = parsed.error.issues[0];
  return { ok: false, reason: `${first && first.path.length ? `at ${first.path.join('.')}: ` : ''}${first?.message ?? 'invalid'}` };
}

export function decodeGatewayDeadLetterMessage(payload: Uint8Array): { ok: true; value: GatewayDeadLetterMessage } | { ok: false; reason: string } {
  return decodeJson<GatewayDeadLetterMessage>(gatewayDeadLetterMessageSchema, payload);
}

export function decodeDeadLetterControl(payload: Uint8Array): { ok: true; value: DeadLetterControl } | { ok: false; reason: string } {
  return decodeJson<DeadLetterControl>(deadLetterControlSchema, payload);
}

export function encodeDeadLetterMessage(message: GatewayDeadLetterMessage | DeadLetterControl): Buffer {
  return Buffer.from(JSON.stringify(message));
}

/** A payload prefix as a report carries it: text when the prefix is UTF-8, else base64. */
export function reportedPayload(payload: Uint8Array, maxBytes = REPORTED_PAYLOAD_BYTES): Pick<ReportedLetter, 'payloadEncoding' | 'payload' | 'payloadBytes' | 'truncated'> {
  const whole = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const prefix = whole.byteLength > maxBytes ? whole.subarray(0, maxBytes) : whole;
  const text = prefix.toString('utf8');
  const isText = Buffer.from(text, 'utf8').equals(prefix);
  return {
    payloadEncoding: isText ? 'utf8' : 'base64',
    payload: isText ? text : prefix.toString('base64'),
    payloadBytes: whole.byteLength,
    truncated: prefix.byteLength < whole.byteLength,
  };
}

/** The bytes a reported letter carries; undefined when they exceed REPORTED_PAYLOAD_BYTES. */
export function reportedPayloadBytes(letter: Pick<ReportedLetter, 'payloadEncoding' | 'payload'>): Buffer | undefined {
  const bytes = letter.payloadEncoding === 'utf8' ? Buffer.from(letter.payload, 'utf8') : Buffer.from(letter.payload, 'base64');
  return bytes.byteLength <= REPORTED_PAYLOAD_BYTES ? bytes : undefined;
}
