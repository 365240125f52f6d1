// Stage 1, decode: an MQTT batch message becomes its header and raw readings, or an envelope
// rejection that still names the batch when it can, so the gateway can be told to stop resending.
import { z } from 'zod';
import { batchNonceSchema, decodeBatch, gatewayIdSchema } from '@ferry/protocol';
import type { BatchHeader, Rejection } from '@ferry/protocol';

export type DecodedMessage =
  | {
      readonly ok: true;
      /** The gateway named by the topic: the publisher, and where the ack goes. */
      readonly gatewayId: string;
      readonly header: BatchHeader;
      readonly readings: readonly unknown[];
    }
  | {
      readonly ok: false;
      readonly gatewayId: string;
      readonly rejection: Rejection;
      /** Known when the envelope's header could be read; without it no ack can be sent. */
      readonly batchId: number | undefined;
      /** The batch's nonce when readable: without it a v2 gateway does not act on the refusal. */
      readonly nonce: string | undefined;
    };

// Read leniently from an envelope the strict schema refused (too large, wrong version...).
const headerHintSchema = z.object({
  batchId: z.number().int().nonnegative().optional().catch(undefined),
  gatewayId: gatewayIdSchema.optional().catch(undefined),
  nonce: batchNonceSchema.optional().catch(undefined),
});

export function decodeBatchMessage(topicGatewayId: string, payload: Uint8Array, maxBatchBytes: number): DecodedMessage {
  const decoded = decodeBatch(payload, maxBatchBytes);
  if (decoded.ok) return { ok: true, gatewayId: topicGatewayId, header: decoded.header, readings: decoded.readings };
  const hint = decoded.header?.batchId !== undefined ? decoded.header : headerHint(payload);
  return {
    ok: false,
    gatewayId: topicGatewayId,
    rejection: decoded.rejection,
    batchId: typeof hint?.batchId === 'number' ? hint.batchId : undefined,
    nonce: typeof hint?.nonce === 'string' ? hint.nonce : undefined,
  };
}

/** decodeBatch gives no header for an oversized payload; the batch id and nonce are still worth finding to stop the resends. */
function headerHint(payload: Uint8Array): { batchId?: number | undefined; nonce?: string | undefined } | undefined {
  try {
    const raw: unknown = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
    const hint = headerHintSchema.safeParse(raw);
    return hint.success ? hint.data : undefined;
  } catch {
    return undefined;
  }
}
