import { describe, expect, it } from 'vitest';
import { FerryError } from '@ferry/protocol';
import { ManualClock } from '@ferry/runtime';
import { waitFor } from '@ferry/testkit';
import type { Point, SinkWriteResult } from '@ferry/sinks';
import { createWriter, retryDelay, WriteBuffer } from '../src/write.js';
import { MemorySink } from './memory-sink.js';

const policy = { initialMs: 100, maxMs: 1000, factor: 2 };

function point(i: number): { point: Point } {
  return { point: { measurement: 'm', tags: { device: 'd' }, fields: { v: i }, timestampNs: BigInt(i) } };
}

describe('write buffer', () => {
  it('holds points until the oldest has lingered, then hands them all out', () => {
    const clock = new ManualClock(1000);
    const buffer = new WriteBuffer<number>({ maxPoints: 10, lingerMs: 50 }, clock);
    buffer.push([1, 2]);
    clock.advance(30);
    buffer.push([3]);
    expect(buffer.take()).toBeUndefined();
    expect(buffer.dueAt()).toBe(1050);
    clock.advance(20);
    expect(buffer.take()).toEqual([1, 2, 3]);
    expect(buffer.dueAt()).toBeUndefined();
  });

  it('hands out a full chunk at once and keeps the rest due', () => {
    const clock = new ManualClock(0);
    const buffer = new WriteBuffer<number>({ maxPoints: 3, lingerMs: 1000 }, clock);
    buffer.push([1, 2, 3, 4, 5, 6, 7]);
    expect(buffer.take()).toEqual([1, 2, 3]);
    expect(buffer.take()).toEqual([4, 5, 6]);
    expect(buffer.take()).toBeUndefined();
    expect(buffer.take(true)).toEqual([7]);
  });
});

describe('retry delay', () => {
  it('backs off exponentially', () => {
    expect(retryDelay(new Error('x'), 0, policy, () => 0)).toBe(50);
    expect(retryDelay(new Error('x'), 2, policy, () => 0)).toBe(200);
    expect(retryDelay(new Error('x'), 10, policy, () => 0.999)).toBeLessThanOrEqual(1000);
  });

  it("honours the database's retry-after", () => {
    const err = new FerryError('FERRY_ERR_SINK_UNAVAILABLE', '429', { retryAfterMs: 7000 });
    expect(retryDelay(err, 0, policy, () => 0)).toBe(7000);
  });
});

describe('writer', () => {
  it('retries while the sink is down and confirms each chunk exactly once when it returns', async () => {
    const sink = new MemorySink();
    sink.down = true;
    const confirmed: number[] = [];
    const writer = createWriter({
      sink,
      clock: new ManualClock(0),
      policy: { maxPoints: 100, lingerMs: 0, maxInFlight: 1, retry: { initialMs: 5, maxMs: 20, factor: 2 } },
      confirm: (chunk, result: SinkWriteResult) => {
        expect(result.written).toBe(chunk.length);
        confirmed.push(chunk.length);
      },
    });
    writer.push([point(1), point(2), point(3)]);
    await waitFor(() => sink.writeCalls >= 3, { timeoutMs: 5000 });
    expect(confirmed).toEqual([]);
    sink.down = false;
    await waitFor(() => confirmed.length === 1, { timeoutMs: 5000 });
    expect(confirmed).toEqual([3]);
    expect(sink.points.size).toBe(3);
    expect(await writer.stop(1000)).toBe(true);
  });

  it('writes a chunk again when recording it fails, without settling it twice', async () => {
    const sink = new MemorySink();
    let attempts = 0;
    const writer = createWriter({
      sink,
      clock: new ManualClock(0),
      policy: { maxPoints: 100, lingerMs: 0, maxInFlight: 1, retry: { initialMs: 5, maxMs: 5, factor: 1 } },
      confirm: () => {
        attempts++;
        if (attempts === 1) throw new Error('disk full');
      },
    });
    writer.push([point(1)]);
    await waitFor(() => attempts === 2, { timeoutMs: 5000 });
    expect(sink.writeCalls).toBe(2);
    expect(sink.points.size).toBe(1);
    expect(await writer.stop(1000)).toBe(true);
  });

  it('gives up at stop when the sink stays down, reporting the writes unconfirmed', async () => {
    const sink = new MemorySink();
    sink.down = true;
    let confirmed = 0;
    const writer = createWriter({
      sink,
      clock: new ManualClock(0),
      policy: { maxPoints: 100, lingerMs: 10_000, maxInFlight: 2, retry: { initialMs: 5, maxMs: 10, factor: 2 } },
      confirm: () => {
        confirmed++;
      },
    });
    writer.push([point(1)]);
    // stop flushes despite the long linger, then times out.
    expect(await writer.stop(100)).toBe(false);
    expect(sink.writeCalls).toBeGreaterThan(0);
    const calls = sink.writeCalls;
    sink.down = false;
    writer.push([point(2)]);
    expect(sink.writeCalls).toBe(calls);
    expect(confirmed).toBe(0);
  });
});
