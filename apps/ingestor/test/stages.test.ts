import { describe, expect, it } from 'vitest';
import { defaultLimits } from '@ferry/protocol';
import { decodeBatchMessage } from '../src/decode.js';
import { validateReading } from '../src/validate.js';
import { BatchTracker, envelopeRejectionAck } from '../src/ack.js';
import { Accounting, imbalances } from '../src/accounting.js';
import { GatewayStatuses } from '../src/statuses.js';
import { batch, nonceOf, reading, T0 } from './fixtures.js';

const ctx = { topicGatewayId: 'gw-1', envelopeGatewayId: 'gw-1', limits: defaultLimits, now: T0 + 60_000 };

describe('decode', () => {
  it('yields the header and raw readings of a plain or gzipped envelope', () => {
    for (const compression of ['none', 'gzip'] as const) {
      const decoded = decodeBatchMessage('gw-1', batch('gw-1', 7, [reading(1), reading(2)], compression), 1 << 20);
      expect(decoded.ok).toBe(true);
      if (decoded.ok) {
        expect(decoded.header.batchId).toBe(7);
        expect(decoded.header.nonce).toBe(nonceOf('gw-1', 7));
        expect(decoded.readings).toHaveLength(2);
      }
    }
  });

  it('keeps the batch id of an envelope it refuses, so the refusal can be acked', () => {
    const bad = Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', batchId: 9, sentAt: 1, compression: 'none', readings: 'nope' }));
    const decoded = decodeBatchMessage('gw-1', bad, 1 << 20);
    expect(decoded).toMatchObject({ ok: false, batchId: 9, rejection: { code: 'FERRY_ERR_ENVELOPE_INVALID' } });
  });

  it('finds the batch id and nonce of an oversized envelope too', () => {
    const big = batch('gw-1', 3, [reading(1)]);
    expect(decodeBatchMessage('gw-1', big, 10)).toMatchObject({ ok: false, batchId: 3, nonce: nonceOf('gw-1', 3), rejection: { code: 'FERRY_ERR_PAYLOAD_TOO_LARGE' } });
  });

  it('has no batch id for a payload that is not JSON', () => {
    expect(decodeBatchMessage('gw-1', Buffer.from('garbage'), 1 << 20)).toMatchObject({ ok: false, batchId: undefined });
  });
});

