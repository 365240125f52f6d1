import { describe, expect, it } from 'vitest';
import { BATCH_VERSION, decodeAck, decodeBatch, encodeAck, encodeBatch, LEGACY_BATCH_VERSION, newBatchNonce, sameBatchNonce } from '../src/index.js';
import type { Ack, BatchHeader, Reading } from '../src/index.js';

const readings: Reading[] = Array.from({ length: 50 }, (_, i) => ({
  seq: 100 + i,
  deviceId: `dev-${i % 5}`,
  kind: 'telemetry',
  ts: 1_764_000_000_000 + i,
  tsSource: 'device',
  receivedAt: 1_764_000_000_010 + i,
  metrics: { temperature: 20 + i / 10, battery: 90 },
}));
const nonce = newBatchNonce();
const header: BatchHeader = { v: BATCH_VERSION, gatewayId: 'gw-1', batchId: 3, sentAt: 1_764_000_000_100, nonce };

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

  it('requires the nonce in a v2 batch and still reads a v1 batch without one', () => {
    const { nonce: _, ...withoutNonce } = header;
    const missing = decodeBatch(encodeBatch(withoutNonce, readings), 1 << 20);
    expect(!missing.ok && missing.rejection).toMatchObject({ code: 'FERRY_ERR_ENVELOPE_INVALID', reason: expect.stringContaining('nonce') as string });
    const short = decodeBatch(encodeBatch({ ...header, nonce: 'abc' }, readings), 1 << 20);
    expect(!short.ok && short.rejection.code).toBe('FERRY_ERR_ENVELOPE_INVALID');
    const legacy = decodeBatch(encodeBatch({ ...withoutNonce, v: LEGACY_BATCH_VERSION }, readings), 1 << 20);
    expect(legacy.ok && legacy.header).toEqual({ ...withoutNonce, v: LEGACY_BATCH_VERSION });
    const legacyWithNonce = decodeBatch(encodeBatch({ ...header, v: LEGACY_BATCH_VERSION }, readings), 1 << 20);
    expect(legacyWithNonce.ok).toBe(false);
  });

  it('makes a fresh nonce of at least 128 bits for each batch', () => {
    const nonces = new Set(Array.from({ length: 1000 }, () => newBatchNonce()));
    expect(nonces.size).toBe(1000);
    for (const n of nonces) expect(Buffer.from(n, 'base64url').length).toBeGreaterThanOrEqual(16);
    expect(sameBatchNonce(nonce, `${nonce}`)).toBe(true);
    expect(sameBatchNonce(nonce, newBatchNonce())).toBe(false);
    expect(sameBatchNonce(nonce, nonce.slice(1))).toBe(false);
  });

  it('refuses a batch over the size bound', () => {
    const decoded = decodeBatch(encodeBatch(header, readings), 100);
    expect(!decoded.ok && decoded.rejection.code).toBe('FERRY_ERR_PAYLOAD_TOO_LARGE');
  });
});

describe('ack', () => {
  it('round-trips and refuses unknown error codes', () => {
    const ack: Ack = { v: BATCH_VERSION, gatewayId: 'gw-1', batchId: 3, nonce, accepted: 2, duplicates: 1, rejected: [{ seq: 5, code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'x' }], ackedAt: 9 };
    expect(decodeAck(encodeAck(ack))).toEqual(ack);
    expect(decodeAck(Buffer.from(JSON.stringify({ ...ack, rejected: [{ seq: 5, code: 'NOPE', reason: 'x' }] })))).toBeUndefined();
    expect(decodeAck(Buffer.from('garbage'))).toBeUndefined();
  });

  it('requires the nonce in a v2 ack, and none in a v1 ack', () => {
    const base = { gatewayId: 'gw-1', batchId: 3, accepted: 1, duplicates: 0, rejected: [], ackedAt: 9 };
    expect(decodeAck(Buffer.from(JSON.stringify({ ...base, v: 2 })))).toBeUndefined();
    expect(decodeAck(Buffer.from(JSON.stringify({ ...base, v: 1, nonce })))).toBeUndefined();
    expect(decodeAck(Buffer.from(JSON.stringify({ ...base, v: 1 })))).toEqual({ ...base, v: 1 });
    expect(decodeAck(Buffer.from(JSON.stringify({ ...base, v: 2, nonce })))).toEqual({ ...base, v: 2, nonce });
  });
});
