// The recent-readings buffer (src/recent.ts) on its own: per-device and total bounds, eviction of
// the least recently updated devices, order and filters; checked against a plain reference model.
// Then as the ingestor's health runs it: refused devices keep nothing, forgotten devices are dropped.
import { rmSync } from 'node:fs';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, createRegistry, silentLogger } from '@ferry/runtime';
import { makeTempDir, waitFor } from '@ferry/testkit';
import { createIngestorHealth, healthConfigSchema } from '../src/health.js';
import type { WrittenReading } from '../src/health.js';
import { keptMetrics, RecentReadings } from '../src/recent.js';
import type { RecentReading } from '../src/recent.js';

function r(ts: number, value = ts): RecentReading {
  return { ts, kind: 'telemetry', metrics: { v: value } };
}

const values = (list: readonly RecentReading[]): unknown[] => list.map((x) => x.metrics['v']);

describe('recent readings buffer', () => {
  it('keeps the newest perDevice readings of a device, ordered by ts, newest last', () => {
    const buffer = new RecentReadings({ perDevice: 3, maxTotal: 10 });
    for (let i = 1; i <= 5; i++) buffer.add('a', r(i * 1000));
    expect(values(buffer.readings('a'))).toEqual([3000, 4000, 5000]);
    expect(buffer.stats()).toEqual({ devices: 1, readings: 3, evictedDevices: 0, evictedReadings: 0, trimmedReadings: 0 });
  });

  it('puts a late reading in ts order, ties in arrival order', () => {
    const buffer = new RecentReadings({ perDevice: 5, maxTotal: 10 });
    buffer.add('a', r(2000, 1));
    buffer.add('a', r(3000, 2));
    buffer.add('a', r(1000, 3));
    buffer.add('a', r(2000, 4));
    expect(values(buffer.readings('a'))).toEqual([3, 1, 4, 2]);
  });

  it('filters by sinceTs and keeps the newest within limit', () => {
    const buffer = new RecentReadings({ perDevice: 10, maxTotal: 10 });
    for (let i = 1; i <= 6; i++) buffer.add('a', r(i * 1000));
    expect(values(buffer.readings('a', { sinceTs: 3000 }))).toEqual([3000, 4000, 5000, 6000]);
    expect(values(buffer.readings('a', { sinceTs: 3000, limit: 2 }))).toEqual([5000, 6000]);
    expect(buffer.readings('b')).toEqual([]);
  });

  it('drops the least recently updated devices first to stay under maxTotal, and counts them', () => {
    const buffer = new RecentReadings({ perDevice: 2, maxTotal: 5 });
    buffer.add('a', r(1));
    buffer.add('b', r(2));
    buffer.add('b', r(3));
    buffer.add('c', r(4));
    buffer.add('a', r(5)); // a is now the most recently updated; b the least
    expect(buffer.devices()).toEqual(['b', 'c', 'a']);
    buffer.add('d', r(6)); // 6 readings: b goes, with its two
    expect(buffer.devices()).toEqual(['c', 'a', 'd']);
    expect(buffer.readings('b')).toEqual([]);
    expect(buffer.stats()).toEqual({ devices: 3, readings: 4, evictedDevices: 1, evictedReadings: 2, trimmedReadings: 0 });
  });

  it('forgets devices the caller no longer keeps, without counting evictions', () => {
    const buffer = new RecentReadings({ perDevice: 2, maxTotal: 10 });
    for (const id of ['a', 'b', 'c']) buffer.add(id, r(1));
    expect(buffer.retain((id) => id !== 'b')).toBe(1);
    expect(buffer.devices()).toEqual(['a', 'c']);
    expect(buffer.forget('a')).toBe(true);
    expect(buffer.forget('a')).toBe(false);
    expect(buffer.stats()).toEqual({ devices: 1, readings: 1, evictedDevices: 0, evictedReadings: 0, trimmedReadings: 0 });
  });

  it('keeps numbers and booleans of a reading, at most maxMetrics, and leaves string values out, sharing the object when it can', () => {
    const plain = { t: 20.5, ok: true };
    expect(keptMetrics(plain, 2).metrics).toBe(plain);
    expect(keptMetrics({ t: 1, note: 'x'.repeat(1000), ok: false })).toEqual({ metrics: { t: 1, ok: false }, trimmed: false });
    expect(keptMetrics({ a: 1, note: 'x', b: 2, c: 3 }, 2)).toEqual({ metrics: { a: 1, b: 2 }, trimmed: true });

    const buffer = new RecentReadings({ perDevice: 5, maxTotal: 5, maxMetrics: 2 });
    buffer.add('a', { ts: 1, kind: 'status', metrics: { a: 1, b: 2, c: 3 }, flags: ['f'] });
    buffer.add('a', { ts: 2, kind: 'telemetry', metrics: { a: 4, fw: '1.0' } });
    expect(buffer.readings('a')).toEqual([
      { ts: 1, kind: 'status', metrics: { a: 1, b: 2 }, flags: ['f'] },
      { ts: 2, kind: 'telemetry', metrics: { a: 4 } },
    ]);
    expect(buffer.stats().trimmedReadings).toBe(1);
  });

  it('refuses bounds it could not keep', () => {
    expect(() => new RecentReadings({ perDevice: 0, maxTotal: 10 })).toThrow(RangeError);
    expect(() => new RecentReadings({ perDevice: 10, maxTotal: 9 })).toThrow(RangeError);
    expect(() => new RecentReadings({ perDevice: 1, maxTotal: 9, maxMetrics: 0 })).toThrow(RangeError);
    expect(() => healthConfigSchema.parse({ recentReadings: { perDevice: 10, maxTotal: 9 } })).toThrow(/maxTotal/);
    expect(healthConfigSchema.parse({}).recentReadings).toEqual({ perDevice: 100, maxMetrics: 32, maxTotal: 100_000 });
  });

  it('matches a plain reference model under any sequence of adds and forgets', () => {
    type Op = { op: 'add'; device: string; ts: number } | { op: 'forget'; device: string };
    const device = fc.constantFrom('a', 'b', 'c', 'd', 'e');
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 9, arbitrary: fc.record({ op: fc.constant('add' as const), device, ts: fc.integer({ min: 0, max: 50 }) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('forget' as const), device }) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 8 }), fc.array(op, { maxLength: 200 }), (perDevice, extra, ops) => {
        const maxTotal = perDevice + extra;
        const buffer = new RecentReadings({ perDevice, maxTotal });
        // The reference: per device a list in arrival order, devices in update order; evictions by brute force.
        let model: { device: string; items: RecentReading[] }[] = [];
        let evictedDevices = 0;
        let evictedReadings = 0;
        ops.forEach((o, i) => {
          if (o.op === 'forget') {
            buffer.forget(o.device);
            model = model.filter((m) => m.device !== o.device);
            return;
          }
          const reading = r(o.ts, i);
          buffer.add(o.device, reading);
          const entry = model.find((m) => m.device === o.device) ?? { device: o.device, items: [] };
          model = [...model.filter((m) => m !== entry), { device: o.device, items: [...entry.items, reading].slice(-perDevice) }];
          while (model.reduce((n, m) => n + m.items.length, 0) > maxTotal) {
            const [gone, ...rest] = model;
            evictedDevices++;
            evictedReadings += gone?.items.length ?? 0;
            model = rest;
          }
        });
        expect(buffer.devices()).toEqual(model.map((m) => m.device));
        for (const m of model) expect(buffer.readings(m.device)).toEqual([...m.items].sort((x, y) => x.ts - y.ts));
        const total = model.reduce((n, m) => n + m.items.length, 0);
        expect(buffer.stats()).toEqual({ devices: model.length, readings: total, evictedDevices, evictedReadings, trimmedReadings: 0 });
      }),
      { numRuns: 300 },
    );
  });
});

