import { describe, expect, it } from 'vitest';
import { decodeAck, decodeBatch, encodeAck, encodeBatch } from '../src/index.js';
import type { Reading } from '../src/index.js';

const readings: Reading[] = Array.from({ length: 50 }, (_, i) => ({
  seq: 100 + i,
  deviceId: `dev-${i % 5}`,
  kind: 'telemetry',
  ts: 1_764_000_000_000 + i,
  tsSource: 'device',
  receivedAt: 1_764_000_000_010 + i,
  metrics: { temperature: 20 + i / 10, battery: 90 },
}));
const header = { v: 1 as const, gatewayId: 'gw-1', batchId: 3, sentAt: 1_764_000_000_100 };

describe('batch envelope', () => {
  it('round-trips plain and gzip-compressed batches', () => {
    for (const compression of ['none', 'gzip'] as const) {
      const decoded = decodeBatch(encodeBatch(header, readings, compression), 1 << 20);
      expect(decoded).toEqual({ ok: true, header, readings });
    }
  });

  it('compresses realistic readings several times over', () => {
    const plain = encodeBatch(header, readings, 'none').length;
    const gzip = encodeBatch(header, readings, 'gzip').length;
    expect(gzip * 3).toBeLessThan(plain);
  });

  it('rejects malformed envelopes with FERRY_ERR_ENVELOPE_INVALID, keeping what header it could read', () => {
    const bad = decodeBatch(Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', batchId: 4, sentAt: 1, compression: 'zip' })), 1 << 20);
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.rejection.code).toBe('FERRY_ERR_ENVELOPE_INVALID');
    expect(!bad.ok && bad.header?.batchId).toBe(4);
    const notJson = decodeBatch(Buffer.from('nope'), 1 << 20);
    expect(!notJson.ok && notJson.rejection.code).toBe('FERRY_ERR_ENVELOPE_INVALID');
  });

  it('refuses a batch over the size bound', () => {
    const decoded = decodeBatch(encodeBatch(header, readings), 100);
    expect(!decoded.ok && decoded.rejection.code).toBe('FERRY_ERR_PAYLOAD_TOO_LARGE');
  });
});

describe('ack', () => {
  it('round-trips and refuses unknown error codes', () => {
    const ack = { v: 1 as const, gatewayId: 'gw-1', batchId: 3, accepted: 2, duplicates: 1, rejected: [{ seq: 5, code: 'FERRY_ERR_PAYLOAD_SCHEMA' as const, reason: 'x' }], ackedAt: 9 };
    expect(decodeAck(encodeAck(ack))).toEqual(ack);
    expect(decodeAck(Buffer.from(JSON.stringify({ ...ack, rejected: [{ seq: 5, code: 'NOPE', reason: 'x' }] })))).toBeUndefined();
    expect(decodeAck(Buffer.from('garbage'))).toBeUndefined();
  });
});
