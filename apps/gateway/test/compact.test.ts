// Compaction's arithmetic, pure: grouping per series and interval, count/min/max/mean, last value
// of non-numeric metrics, the summary's shape and limits; checked against a plain reference.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DeviceReading, MetricValue } from '@ferry/protocol';
import {
  COMPACTED_COUNT_METRIC,
  COMPACTED_FLAG,
  intervalStart,
  isSummary,
  readingsRepresented,
  SentRanges,
  summarise,
} from '../src/compact.js';

const MINUTE = 60_000;
const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const limits = { maxMetricsPerReading: 256, maxNameLength: 128 };

function reading(deviceId: string, ts: number, metrics: Record<string, MetricValue>, extra: Partial<DeviceReading> = {}): DeviceReading {
  return { deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts + 5, metrics, ...extra };
}

describe('compaction summaries', () => {
  it('folds readings into one summary per device and interval, with count, min, max and mean', () => {
    const rows = [
      { seq: 10, reading: reading('a', T0 + 1_000, { t: 20, ok: true, mode: 'eco' }, { deviceSeq: 1 }) },
      { seq: 11, reading: reading('b', T0 + 2_000, { t: 5 }) },
      { seq: 12, reading: reading('a', T0 + 30_000, { t: 22, ok: false, mode: 'boost' }, { deviceSeq: 2 }) },
      { seq: 13, reading: reading('a', T0 + 59_999, { t: 27 }) },
      { seq: 14, reading: reading('a', T0 + MINUTE, { t: 100 }) },
    ];
    const { summaries, left } = summarise(rows, MINUTE, limits);
    expect(left).toEqual([]);
    expect(summaries).toHaveLength(3);
    const [a0, b0, a1] = summaries;
    expect(a0?.seqs).toEqual([10, 12, 13]);
    expect(a0?.reading).toEqual({
      deviceId: 'a',
      kind: 'telemetry',
      ts: T0,
      tsSource: 'device',
      receivedAt: T0 + 1_005,
      metrics: { t: 23, t_count: 3, t_min: 20, t_max: 27, ok: false, mode: 'boost', [COMPACTED_COUNT_METRIC]: 3 },
      flags: [COMPACTED_FLAG],
    });
    expect(a0?.reading.deviceSeq).toBeUndefined();
    expect(b0?.seqs).toEqual([11]);
    expect(a1?.seqs).toEqual([14]);
    expect(a1?.reading.ts).toBe(T0 + MINUTE);
  });

  it('keeps series with different tags, kinds or time sources apart', () => {
    const rows = [
      { seq: 1, reading: reading('a', T0, { t: 1 }, { tags: { room: 'x' } }) },
      { seq: 2, reading: reading('a', T0 + 1, { t: 2 }, { tags: { room: 'y' } }) },
      { seq: 3, reading: reading('a', T0 + 2, { t: 3 }, { tsSource: 'gateway' }) },
      { seq: 4, reading: reading('a', T0 + 3, { t: 4 }, { kind: 'status' }) },
      { seq: 5, reading: reading('a', T0 + 4, { t: 5 }, { tags: { room: 'x' } }) },
    ];
    const { summaries } = summarise(rows, MINUTE, limits);
    expect(summaries.map((s) => s.seqs)).toEqual([[1, 5], [2], [3], [4]]);
    expect(summaries[0]?.reading.tags).toEqual({ room: 'x' });
  });

  it('keeps a metric that is not a number in every reading as its last value by time', () => {
    const rows = [
      { seq: 1, reading: reading('a', T0 + 3, { v: 1 }) },
      { seq: 2, reading: reading('a', T0 + 9, { v: 'off' }) },
      { seq: 3, reading: reading('a', T0 + 5, { v: 2 }) },
    ];
    const { summaries } = summarise(rows, MINUTE, limits);
    expect(summaries[0]?.reading.metrics).toEqual({ v: 'off', [COMPACTED_COUNT_METRIC]: 3 });
  });

  it('never overwrites a metric the readings have, and leaves out derived fields past the limits', () => {
    const rows = [
      { seq: 1, reading: reading('a', T0, { t: 1, t_min: 7 }) },
      { seq: 2, reading: reading('a', T0 + 1, { t: 3, t_min: 9 }) },
    ];
    const { summaries } = summarise(rows, MINUTE, limits);
    expect(summaries[0]?.reading.metrics).toMatchObject({ t: 2, t_min: 8, t_count: 2, t_max: 3, t_min_min: 7 });

    const long = 'x'.repeat(125);
    const tight = summarise(
      [
        { seq: 1, reading: reading('a', T0, { [long]: 1, y: 1 }) },
        { seq: 2, reading: reading('a', T0 + 1, { [long]: 3, y: 2 }) },
      ],
      MINUTE,
      { maxMetricsPerReading: 5, maxNameLength: 128 },
    );
    // 2 means + ferry_compacted + room for two more: counts first; the long name's derived fields are too long.
    expect(tight.summaries[0]?.reading.metrics).toEqual({ [long]: 2, y: 1.5, [COMPACTED_COUNT_METRIC]: 2, y_count: 2, y_min: 1 });
  });

  it('leaves out a reading that would take a summary past the metric limit, and summaries already made', () => {
    const rows = [
      { seq: 1, reading: reading('a', T0, { m1: 1, m2: 2 }) },
      { seq: 2, reading: reading('a', T0 + 1, { m3: 3 }) },
      { seq: 3, reading: reading('a', T0 + 2, { m1: 5 }) },
      { seq: 4, reading: reading('a', T0 + 3, { m: 1, [COMPACTED_COUNT_METRIC]: 4 }, { flags: [COMPACTED_FLAG] }) },
      { seq: 5, reading: reading('a', T0 + 4, { m_mean: 1 }, { flags: ['rollup'] }) },
    ];
    const { summaries, left } = summarise(rows, MINUTE, { maxMetricsPerReading: 3, maxNameLength: 128 });
    expect(summaries.map((s) => s.seqs)).toEqual([[1, 3]]);
    expect(left.sort()).toEqual([2, 4, 5]);
  });

  it('knows a summary and how many readings it stands for', () => {
    const summary = reading('a', T0, { t: 1, [COMPACTED_COUNT_METRIC]: 12 }, { flags: [COMPACTED_FLAG] });
    expect(isSummary(summary)).toBe(true);
    expect(readingsRepresented(summary)).toBe(12);
    // A device metric of that name on a raw reading means nothing.
    expect(readingsRepresented(reading('a', T0, { [COMPACTED_COUNT_METRIC]: 12 }))).toBe(1);
    expect(isSummary(reading('a', T0, { t: 1 }, { flags: ['clock_unsynced'] }))).toBe(false);
  });

  it('aligns intervals to the epoch, times before 1970 included', () => {
    expect(intervalStart(T0 + 61_234, MINUTE)).toBe(T0 + MINUTE);
    expect(intervalStart(-1, MINUTE)).toBe(-MINUTE);
    expect(intervalStart(-MINUTE, MINUTE)).toBe(-MINUTE);
  });

  it('gives -0 and 0 the same min and max whatever their order (a property-test counterexample)', () => {
    for (const order of [[0, -0], [-0, 0]]) {
      const rows = order.map((h, i) => ({ seq: 100 + i, reading: reading('a', T0 + i, { h }) }));
      const [summary] = summarise(rows, MINUTE, limits).summaries;
      expect(Object.is(summary?.reading.metrics.h_min, Math.min(...order))).toBe(true);
      expect(Object.is(summary?.reading.metrics.h_max, Math.max(...order))).toBe(true);
    }
  });

  it('matches a plain reference for any readings: counts add up, min <= mean <= max', () => {
    const arbRow = fc.record({
      device: fc.constantFrom('a', 'b', 'c'),
      offset: fc.integer({ min: -5 * MINUTE, max: 5 * MINUTE }),
      t: fc.option(fc.integer({ min: -1000, max: 1000 }), { nil: undefined }),
      h: fc.option(fc.double({ min: -1e6, max: 1e6, noNaN: true }), { nil: undefined }),
      s: fc.option(fc.constantFrom('on', 'off'), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(arbRow, { minLength: 1, maxLength: 60 }), fc.constantFrom(1000, MINUTE, 7 * MINUTE), (raw, intervalMs) => {
        const rows = raw.map((r, i) => {
          const metrics: Record<string, MetricValue> = { seen: 1 };
          if (r.t !== undefined) metrics.t = r.t;
          if (r.h !== undefined) metrics.h = r.h;
          if (r.s !== undefined) metrics.s = r.s;
          return { seq: 100 + i, reading: reading(r.device, T0 + r.offset, metrics) };
        });
        const { summaries, left } = summarise(rows, intervalMs, limits);
        expect(left).toEqual([]);
        // Reference: a plain map from (device, interval) to the rows in it.
        const reference = new Map<string, typeof rows>();
        for (const row of rows) {
          const key = `${row.reading.deviceId}|${Math.floor(row.reading.ts / intervalMs)}`;
          reference.set(key, [...(reference.get(key) ?? []), row]);
        }
        expect(summaries).toHaveLength(reference.size);
        expect(summaries.reduce((n, s) => n + (s.reading.metrics[COMPACTED_COUNT_METRIC] as number), 0)).toBe(rows.length);
        for (const s of summaries) {
          const group = reference.get(`${s.reading.deviceId}|${Math.floor(s.reading.ts / intervalMs)}`)!;
          expect(s.seqs).toEqual(group.map((r) => r.seq));
          expect(s.reading.ts % intervalMs).toBe(0);
          expect(s.reading.flags).toEqual([COMPACTED_FLAG]);
          for (const name of ['t', 'h']) {
            const values = group.map((r) => r.reading.metrics[name]).filter((v): v is number => typeof v === 'number');
            if (values.length === 0) {
              expect(s.reading.metrics[name]).toBeUndefined();
              continue;
            }
            const m = s.reading.metrics;
            expect(m[`${name}_count`]).toBe(values.length);
            expect(m[`${name}_min`]).toBe(Math.min(...values));
            expect(m[`${name}_max`]).toBe(Math.max(...values));
            const mean = values.reduce((a, b) => a + b, 0) / values.length;
            expect(m[name] as number).toBeCloseTo(mean, 6);
            expect(m[name] as number).toBeGreaterThanOrEqual((m[`${name}_min`] as number) - 1e-6);
            expect(m[name] as number).toBeLessThanOrEqual((m[`${name}_max`] as number) + 1e-6);
          }
          const strings = [...group].filter((r) => r.reading.metrics.s !== undefined).sort((x, y) => x.reading.ts - y.reading.ts || x.seq - y.seq);
          expect(s.reading.metrics.s).toBe(strings.at(-1)?.reading.metrics.s);
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('sent ranges', () => {
  it('merges ranges and answers membership like a plain set', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 20 })), { maxLength: 30 }), fc.integer({ min: 0, max: 220 }), (adds, floor) => {
        const ranges = new SentRanges();
        const plain = new Set<number>();
        for (const [first, len] of adds) {
          ranges.add(first, first + len);
          for (let s = first; s <= first + len; s++) plain.add(s);
        }
        for (let s = 0; s <= 222; s++) expect(ranges.has(s)).toBe(plain.has(s));
        ranges.forgetBelow(floor);
        for (let s = floor; s <= 222; s++) expect(ranges.has(s)).toBe(plain.has(s));
      }),
      { numRuns: 300 },
    );
  });
});
