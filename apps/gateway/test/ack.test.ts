import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeAck } from '@ferry/protocol';
import type { Ack } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { createAckHandler, InFlightBatches } from '../src/ack.js';
import { createSqliteOutbox } from '../src/outbox.js';

function batch(batchId: number, seqs: number[]) {
  return { batchId, seqs, bytes: seqs.length * 10, sentAt: 0 };
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
  function setup() {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-ack-'));
    const outbox = createSqliteOutbox({ path: join(dir, 'outbox.db') });
    const { seqs } = outbox.append(
      [1, 2, 3].map((i) => ({ deviceId: 'd', kind: 'telemetry' as const, ts: 1_764_000_000_000 + i, tsSource: 'device' as const, receivedAt: 1_764_000_000_000, metrics: { v: i } })),
    );
    const inFlight = new InFlightBatches();
    inFlight.add({ batchId: 7, seqs: [...seqs], bytes: 30, sentAt: 0 }, [10, 10, 10]);
    const ignored: string[] = [];
    const handle = createAckHandler({
      gatewayId: 'gw',
      inFlight,
      outbox,
      logger: silentLogger(),
      counters: { onAcked: () => undefined, onIgnored: (reason) => ignored.push(reason) },
      onSettled: () => undefined,
    });
    return { outbox, handle, ignored, seqs, close: () => { outbox.close(); rmSync(dir, { recursive: true, force: true }); } };
  }
  const ack = (over: Partial<Ack>): Buffer => encodeAck({ v: 1, gatewayId: 'gw', batchId: 7, accepted: 3, duplicates: 0, rejected: [], ackedAt: 1, ...over });

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