describe('recent readings in the ingestor health', () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  function written(clock: ManualClock, deviceId: string, value: number, flags?: string[]): WrittenReading {
    const now = clock.now();
    return {
      gatewayId: 'gw1',
      origin: 'gateway',
      reading: { seq: value, deviceId, kind: 'telemetry', ts: now, tsSource: 'device', receivedAt: now, metrics: { temperature: value, firmware: '1.2.3' }, tags: { site: 'x' }, ...(flags ? { flags } : {}) },
    };
  }

  it('keeps what the model tracks, drops forgotten devices on the tick, and counts evictions in /metrics', async () => {
    const dataDir = await makeTempDir('health-recent');
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const clock = new ManualClock(Date.UTC(2026, 10, 25, 12, 0, 0));
    const registry = createRegistry();
    const config = healthConfigSchema.parse({
      tickMs: 20,
      flushIntervalMs: 50,
      defaults: { maxDevices: 3, forgetAfter: '7d', graceMs: 0 },
      recentReadings: { perDevice: 2, maxTotal: 4 },
      notifiers: { log: false },
    });
    const health = createIngestorHealth({ config, dataDir, brokerUrl: 'mqtt://127.0.0.1:1', clock, logger: silentLogger(), links: () => ({ broker: true, sink: true }), deadLetters: () => 0, registry });
    cleanups.push(() => health.close());
    await health.start();

    health.observeWritten([written(clock, 'a', 1), written(clock, 'b', 2, ['clock_unsynced'])]);
    clock.advance(1000);
    health.observeWritten([written(clock, 'a', 3), written(clock, 'c', 4), written(clock, 'd', 5)]);
    // d is beyond maxDevices: the model refuses it, so it has no page and nothing is kept for it.
    expect(health.recent.devices()).toEqual(['b', 'a', 'c']);
    expect(health.recentReadings('a', 60_000, 10)).toEqual([
      { ts: clock.now() - 1000, kind: 'telemetry', metrics: { temperature: 1 } },
      { ts: clock.now(), kind: 'telemetry', metrics: { temperature: 3 } },
    ]);
    expect(health.recentReadings('b', 60_000, 10)).toEqual([{ ts: clock.now() - 1000, kind: 'telemetry', metrics: { temperature: 2 }, flags: ['clock_unsynced'] }]);
    // Only readings within sinceMs of the health clock.
    expect(health.recentReadings('a', 500, 10).map((x) => x.metrics['temperature'])).toEqual([3]);

    // A fifth reading: b, the least recently updated, is evicted whole.
    health.observeWritten([written(clock, 'c', 6)]);
    expect(health.recent.devices()).toEqual(['a', 'c']);
    const text = await registry.metrics();
    expect(text).toMatch(/^ferry_health_recent_devices_evicted_total 1$/m);
    expect(text).toMatch(/^ferry_health_recent_readings_evicted_total 1$/m);
    expect(text).toMatch(/^ferry_health_recent_readings 4$/m);
    expect(text).toMatch(/^ferry_health_recent_readings_trimmed_total 0$/m);

    // c keeps talking; a falls silent for a week and is forgotten by the model, then by the buffer.
    clock.advance(4 * 86_400_000);
    health.observeWritten([written(clock, 'c', 7)]);
    clock.advance(3 * 86_400_000);
    await waitFor(() => !health.recent.has('a'), { timeoutMs: 20_000, what: 'device a dropped from the recent readings' });
    expect(health.monitor.fleet.device('a')).toBeUndefined();
    expect(health.recent.devices()).toEqual(['c']);
    expect(health.recent.stats().evictedDevices).toBe(1);
  });
});
