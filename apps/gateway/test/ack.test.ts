import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BATCH_VERSION, encodeAck, LEGACY_BATCH_VERSION, newBatchNonce } from '@ferry/protocol';
import type { Ack } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { createAckHandler, InFlightBatches } from '../src/ack.js';
import { createSqliteOutbox } from '../src/outbox.js';

function batch(batchId: number, seqs: number[]) {
  return { batchId, nonce: `nonce-of-batch-${batchId}-000000000`, seqs, bytes: seqs.length * 10, sentAt: 0 };
}

describe('InFlightBatches', () => {
  it('excludes the seqs of waiting batches and counts their readings and bytes', () => {
    const inFlight = new InFlightBatches();
    inFlight.add(batch(1, [10, 11]), [10, 10]);
    inFlight.add(batch(2, [12]), [5]);
    expect(inFlight.size).toBe(2);
    expect(inFlight.readings).toBe(3);
    expect(inFlight.bytes).toBe(25);
    expect(inFlight.excluded.has(11)).toBe(true);
    expect(inFlight.excluded.has(13)).toBe(false);
  });

  it('forgets an acked batch entirely', () => {
    const inFlight = new InFlightBatches();
    inFlight.add(batch(1, [10, 11]), [10, 10]);
    expect(inFlight.lookup(1)).toEqual({ batch: batch(1, [10, 11]), late: false });
    inFlight.settle(1);
    expect(inFlight.lookup(1)).toBeUndefined();
    expect(inFlight.excluded.has(10)).toBe(false);
    expect(inFlight.size).toBe(0);
    expect(inFlight.bytes).toBe(0);
  });

  it('makes an expired batch sendable again but still honours its late ack', () => {
    const inFlight = new InFlightBatches();
    inFlight.add(batch(1, [10, 11]), [10, 10]);
    expect(inFlight.expire(1)?.seqs).toEqual([10, 11]);
    expect(inFlight.size).toBe(0);
    expect(inFlight.excluded.has(10)).toBe(false);
    expect(inFlight.lookup(1)).toEqual({ batch: batch(1, [10, 11]), late: true });
    inFlight.settle(1);
    expect(inFlight.lookup(1)).toBeUndefined();
  });

  it('remembers only a bounded number of expired batches', () => {
    const inFlight = new InFlightBatches(2);
    for (const id of [1, 2, 3]) {
      inFlight.add(batch(id, [id]), [1]);
      inFlight.expire(id);
    }
    expect(inFlight.lookup(1)).toBeUndefined();
    expect(inFlight.lookup(3)?.late).toBe(true);
  });

  it('expires everything waiting when the uplink comes back', () => {
    const inFlight = new InFlightBatches();
    inFlight.add(batch(1, [1]), [1]);
    inFlight.add(batch(2, [2]), [1]);
    expect(inFlight.expireAll().map((b) => b.batchId)).toEqual([1, 2]);
    expect(inFlight.size).toBe(0);
    expect(inFlight.readings).toBe(0);
  });

  it('stops waiting for rows the outbox bound discarded', () => {
    const inFlight = new InFlightBatches();
    inFlight.add(batch(1, [1, 2]), [4, 6]);
    inFlight.forget([1, 99]);
    expect(inFlight.readings).toBe(1);
    expect(inFlight.bytes).toBe(6);
  });
});

