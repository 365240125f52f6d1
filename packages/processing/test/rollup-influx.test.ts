// Ferry's tumbling-window rollups equal what a real InfluxDB 1.x computes with
// GROUP BY time(1m) over the same raw points, including readings that arrived late.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Reading } from '@ferry/protocol';
import { createInfluxV1Sink, defaultPointMapping, readingToPoint } from '@ferry/sinks';
import { startInfluxd, type InfluxdHandle } from '@ferry/testkit';
import { createPipeline } from '../src/index.js';

const MIN = 60_000;
const T0 = 1_700_000_000_000 - (1_700_000_000_000 % (60 * MIN));
const DB = 'rollups';

/** Deterministic pseudo-random numbers (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Raw readings of two devices over 12 minutes at irregular times, in a slightly shuffled arrival order. */
function rawReadings(): Reading[] {
  const rand = random(8);
  const readings: Reading[] = [];
  let seq = 0;
  for (const deviceId of ['meter-1', 'meter-2']) {
    let ts = T0 + Math.floor(rand() * 3000);
    let v = 230;
    while (ts < T0 + 12 * MIN) {
      v += (rand() - 0.5) * 4;
      const value = Math.round(v * 1000) / 1000;
      readings.push({ seq: ++seq, deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts, metrics: { v: value } });
      ts += 200 + Math.floor(rand() * 4000);
    }
  }
  // Arrival order: by time, each reading delayed by up to 20 s, so some land after their window closed.
  return readings
    .map((r) => ({ r, arrives: r.ts + (rand() < 0.1 ? rand() * 20_000 : 0) }))
    .sort((a, b) => a.arrives - b.arrives)
    .map((x) => x.r);
}

describe('rollups against InfluxDB 1.x', () => {
  let influxd: InfluxdHandle;

  beforeAll(async () => {
    influxd = await startInfluxd();
    await influxd.createDatabase(DB);
  });
  afterAll(async () => {
    await influxd?.stop();
  });

  it('count, sum, mean, min, max, first and last per device and minute equal InfluxQL GROUP BY time(1m)', async () => {
    const readings = rawReadings();
    const sink = createInfluxV1Sink({ url: influxd.url, database: DB });
    const mapping = { ...defaultPointMapping, measurement: 'm' };
    const result = await sink.write(readings.map((r) => readingToPoint(r, 'gw-1', mapping)));
    await sink.close();
    expect(result).toEqual({ written: readings.length, rejected: [] });

    const pipeline = createPipeline(
      { pipelines: [{ match: { metric: 'v' }, steps: [{ op: 'rollup', window: '1m', allowedLatenessMs: 30_000, aggregates: ['count', 'sum', 'mean', 'min', 'max', 'first', 'last'] }] }] },
      { now: () => T0 + 60 * MIN },
    );
    const rollups = new Map<string, Reading>();
    const keep = (r: Reading) => {
      // A corrected window overwrites the earlier emission, as it does in the database.
      if (r.flags?.includes('rollup')) rollups.set(`${r.deviceId} ${r.ts}`, r);
    };
    for (const r of readings) pipeline.process(r).forEach(keep);
    pipeline.flush(Infinity).forEach(keep);
    const stats = pipeline.stats().ops.rollup!;
    expect(stats.dropped_late ?? 0).toBe(0);
    expect(stats.corrected).toBeGreaterThan(0);

    const series = await influxd.query(
      DB,
      `SELECT count(v), sum(v), mean(v), min(v), max(v), first(v), last(v) FROM m WHERE time >= ${T0}ms AND time < ${T0 + 15 * MIN}ms GROUP BY time(1m), "device" fill(none)`,
      { epoch: 'ms' },
    );
    expect(series.map((s) => s.tags?.device).sort()).toEqual(['meter-1', 'meter-2']);
    let windows = 0;
    for (const s of series) {
      expect(s.columns).toEqual(['time', 'count', 'sum', 'mean', 'min', 'max', 'first', 'last']);
      for (const row of s.values) {
        const [time, count, sum, mean, min, max, first, last] = row as number[];
        const ours = rollups.get(`${s.tags!.device} ${time}`);
        expect(ours, `rollup for ${s.tags!.device} at ${time}`).toBeDefined();
        const m = ours!.metrics;
        expect(m.v_count).toBe(count);
        expect(m.v_sum).toBeCloseTo(sum!, 6);
        expect(m.v_mean).toBeCloseTo(mean!, 9);
        expect(m.v_min).toBe(min);
        expect(m.v_max).toBe(max);
        expect(m.v_first).toBe(first);
        expect(m.v_last).toBe(last);
        windows++;
      }
    }
    // Every window Ferry emitted is one the database has, and the other way round.
    expect(windows).toBe(rollups.size);
    expect(windows).toBeGreaterThanOrEqual(24);
  });
});
