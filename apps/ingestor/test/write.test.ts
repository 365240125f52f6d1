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

  it('records a chunk again when recording it fails, without writing it twice', async () => {
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
    expect(sink.writeCalls).toBe(1);
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

  it('notes each chunk before writing it, and settles suspects the database holds as written without writing them again', async () => {
    // A sink where a rewrite would add a second sample: it answers present() from what it holds.
    class SamplesSink extends MemorySink {
      samples = 0;
      asked: Point[] = [];
      override async write(points: readonly Point[]): Promise<SinkWriteResult> {
        this.samples += points.length;
        return super.write(points);
      }
      async present(points: readonly Point[]): Promise<readonly boolean[]> {
        this.asked.push(...points);
        return points.map((p) => this.points.has(MemorySink.key(p)));
      }
    }
    const sink = new SamplesSink();
    // The dead writer's chunk landed: points 1 and 2 are in the database, 3 never made it.
    await sink.write([point(1).point, point(2).point]);
    const clock = new ManualClock(10_000);
    const begun: number[][] = [];
    const results: { intent: unknown; written: number }[] = [];
    let recovered = 0;
    const writer = createWriter<{ point: Point; key: number }>({
      sink,
      clock,
      policy: { maxPoints: 100, lingerMs: 0, maxInFlight: 1, retry: { initialMs: 5, maxMs: 5, factor: 1 } },
      intents: {
        begin: (chunk) => {
          begun.push(chunk.map((i) => i.key));
          return `intent-${begun.length}`;
        },
        // Keys 1..3 were in the dead writer's intent; the database may be asked 30 ms from now.
        askAfter: (item) => (item.key <= 3 ? 10_030 : undefined),
      },
      confirm: (_chunk, result, intent) => results.push({ intent, written: result.written }),
      events: { recovered: (n) => (recovered += n) },
    });
    writer.push([1, 2, 3, 4].map((k) => ({ ...point(k), key: k })));
    await waitFor(() => results.length === 1, { timeoutMs: 5000 });
    expect(begun).toEqual([[1, 2, 3, 4]]);
    expect(sink.asked.map((p) => p.fields.v)).toEqual([1, 2, 3]);
    expect(results).toEqual([{ intent: 'intent-1', written: 4 }]);
    expect(recovered).toBe(2);
    // Only 3 and 4 were written this time: no second sample of 1 or 2.
    expect(sink.samples).toBe(2 + 2);
    expect(await writer.stop(1000)).toBe(true);
  });

  it('holds a chunk while its intent cannot be stored, and writes it once it can', async () => {
    const sink = new MemorySink();
    let failing = true;
    let tries = 0;
    const confirmed: unknown[] = [];
    const writer = createWriter({
      sink,
      clock: new ManualClock(0),
      policy: { maxPoints: 100, lingerMs: 0, maxInFlight: 1, retry: { initialMs: 5, maxMs: 5, factor: 1 } },
      intents: {
        begin: () => {
          tries++;
          if (failing) throw new Error('disk full');
          return 'noted';
        },
        askAfter: () => undefined,
      },
      confirm: (_chunk, _result, intent) => confirmed.push(intent),
    });
    writer.push([point(1)]);
    await waitFor(() => tries >= 3, { timeoutMs: 5000 });
    expect(sink.writeCalls).toBe(0);
    failing = false;
    await waitFor(() => confirmed.length === 1, { timeoutMs: 5000 });
    expect(confirmed).toEqual(['noted']);
    expect(sink.points.size).toBe(1);
    expect(await writer.stop(1000)).toBe(true);
  });

  it('asks the database before writing again after a failed try that may have landed', async () => {
    // The database takes the write, then the answer is lost (a timeout): the try failed for the writer.
    class LostAnswerSink extends MemorySink {
      samples = 0;
      loseNext = true;
      override async write(points: readonly Point[]): Promise<SinkWriteResult> {
        this.samples += points.length;
        const result = await super.write(points);
        if (!this.loseNext) return result;
        this.loseNext = false;
        throw new FerryError('FERRY_ERR_SINK_UNAVAILABLE', 'socket timed out after 10000 ms');
      }
      async present(points: readonly Point[]): Promise<readonly boolean[]> {
        return points.map((p) => this.points.has(MemorySink.key(p)));
      }
    }
    const sink = new LostAnswerSink();
    const confirmed: number[] = [];
    const writer = createWriter({
      sink,
      clock: new ManualClock(0),
      policy: { maxPoints: 100, lingerMs: 0, maxInFlight: 1, retry: { initialMs: 5, maxMs: 5, factor: 1 } },
      confirm: (_chunk, result) => confirmed.push(result.written),
    });
    writer.push([point(1), point(2), point(3)]);
    await waitFor(() => confirmed.length === 1, { timeoutMs: 5000 });
    expect(confirmed).toEqual([3]);
    expect(sink.samples).toBe(3);
    expect(await writer.stop(1000)).toBe(true);
  });
});