describe('createAckHandler', () => {
  const NONCE = newBatchNonce();
  function setup() {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-ack-'));
    const outbox = createSqliteOutbox({ path: join(dir, 'outbox.db') });
    const now = Date.now();
    const { seqs } = outbox.append(
      [1, 2, 3].map((i) => ({ deviceId: 'd', kind: 'telemetry' as const, ts: now + i, tsSource: 'device' as const, receivedAt: now, metrics: { v: i } })),
    );
    const inFlight = new InFlightBatches();
    inFlight.add({ batchId: 7, nonce: NONCE, seqs: [...seqs], bytes: 30, sentAt: 0 }, [10, 10, 10]);
    const ignored: string[] = [];
    const acked: number[] = [];
    const handle = createAckHandler({
      gatewayId: 'gw',
      inFlight,
      outbox,
      logger: silentLogger(),
      counters: { onAcked: (b) => acked.push(b.batchId), onIgnored: (reason) => ignored.push(reason) },
      onSettled: () => undefined,
    });
    return { outbox, inFlight, handle, ignored, acked, seqs, close: () => { outbox.close(); rmSync(dir, { recursive: true, force: true }); } };
  }
  const ack = (over: Partial<Ack>): Buffer =>
    encodeAck({ v: BATCH_VERSION, gatewayId: 'gw', batchId: 7, nonce: NONCE, accepted: 3, duplicates: 0, rejected: [], ackedAt: 1, ...over });

  it('deletes the readings of a batch whose ack echoes its nonce', () => {
    const t = setup();
    try {
      t.handle(ack({}));
      expect(t.ignored).toEqual([]);
      expect(t.acked).toEqual([7]);
      expect(t.outbox.stats().depth).toBe(0);
    } finally {
      t.close();
    }
  });

  it('deletes nothing for a blind forgery (right batch id, a nonce of its own) and counts it forged', () => {
    const t = setup();
    try {
      t.handle(ack({ nonce: newBatchNonce() }));
      t.handle(ack({ nonce: `${NONCE.slice(0, -1)}${NONCE.endsWith('A') ? 'B' : 'A'}` }));
      t.handle(ack({ nonce: `${NONCE}x` }));
      expect(t.ignored).toEqual(['forged', 'forged', 'forged']);
      expect(t.acked).toEqual([]);
      expect(t.outbox.stats().depth).toBe(3);
      // The batch still waits for its genuine ack, which then deletes.
      t.handle(ack({}));
      expect(t.outbox.stats().depth).toBe(0);
    } finally {
      t.close();
    }
  });

  it('deletes nothing for an ack naming a learned batch id without a nonce (v1) and counts it no_nonce', () => {
    const t = setup();
    try {
      t.handle(encodeAck({ v: LEGACY_BATCH_VERSION, gatewayId: 'gw', batchId: 7, accepted: 3, duplicates: 0, rejected: [], ackedAt: 1 }));
      // A v2 ack without its nonce does not even decode.
      t.handle(Buffer.from(JSON.stringify({ v: BATCH_VERSION, gatewayId: 'gw', batchId: 7, accepted: 3, duplicates: 0, rejected: [], ackedAt: 1 })));
      // Nor does refusing the whole envelope work without the nonce.
      t.handle(ack({ nonce: newBatchNonce(), accepted: 0, rejected: [{ seq: null, code: 'FERRY_ERR_ENVELOPE_INVALID', reason: 'x' }] }));
      expect(t.ignored).toEqual(['no_nonce', 'invalid', 'forged']);
      expect(t.outbox.stats().depth).toBe(3);
    } finally {
      t.close();
    }
  });

  it('changes nothing when a genuine ack is replayed after its batch settled', () => {
    const t = setup();
    try {
      t.handle(ack({}));
      expect(t.outbox.stats().depth).toBe(0);
      const more = t.outbox.append([{ deviceId: 'd', kind: 'telemetry', ts: Date.now(), tsSource: 'device', receivedAt: Date.now(), metrics: { v: 9 } }]);
      t.handle(ack({}));
      t.handle(ack({}));
      expect(t.ignored).toEqual(['unknown', 'unknown']);
      expect(t.acked).toEqual([7]);
      expect(t.outbox.stats().depth).toBe(more.seqs.length);
    } finally {
      t.close();
    }
  });

  it('honours a late ack of a resent batch by its own nonce, not the resend\'s', () => {
    const t = setup();
    try {
      t.inFlight.expire(7);
      const resendNonce = newBatchNonce();
      t.inFlight.add({ batchId: 8, nonce: resendNonce, seqs: [...t.seqs], bytes: 30, sentAt: 1 }, [10, 10, 10]);
      // The resend's nonce does not open the old id, nor the old nonce the new id.
      t.handle(ack({ nonce: resendNonce }));
      t.handle(ack({ batchId: 8 }));
      expect(t.ignored).toEqual(['forged', 'forged']);
      expect(t.outbox.stats().depth).toBe(3);
      t.handle(ack({}));
      expect(t.acked).toEqual([7]);
      expect(t.outbox.stats().depth).toBe(0);
    } finally {
      t.close();
    }
  });

  it('keeps the readings of a batch whose ack accounts for fewer readings than were sent', () => {
    const t = setup();
    try {
      t.handle(ack({ accepted: 2 }));
      expect(t.ignored).toEqual(['mismatch']);
      expect(t.outbox.stats().depth).toBe(3);
      t.handle(ack({ accepted: 2, duplicates: 1 }));
      expect(t.outbox.stats().depth).toBe(0);
    } finally {
      t.close();
    }
  });

  it('deletes every reading of an envelope the ingestor refused whole', () => {
    const t = setup();
    try {
      t.handle(ack({ accepted: 0, rejected: [{ seq: null, code: 'FERRY_ERR_ENVELOPE_INVALID', reason: 'unreadable' }] }));
      expect(t.ignored).toEqual([]);
      expect(t.outbox.stats().depth).toBe(0);
    } finally {
      t.close();
    }
  });
});
