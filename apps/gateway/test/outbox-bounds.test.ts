// The outbox bounds on a real SQLite file: rows, bytes and age (how long the gateway held a reading), the
// two full policies, and the drop ledger (counts per device and reason, gap records).
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import type { DeviceReading } from '@ferry/protocol';
import { createSqliteOutbox, OUTBOX_ROW_OVERHEAD_BYTES } from '../src/outbox.js';
import type { Outbox, SqliteOutboxOptions } from '../src/outbox.js';
import { tempDir } from './harness.js';

const T0 = 1_700_000_000_000;
const none = new Set<number>();
const DAY_MS = 86_400_000;

function reading(n: number, deviceId = 'dev-1', ts = T0 + n, deviceSeq?: number): DeviceReading {
  return {
    deviceId,
    kind: 'telemetry',
    ts,
    tsSource: 'device',
    receivedAt: T0 + n,
    ...(deviceSeq !== undefined ? { deviceSeq } : {}),
    metrics: { n },
  };
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()?.();
});

function place(): { open: (options?: Partial<SqliteOutboxOptions>) => Outbox; clock: ManualClock } {
  const dir = tempDir();
  const clock = new ManualClock(T0 + 1000);
  const opened: Outbox[] = [];
  cleanups.push(() => {
    for (const o of opened) o.close();
    dir.remove();
  });
  return {
    clock,
    open: (options = {}) => {
      const outbox = createSqliteOutbox({ path: join(dir.path, 'outbox.db'), clock, ...options });
      opened.push(outbox);
      return outbox;
    },
  };
}

function ns(outbox: Outbox): number[] {
  return outbox.peek({ limit: 1000, maxBytes: 1 << 30, exclude: none }).map((e) => e.reading.metrics.n as number);
}

function cost(outbox: Outbox): number {
  const s = outbox.stats();
  return s.bytes + s.depth * OUTBOX_ROW_OVERHEAD_BYTES;
}

describe('outbox bounds', () => {
  it('drops the oldest rows beyond maxBytes and counts them as outbox_bytes', () => {
    const { open } = place();
    const probe = open({ path: ':memory:' });
    const rowCost = probe.append([reading(1)]).seqs.length && cost(probe);
    probe.close();
    const outbox = open({ maxBytes: rowCost * 3 + 5 });
    outbox.append([1, 2, 3].map((n) => reading(n)));
    const result = outbox.append([reading(4), reading(5)]);
    expect(result.droppedSeqs).toHaveLength(2);
    expect(ns(outbox)).toEqual([3, 4, 5]);
    expect(cost(outbox)).toBeLessThanOrEqual(rowCost * 3 + 5);
    expect(outbox.stats().dropped).toEqual({ outbox_bytes: 2 });
  });

  it('keeps the byte total exact across a restart, so the bound holds after it', () => {
    const { open } = place();
    const first = open();
    first.append([1, 2, 3].map((n) => reading(n)));
    const bytes = first.stats().bytes;
    const oneRow = cost(first) / 3;
    first.close();
    const second = open({ maxBytes: Math.floor(oneRow * 3) });
    expect(second.stats().bytes).toBe(bytes);
    second.append([reading(4)]);
    expect(ns(second)).toEqual([2, 3, 4]);
    expect(second.stats().dropped).toEqual({ outbox_bytes: 1 });
  });

  it('judges age by how long the gateway has held a reading, not by the time the device gave it', () => {
    const { open, clock } = place();
    const outbox = open({ maxAgeMs: 60_000 });
    const now = clock.now();
    // A backfill (or a device whose clock is 40 days behind): old by its own time, received now.
    const backfill = (n: number): DeviceReading => ({ ...reading(n, 'a', now - 40 * DAY_MS, n), receivedAt: now });
    outbox.append([backfill(1), backfill(2)]);
    expect(outbox.expire()).toEqual([]);
    expect(ns(outbox)).toEqual([1, 2]);
    clock.advance(30_000);
    outbox.append([{ ...reading(3, 'b', clock.now() - 40 * DAY_MS), receivedAt: clock.now() }]);
    expect(outbox.expire()).toEqual([]);
    // Held 61 s: the first two go, the one received 30 s later stays.
    clock.advance(31_000);
    expect(outbox.expire()).toHaveLength(2);
    expect(ns(outbox)).toEqual([3]);
    // An append applies the bound too.
    clock.advance(30_000);
    const result = outbox.append([{ ...reading(4, 'b'), receivedAt: clock.now() }]);
    expect(result.droppedSeqs).toHaveLength(1);
    expect(ns(outbox)).toEqual([4]);
    expect(outbox.stats().dropped).toEqual({ outbox_age: 3 });
    expect(outbox.droppedByDevice()).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ reason: 'outbox_age', deviceId: 'a', count: 2 }),
        expect.objectContaining({ reason: 'outbox_age', deviceId: 'b', count: 1 }),
      ]),
    );
    const gap = outbox.gaps().find((g) => g.deviceId === 'a');
    expect(gap).toMatchObject({ reason: 'outbox_age', count: 2, firstDeviceSeq: 1, lastDeviceSeq: 2, firstTs: now - 40 * DAY_MS });
  });

  it('refuses a group that does not fit under refuse-new, whole, and drops nothing', () => {
    const { open } = place();
    const outbox = open({ maxRows: 3, whenFull: 'refuse-new' });
    expect(outbox.append([reading(1), reading(2)])).toMatchObject({ refused: 0 });
    const result = outbox.append([reading(3), reading(4)]);
    expect(result).toEqual({ seqs: [], droppedSeqs: [], refused: 2 });
    expect(ns(outbox)).toEqual([1, 2]);
    expect(outbox.stats().dropped).toEqual({});
    expect(outbox.append([reading(3)]).seqs).toHaveLength(1);
    outbox.delete(outbox.peek({ limit: 1, maxBytes: 1 << 20, exclude: none }).map((e) => e.seq));
    expect(outbox.append([reading(4)]).seqs).toHaveLength(1);
    expect(ns(outbox)).toEqual([2, 3, 4]);
  });

  it('spares rows in flight when dropping the oldest', () => {
    const { open } = place();
    const outbox = open({ maxRows: 3 });
    const seqs = outbox.append([1, 2, 3].map((n) => reading(n))).seqs;
    const result = outbox.append([reading(4)], { inFlight: new Set([seqs[0]!]) });
    expect(result.droppedSeqs).toEqual([seqs[1]]);
    expect(ns(outbox)).toEqual([1, 3, 4]);
  });

  it('counts drops per device and reason, and the counts survive a restart', () => {
    const { open } = place();
    const first = open({ maxRows: 2 });
    first.append([reading(1, 'a'), reading(2, 'b'), reading(3, 'a'), reading(4, 'c')]);
    first.close();
    const second = open({ maxRows: 2 });
    expect(second.droppedByDevice()).toEqual([
      { reason: 'outbox_full', deviceId: 'a', count: 1 },
      { reason: 'outbox_full', deviceId: 'b', count: 1 },
    ]);
    expect(second.stats().dropped).toEqual({ outbox_full: 2 });
  });
});

