// The rollup stage on its own, with a real SQLite file and an in-memory sink: what a failed
// commit leaves behind (nothing), a direct reading taken twice (counted once), windows that
// survive a reopen, quiet series closed by the wall clock, and readings left with no raw point.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { Reading } from '@ferry/protocol';
import { ManualClock, silentLogger } from '@ferry/runtime';
import { defaultPointMapping } from '@ferry/sinks';
import type { Point } from '@ferry/sinks';
import { makeTempDir, waitFor } from '@ferry/testkit';
import { ingestorProcessingSchema } from '../src/process-config.js';
import { createRollups } from '../src/rollup.js';
import type { Rollups } from '../src/rollup.js';
import { createWriter } from '../src/write.js';
import { MemorySink } from './memory-sink.js';

const MIN = 60_000;
const T0 = 1_700_000_000_000 - (1_700_000_000_000 % 3_600_000);
const write = { maxPoints: 100, lingerMs: 0, maxInFlight: 2, retry: { initialMs: 10, maxMs: 10, factor: 1 } };

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function reading(deviceId: string, ts: number, v: number): Reading {
  return { seq: ts - T0, deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts, metrics: { v, label: 'x' } };
}

async function open(dir: string, sink: MemorySink, clock: ManualClock, rollups: unknown = [{ match: { metric: 'v' }, windows: ['1m'], allowedLatenessMs: 0 }], closeIdleAfterMs?: number): Promise<{ db: Database.Database; stage: Rollups }> {
  const db = new Database(join(dir, 'dedupe.db'));
  const config = ingestorProcessingSchema.parse({ rollups, ...(closeIdleAfterMs ? { closeIdleAfterMs } : {}) });
  const stage = createRollups({ config, db, sink, mapping: defaultPointMapping, write, clock, logger: silentLogger() });
  stage.start();
  cleanups.push(() => {
    db.close();
  });
  cleanups.push(() => stage.stop(1000));
  return { db, stage };
}

const rollupPoints = (sink: MemorySink): Point[] => [...sink.points.values()].filter((p) => p.measurement === 'telemetry_1m');

