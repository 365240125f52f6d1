import { describe, expect, it } from 'vitest';
import { InFlightBatches } from '../src/ack.js';

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