describe('gap records', () => {
  it('names each loss: device, first and last seq, time and device seq, count and reason', () => {
    const { open } = place();
    const outbox = open({ maxRows: 2 });
    const seqs = outbox.append([reading(1, 'a', T0 + 10, 100), reading(2, 'b', T0 + 20), reading(3, 'a', T0 + 30, 101), reading(4, 'a', T0 + 40, 102)]).seqs;
    const gaps = outbox.gaps();
    expect(gaps).toHaveLength(2);
    expect(gaps.find((g) => g.deviceId === 'a')).toMatchObject({
      reason: 'outbox_full',
      count: 1,
      firstSeq: seqs[0],
      lastSeq: seqs[0],
      firstTs: T0 + 10,
      lastTs: T0 + 10,
      firstDeviceSeq: 100,
      lastDeviceSeq: 100,
    });
    expect(gaps.find((g) => g.deviceId === 'b')).toMatchObject({ count: 1, firstSeq: seqs[1], firstDeviceSeq: null });
  });

  it('merges consecutive drops of one device and reason into one record', () => {
    const { open } = place();
    const outbox = open({ maxRows: 1 });
    const seqs = [...outbox.append([reading(1, 'a', T0 + 1, 1)]).seqs];
    for (let n = 2; n <= 5; n += 1) seqs.push(...outbox.append([reading(n, 'a', T0 + n, n)]).seqs);
    const gaps = outbox.gaps();
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatchObject({ deviceId: 'a', count: 4, firstSeq: seqs[0], lastSeq: seqs[3], firstTs: T0 + 1, lastTs: T0 + 4, firstDeviceSeq: 1, lastDeviceSeq: 4 });
  });

  it('starts a new record once a reading of the device reached the database in between', () => {
    const { open } = place();
    const outbox = open({ maxRows: 2 });
    outbox.append([reading(1, 'a'), reading(2, 'a'), reading(3, 'a')]);
    // Reading 2 is delivered; then reading 3 is dropped: not next to the first loss.
    const [two] = outbox.peek({ limit: 1, maxBytes: 1 << 20, exclude: none });
    outbox.delete([two!.seq]);
    outbox.append([reading(4, 'a'), reading(5, 'a')]);
    const gaps = outbox.gaps();
    expect(gaps.map((g) => g.count).sort()).toEqual([1, 1]);
  });
});