describe('validate', () => {
  it('accepts a well-formed reading within limits', () => {
    expect(validateReading(reading(1), ctx)).toMatchObject({ ok: true, reading: { seq: 1 } });
  });

  it('refuses a schema violation with the zod issues, keeping the seq and device', () => {
    const result = validateReading({ ...reading(4), metrics: 'hot' }, ctx);
    expect(result).toMatchObject({ ok: false, seq: 4, deviceId: 'dev-1', rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA' } });
    if (!result.ok) expect(result.rejection.issues?.length).toBeGreaterThan(0);
  });

  it('refuses a reading over the limits', () => {
    const result = validateReading(reading(2, { ts: T0 + 3_600_000 }), ctx);
    expect(result).toMatchObject({ ok: false, seq: 2, rejection: { code: 'FERRY_ERR_TIMESTAMP_SKEW' } });
  });

  it('has no seq for a reading without a usable one', () => {
    expect(validateReading({ seq: -1 }, ctx)).toMatchObject({ ok: false, seq: null });
    expect(validateReading(42, ctx)).toMatchObject({ ok: false, seq: null, deviceId: undefined });
  });

  it("refuses a reading that came on another gateway's topic than the envelope names", () => {
    const result = validateReading(reading(1), { ...ctx, envelopeGatewayId: 'gw-2' });
    expect(result).toMatchObject({ ok: false, seq: 1, rejection: { code: 'FERRY_ERR_ENVELOPE_INVALID' } });
  });
});

describe('ack', () => {
  it('is ready only once every reading is settled, with the counts of each outcome', () => {
    const tracker = new BatchTracker('gw-1', 5, 4, 'nonce-of-batch-5-0000000');
    tracker.settle(1, { kind: 'written' });
    tracker.settle(2, { kind: 'duplicate' });
    tracker.settle(null, { kind: 'rejected', code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'bad' });
    expect(tracker.complete).toBe(false);
    expect(() => tracker.toAck(1)).toThrow();
    tracker.settle(4, { kind: 'written' });
    expect(tracker.toAck(99)).toEqual({
      v: 2,
      gatewayId: 'gw-1',
      batchId: 5,
      nonce: 'nonce-of-batch-5-0000000',
      accepted: 2,
      duplicates: 1,
      rejected: [{ seq: null, code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'bad' }],
      ackedAt: 99,
    });
    expect(() => tracker.settle(5, { kind: 'written' })).toThrow();
  });

  it('answers a v1 batch (no nonce) with a v1 ack, readable by a gateway before v2', () => {
    const tracker = new BatchTracker('gw-1', 5, 1, undefined);
    tracker.settle(1, { kind: 'written' });
    const ack = tracker.toAck(99);
    expect(ack).toMatchObject({ v: 1, batchId: 5, accepted: 1 });
    expect(ack).not.toHaveProperty('nonce');
  });

  it('acks an unreadable envelope with nothing accepted and one refusal without seq, echoing its nonce', () => {
    expect(envelopeRejectionAck('gw', 3, 'nonce-of-batch-3-0000000', 'FERRY_ERR_ENVELOPE_INVALID', 'x', 5)).toMatchObject({
      v: 2,
      nonce: 'nonce-of-batch-3-0000000',
      accepted: 0,
      duplicates: 0,
      rejected: [{ seq: null, code: 'FERRY_ERR_ENVELOPE_INVALID', reason: 'x' }],
    });
  });
});

describe('accounting', () => {
  it('balances received against written, rejected, duplicates and in flight per gateway', () => {
    const books = new Accounting();
    books.received('a', 5);
    books.received('b', 1);
    books.settle('a', 'written', 2);
    books.settle('a', 'duplicate');
    books.settle('a', { rejected: 'FERRY_ERR_PAYLOAD_SCHEMA' });
    expect(books.byGateway().get('a')).toMatchObject({ received: 5, written: 2, duplicates: 1, rejected: 1, inFlight: 1 });
    expect(books.totals()).toMatchObject({ received: 6, inFlight: 2, rejectedByCode: { FERRY_ERR_PAYLOAD_SCHEMA: 1 } });
    expect(imbalances(books.byGateway())).toEqual([]);
  });

  it('refuses to settle more than is in flight', () => {
    const books = new Accounting();
    books.received('a', 1);
    books.settle('a', 'written');
    expect(() => books.settle('a', 'written')).toThrow();
  });

  it('names a gateway whose books do not balance', () => {
    const broken = new Map([['x', { received: 3, written: 1, duplicates: 0, rejected: 0, rejectedByCode: {}, inFlight: 1 }]]);
    expect(imbalances(broken)).toEqual(['x']);
  });
});

describe('gateway statuses', () => {
  const status = (gatewayId: string, ts: number, state = 'online', epoch?: number): Buffer =>
    Buffer.from(JSON.stringify({ v: 1, gatewayId, state, ts, ...(epoch !== undefined ? { epoch } : {}) }));

  it("takes a session's Will over its later-dated statuses, never an old session's Will over a new session, and forgets a cleared gateway", () => {
    const statuses = new GatewayStatuses();
    // Session 7: online statuses, then its Will, dated when the session began (older than they are).
    statuses.apply('ferry/v1/gw/a/status', status('a', 1_000, 'online', 7), 1);
    statuses.apply('ferry/v1/gw/a/status', status('a', 31_000, 'online', 7), 2);
    expect(statuses.apply('ferry/v1/gw/a/status', status('a', 1_000, 'offline', 7), 3)).toBe(true);
    expect(statuses.snapshot().a).toMatchObject({ status: { state: 'offline', epoch: 7 }, receivedAt: 3 });
    // Session 8 comes online; the retained Will of session 7, replayed, changes nothing.
    statuses.apply('ferry/v1/gw/a/status', status('a', 40_000, 'online', 8), 4);
    statuses.apply('ferry/v1/gw/a/status', status('a', 1_000, 'offline', 7), 5);
    expect(statuses.snapshot().a).toMatchObject({ status: { state: 'online', epoch: 8 }, receivedAt: 4 });
    statuses.apply('ferry/v1/gw/a/status', Buffer.alloc(0), 6);
    expect(statuses.snapshot()).toEqual({});
  });

  it('without epochs (older gateways): keeps the newest online, takes a Will once, not its replay', () => {
    const statuses = new GatewayStatuses();
    statuses.apply('ferry/v1/gw/a/status', status('a', 20, 'online'), 1);
    statuses.apply('ferry/v1/gw/a/status', status('a', 10, 'online'), 2);
    expect(statuses.snapshot().a?.status.ts).toBe(20);
    statuses.apply('ferry/v1/gw/a/status', status('a', 5, 'offline'), 3);
    expect(statuses.snapshot().a?.status.state).toBe('offline');
    statuses.apply('ferry/v1/gw/a/status', status('a', 30, 'online'), 4);
    statuses.apply('ferry/v1/gw/a/status', status('a', 5, 'offline'), 5);
    expect(statuses.snapshot().a).toMatchObject({ status: { state: 'online', ts: 30 } });
  });

  it('ignores a status naming another gateway than its topic, or one that is not a status', () => {
    const statuses = new GatewayStatuses();
    expect(statuses.apply('ferry/v1/gw/a/status', status('b', 1), 1)).toBe(false);
    expect(statuses.apply('ferry/v1/gw/a/status', Buffer.from('{'), 1)).toBe(false);
    expect(statuses.snapshot()).toEqual({});
  });
});
