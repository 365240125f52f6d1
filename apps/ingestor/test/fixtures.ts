// Readings and envelopes as a gateway would send them.
import type { Reading } from '@ferry/protocol';
import { encodeBatch } from '@ferry/protocol';

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

export function batch(gatewayId: string, batchId: number, items: readonly unknown[], compression: 'none' | 'gzip' = 'none'): Buffer {
  return encodeBatch({ v: 1, gatewayId, batchId, sentAt: T0 }, items as Reading[], compression);
}
