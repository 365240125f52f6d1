// Stage 2, validate: each raw reading of a batch is checked on its own (schema, then limits), so
// one bad reading never holds back the good ones of its batch.
import { checkReadingLimits, readingFastPath, readingSchema } from '@ferry/protocol';
import type { Limits, Reading, Rejection } from '@ferry/protocol';

export interface ValidationContext {
  /** The gateway whose topic the batch came on. */
  readonly topicGatewayId: string;
  /** The gateway the envelope names; a reading is only accepted when both agree. */
  readonly envelopeGatewayId: string;
  readonly limits: Limits;
  /** Receiver time for the timestamp-skew check, epoch ms. */
  readonly now: number;
}

export type ValidatedReading =
  | { readonly ok: true; readonly reading: Reading }
  | {
      readonly ok: false;
      readonly rejection: Rejection;
      /** The gateway sequence number when the raw reading carries a usable one. */
      readonly seq: number | null;
      readonly deviceId: string | undefined;
    };

export function seqOf(raw: unknown): number | null {
  const seq = field(raw, 'seq');
  return typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0 ? seq : null;
}

export function deviceIdOf(raw: unknown): string | undefined {
  const deviceId = field(raw, 'deviceId');
  return typeof deviceId === 'string' ? deviceId : undefined;
}

function field(raw: unknown, key: string): unknown {
  return raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>)[key] : undefined;
}

export function validateReading(raw: unknown, ctx: ValidationContext): ValidatedReading {
  const refuse = (rejection: Rejection): ValidatedReading => ({ ok: false, rejection, seq: seqOf(raw), deviceId: deviceIdOf(raw) });
  if (ctx.topicGatewayId !== ctx.envelopeGatewayId) {
    return refuse({
      code: 'FERRY_ERR_ENVELOPE_INVALID',
      reason: `reading came on gateway "${ctx.topicGatewayId}"'s topic but the envelope names gateway "${ctx.envelopeGatewayId}"`,
    });
  }
  // The usual reading is checked by hand; anything else, and every refusal, is the schema's.
  const fast = readingFastPath(raw);
  const parsed = fast ? { success: true as const, data: fast } : readingSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const where = first && first.path.length > 0 ? ` at ${first.path.map(String).join('.')}` : '';
    return refuse({
      code: 'FERRY_ERR_PAYLOAD_SCHEMA',
      reason: `reading${where}: ${first?.message ?? 'invalid'}`,
      issues: parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message, code: i.code })),
    });
  }
  const violation = checkReadingLimits(parsed.data, ctx.limits, ctx.now);
  if (violation) return refuse(violation);
  return { ok: true, reading: parsed.data };
}