describe('rollup stage', () => {
  it('saves nothing when the commit fails, and counts the retried readings once', async () => {
    const dir = await makeTempDir('rollup-stage');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sink = new MemorySink();
    const { stage } = await open(dir, sink, new ManualClock(T0));
    const first = [reading('d1', T0 + 1000, 1), reading('d1', T0 + 2000, 2)].map((r) => ({ gatewayTag: 'gw', reading: r }));
    expect(() =>
      stage.commit(first, () => {
        throw new Error('disk full');
      }),
    ).toThrow('disk full');
    // The writer retries the chunk: the same readings, now committed.
    stage.commit(first, () => undefined);
    stage.commit([{ gatewayTag: 'gw', reading: reading('d1', T0 + MIN + 1, 5) }], () => undefined);
    await waitFor(() => rollupPoints(sink).length === 1, { timeoutMs: 10_000, what: 'the rollup point' });
    expect(rollupPoints(sink)[0]).toMatchObject({ tags: { device: 'd1', gateway: 'gw' }, fields: { v_count: 2, v_sum: 3, v_mean: 1.5, v_min: 1, v_max: 2 }, timestampNs: BigInt(T0) * 1_000_000n });
  });

  it('counts a direct reading taken twice once, and keeps open windows across a reopen', async () => {
    const dir = await makeTempDir('rollup-stage');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sink = new MemorySink();
    const clock = new ManualClock(T0);
    const a = await open(dir, sink, clock);
    const direct = { gatewayTag: 'direct', reading: reading('d2', T0 + 1000, 4), once: 'd2\u0000abc' };
    a.stage.commit([direct], () => undefined);
    a.stage.commit([direct], () => undefined);
    await a.stage.stop(1000);
    a.db.close();

    const b = await open(dir, sink, clock);
    b.stage.commit([{ gatewayTag: 'direct', reading: reading('d2', T0 + 3000, 6) }], () => undefined);
    b.stage.commit([{ gatewayTag: 'direct', reading: reading('d2', T0 + MIN + 5, 0) }], () => undefined);
    await waitFor(() => rollupPoints(sink).length === 1, { timeoutMs: 10_000, what: 'the rollup point' });
    expect(rollupPoints(sink)[0]!.fields).toMatchObject({ v_count: 2, v_sum: 10 });
  });

  it('starts a series afresh when its saved windows do not fit a changed configuration', async () => {
    const dir = await makeTempDir('rollup-stage');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sink = new MemorySink();
    const clock = new ManualClock(T0);
    const a = await open(dir, sink, clock, [{ match: { metric: 'v' }, windows: ['1m'], aggregates: ['count', 'p50'] }]);
    a.stage.commit([{ gatewayTag: 'gw', reading: reading('d5', T0 + 1000, 1) }], () => undefined);
    await a.stage.stop(1000);
    a.db.close();
    const db = new Database(join(dir, 'dedupe.db'));
    // Corrupt the saved state as a configuration change could leave it unreadable.
    db.prepare("UPDATE rollup_series SET state = '{\"watermark\":\"x\"}'").run();
    db.close();

    const b = await open(dir, sink, clock, [{ match: { metric: 'v' }, windows: ['1m'], aggregates: ['count'] }]);
    b.stage.commit([{ gatewayTag: 'gw', reading: reading('d5', T0 + 2000, 2) }], () => undefined);
    b.stage.commit([{ gatewayTag: 'gw', reading: reading('d5', T0 + MIN + 1, 3) }], () => undefined);
    await waitFor(() => rollupPoints(sink).length === 1, { timeoutMs: 10_000, what: 'the rollup point' });
    expect(rollupPoints(sink)[0]!.fields).toEqual({ v_count: 1 });
    expect(b.stage.stats().counts).toMatchObject({ state_discarded: 1 });
  });

  it('closes a quiet series by the wall clock when closeIdleAfterMs is set', async () => {
    const dir = await makeTempDir('rollup-stage');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sink = new MemorySink();
    const clock = new ManualClock(T0 + 2000);
    const { stage } = await open(dir, sink, clock, undefined, 30_000);
    stage.commit([{ gatewayTag: 'gw', reading: reading('d3', T0 + 1000, 7) }], () => undefined);
    stage.closeIdle(clock.now());
    expect(rollupPoints(sink)).toEqual([]);
    clock.set(T0 + MIN + 40_000);
    stage.closeIdle(clock.now());
    await waitFor(() => rollupPoints(sink).length === 1, { timeoutMs: 10_000, what: 'the idle window' });
    expect(rollupPoints(sink)[0]!.fields).toMatchObject({ v_count: 1, v_sum: 7 });
  });

  it('takes out of the raw point only the metrics of rules with keepRaw false', async () => {
    const dir = await makeTempDir('rollup-stage');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { stage } = await open(dir, new MemorySink(), new ManualClock(T0), [{ match: { metric: 'v' }, windows: ['1m'], keepRaw: false }]);
    expect(stage.rawPart(reading('d4', T0, 1))?.metrics).toEqual({ label: 'x' });
    expect(stage.rawPart({ ...reading('d4', T0, 1), metrics: { v: 1 } })).toBeNull();
    expect(stage.windows()).toEqual([{ windowMs: MIN, window: '1m', measurement: 'telemetry_1m' }]);
  });
});

describe('writer with items that have nothing to write', () => {
  it('confirms them with their chunk and maps refusals back to the items', async () => {
    const sink = new MemorySink();
    sink.refuse = (p) => (p.fields['bad'] === true ? 'bad point' : undefined);
    const confirmed: { items: string[]; rejected: number[] }[] = [];
    const point = (bad: boolean): Point => ({ measurement: 'm', tags: {}, fields: { bad }, timestampNs: BigInt(confirmed.length + (bad ? 1 : 2)) });
    const writer = createWriter<{ id: string; point: Point | null }>({
      sink,
      policy: { ...write, maxPoints: 10, lingerMs: 0 },
      clock: new ManualClock(0),
      confirm: (chunk, result) => confirmed.push({ items: chunk.map((i) => i.id), rejected: result.rejected.map((r) => r.index) }),
    });
    writer.push([
      { id: 'a', point: null },
      { id: 'b', point: point(false) },
      { id: 'c', point: null },
      { id: 'd', point: point(true) },
    ]);
    await writer.stop(5000);
    expect(confirmed).toEqual([{ items: ['a', 'b', 'c', 'd'], rejected: [3] }]);
  });
});
