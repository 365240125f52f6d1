// Readings and envelopes as a gateway would send them.
import { createHash } from 'node:crypto';
import type { Reading } from '@ferry/protocol';
import { BATCH_VERSION, encodeBatch, LEGACY_BATCH_VERSION } from '@ferry/protocol';

/** A whole second an hour ago: readings are recent enough for the default limits wherever the clock is. */
export const T0 = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;

export function reading(seq: number, overrides: Partial<Reading> = {}): Reading {
  return {
    seq,
    deviceId: `dev-${seq % 3}`,
    kind: 'telemetry',
    ts: T0 + seq * 1000,
    tsSource: 'device',
    receivedAt: T0 + seq * 1000 + 5,
    metrics: { temperature: 20 + seq / 10, ok: true },
    ...overrides,
  };
}

export function readings(from: number, count: number): Reading[] {
  return Array.from({ length: count }, (_, i) => reading(from + i));
}

/** The nonce `batch` gives a batch id: fixed, so that a test can resend a batch exactly and check the ack echoes it. */
export function nonceOf(gatewayId: string, batchId: number): string {
  return createHash('sha256').update(`${gatewayId}/${batchId}`).digest('base64url').slice(0, 22);
}

export function batch(gatewayId: string, batchId: number, items: readonly unknown[], compression: 'none' | 'gzip' = 'none'): Buffer {
  return encodeBatch({ v: BATCH_VERSION, gatewayId, batchId, sentAt: T0, nonce: nonceOf(gatewayId, batchId) }, items as Reading[], compression);
}

/** A batch as a gateway before protocol v2 sends it: no nonce. */
export function legacyBatch(gatewayId: string, batchId: number, items: readonly unknown[]): Buffer {
  return encodeBatch({ v: LEGACY_BATCH_VERSION, gatewayId, batchId, sentAt: T0 }, items as Reading[]);
}
