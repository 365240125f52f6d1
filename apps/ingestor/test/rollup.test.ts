// Continuous rollups at the ingestor, against a real influxd 1.x: the rollup points Ferry writes
// equal what InfluxQL GROUP BY time(1m) computes over the raw points Ferry wrote, with a late
// reading correcting its window; keepRaw=false writes only rollups; an ingestor restarted in
// the middle of a window (with the last batch's ack lost, so the gateway resends it) neither
// loses nor doubles that window; and two ingestors sharing the load by partition stay exact.
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { createInfluxV1Sink } from '@ferry/sinks';
import type { Sink } from '@ferry/sinks';
import { makeTempDir, startInfluxd, startMosquitto, waitFor } from '@ferry/testkit';
import type { InfluxdHandle, ServerHandle } from '@ferry/testkit';
import { createIngestor, partitionHash } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { GatewayPeer } from './peer.js';
import { countPoints } from './influx-count.js';

const MIN = 60_000;
/** Three hours ago, on the hour: old enough that no window is still filling by the wall clock. */
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / 3_600_000) * 3_600_000;
const AGGREGATES = ['count', 'sum', 'mean', 'min', 'max', 'first', 'last'] as const;

let influxd: InfluxdHandle;
let broker: ServerHandle;
const cleanups: (() => Promise<void> | void)[] = [];
beforeAll(async () => {
  [influxd, broker] = await Promise.all([startInfluxd(), startMosquitto()]);
});
afterAll(async () => {
  await Promise.all([influxd?.stop(), broker?.stop()]);
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

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

/** Readings of `devices` at irregular times (never two in one millisecond) over [from, to), gateway seqs from `seq`. */
function series(devices: readonly string[], from: number, to: number, seed: number, seq = 1): Reading[] {
  const rand = random(seed);
  const out: Reading[] = [];
  for (const deviceId of devices) {
    let ts = from + Math.floor(rand() * 2000);
    let v = 230;
    while (ts < to) {
      v += (rand() - 0.5) * 4;
      out.push({ seq: 0, deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts + 50, metrics: { v: Math.round(v * 1000) / 1000 } });
      ts += 700 + Math.floor(rand() * 5000);
    }
  }
  return out.sort((a, b) => a.ts - b.ts).map((r, i) => ({ ...r, seq: seq + i }));
}

/** One reading per device far after `to`: its event time closes every window before it. */
function closing(devices: readonly string[], ts: number, seq: number): Reading[] {
  return devices.map((deviceId, i) => ({ seq: seq + i, deviceId, kind: 'telemetry', ts: ts + i, tsSource: 'device', receivedAt: ts + i, metrics: { v: 1 } }));
}

async function sendAll(gw: GatewayPeer, batches: readonly (readonly Reading[])[], firstBatchId: number): Promise<number> {
  let batchId = firstBatchId;
  for (const b of batches) {
    await gw.send(batchId, b);
    await gw.waitAck(batchId, 30_000);
    batchId++;
  }
  return batchId;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

async function startIngestor(
  dataDir: string,
  db: string,
  rollup: Record<string, unknown>,
  name: string,
  partition?: { index: number; count: number },
): Promise<{ ingestor: Ingestor; sink: Sink }> {
  const sink = createInfluxV1Sink({ url: influxd.url, database: db });
  const config: IngestorConfigInput = {
    ingestorId: `${name}-${process.pid}`,
    dataDir,
    broker: { url: broker.url },
    write: { lingerMs: 5 },
    http: false,
    health: { enabled: false },
    logLevel: 'silent',
    processing: { rollups: [{ match: { metric: 'v' }, windows: ['1m'], aggregates: [...AGGREGATES], allowedLatenessMs: 2 * MIN, ...rollup }] },
    ...(partition ? { partition } : {}),
  };
  const ingestor = createIngestor(config, { logger: silentLogger(), sink });
  await ingestor.ready();
  return { ingestor, sink };
}

type Row = Record<(typeof AGGREGATES)[number], number>;

/** `device minute` (or `device gateway minute` when byGateway) -> row. */
function rows(series: Awaited<ReturnType<InfluxdHandle['query']>>, byGateway: boolean): Map<string, Row> {
  const out = new Map<string, Row>();
  for (const s of series) {
    for (const row of s.values) {
      const [time, count, sum, mean, min, max, first, last] = row as number[];
      const key = byGateway ? `${s.tags?.device} ${s.tags?.gateway} ${time}` : `${s.tags?.device} ${time}`;
      out.set(key, { count: count!, sum: sum!, mean: mean!, min: min!, max: max!, first: first!, last: last! });
    }
  }
  return out;
}

/** InfluxQL's own aggregates of the raw points, per device (and gateway) and minute, in [from, to). */
async function influxAggregates(db: string, from: number, to: number, byGateway = false): Promise<Map<string, Row>> {
  const series = await influxd.query(
    db,
    `SELECT count(v), sum(v), mean(v), min(v), max(v), first(v), last(v) FROM telemetry WHERE time >= ${from}ms AND time < ${to}ms GROUP BY time(1m), "device"${byGateway ? ', "gateway"' : ''} fill(none)`,
    { epoch: 'ms' },
  );
  return rows(series, byGateway);
}

/** The rollup points Ferry wrote, per device (and gateway) and minute, in [from, to). */
async function ferryRollups(db: string, from: number, to: number, byGateway = false): Promise<Map<string, Row>> {
  const series = await influxd.query(
    db,
    `SELECT v_count, v_sum, v_mean, v_min, v_max, v_first, v_last FROM telemetry_1m WHERE time >= ${from}ms AND time < ${to}ms GROUP BY "device", "gateway"`,
    { epoch: 'ms' },
  );
  return rows(series, byGateway);
}

function sameAggregates(ours: ReadonlyMap<string, Row>, theirs: ReadonlyMap<string, Row>): boolean {
  if (ours.size !== theirs.size) return false;
  for (const [key, t] of theirs) {
    const o = ours.get(key);
    if (!o || o.count !== t.count || o.min !== t.min || o.max !== t.max || o.first !== t.first || o.last !== t.last) return false;
    if (Math.abs(o.sum - t.sum) > 1e-6 || Math.abs(o.mean - t.mean) > 1e-9) return false;
  }
  return true;
}

/** Waits until Ferry's rollups equal InfluxQL's aggregates over [from, to) (the rollup writer is asynchronous), then checks them field by field. */
async function expectRollupsMatchInflux(db: string, from: number, to: number, minWindows: number, byGateway = false): Promise<Map<string, Row>> {
  let last: { ours: Map<string, Row>; theirs: Map<string, Row> } | undefined;
  try {
    await waitFor(
      async () => {
        last = { ours: await ferryRollups(db, from, to, byGateway), theirs: await influxAggregates(db, from, to, byGateway) };
        return sameAggregates(last.ours, last.theirs);
      },
      { timeoutMs: 30_000, what: 'the rollups to equal InfluxQL GROUP BY time(1m)' },
    );
  } catch (err) {
    // Show the difference rather than only the timeout.
    expect(last?.ours).toEqual(last?.theirs);
    throw err;
  }
  const { ours, theirs } = last!;
  for (const [key, t] of theirs) {
    const o = ours.get(key)!;
    expect(o.count, key).toBe(t.count);
    expect(o.sum, key).toBeCloseTo(t.sum, 6);
    expect(o.mean, key).toBeCloseTo(t.mean, 9);
    expect([o.min, o.max, o.first, o.last], key).toEqual([t.min, t.max, t.first, t.last]);
  }
  expect(theirs.size).toBeGreaterThanOrEqual(minWindows);
  return ours;
}

describe('ingestor rollups against InfluxDB 1.x', () => {
  it('equal InfluxQL GROUP BY time(1m) over the raw points, a late reading correcting its window', async () => {
    const db = 'rollups_equal';
    await influxd.createDatabase(db);
    const dir = await makeTempDir('rollup-equal');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { ingestor, sink } = await startIngestor(dir, db, {}, 'rollup-equal');
    cleanups.push(() => sink.close());
    cleanups.push(() => ingestor.close());
    const gw = await GatewayPeer.connect(broker.url, `gw-rollup-equal-${process.pid}`);
    cleanups.push(() => gw.close());

    const devices = ['meter-1', 'meter-2'];
    const all = series(devices, T0, T0 + 10 * MIN, 8);
    // One reading of minute 3 arrives late: after minute 4 is under way, within the lateness.
    const late = all.find((r) => r.deviceId === 'meter-1' && r.ts >= T0 + 3 * MIN + 10_000 && r.ts < T0 + 4 * MIN)!;
    const onTime = all.filter((r) => r !== late);
    const cut = onTime.findIndex((r) => r.ts >= T0 + 5 * MIN + 30_000);
    let batchId = await sendAll(gw, chunks(onTime.slice(0, cut), 25), 1);
    // Minute 3 of meter-1 has been written without the late reading by now.
    await waitFor(async () => (await ferryRollups(db, T0 + 3 * MIN, T0 + 4 * MIN)).has(`meter-1 ${T0 + 3 * MIN}`), { timeoutMs: 30_000, what: 'the first version of minute 3' });
    const before = (await ferryRollups(db, T0 + 3 * MIN, T0 + 4 * MIN)).get(`meter-1 ${T0 + 3 * MIN}`)!;
    batchId = await sendAll(gw, [[late]], batchId);
    batchId = await sendAll(gw, chunks(onTime.slice(cut), 25), batchId);
    await sendAll(gw, [closing(devices, T0 + 30 * MIN, all.length + 1)], batchId);

    const ours = await expectRollupsMatchInflux(db, T0, T0 + 10 * MIN, 20);
    // The late reading was counted: its window was written again, at the same point.
    expect(ours.get(`meter-1 ${T0 + 3 * MIN}`)!.count).toBe(before.count + 1);
  });

  it('with keepRaw false writes only the rollups', async () => {
    const db = 'rollups_only';
    await influxd.createDatabase(db);
    const dir = await makeTempDir('rollup-only');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { ingestor, sink } = await startIngestor(dir, db, { keepRaw: false }, 'rollup-only');
    cleanups.push(() => sink.close());
    cleanups.push(() => ingestor.close());
    const gw = await GatewayPeer.connect(broker.url, `gw-rollup-only-${process.pid}`);
    cleanups.push(() => gw.close());

    const all = series(['meter-9'], T0, T0 + 4 * MIN, 3);
    const batchId = await sendAll(gw, chunks(all, 30), 1);
    await sendAll(gw, [closing(['meter-9'], T0 + 30 * MIN, all.length + 1)], batchId);

    // Every reading acked as written, none of them written raw.
    expect(ingestor.stats().written).toBe(all.length + 1);
    await waitFor(async () => (await countPoints(influxd, db, 'v_count', 'telemetry_1m')) === 4, { timeoutMs: 30_000, what: 'four 1m rollup points' });
    expect(await countPoints(influxd, db, 'v')).toBe(0);
    const rollups = await ferryRollups(db, T0, T0 + 4 * MIN);
    expect([...rollups.values()].reduce((n, r) => n + r.count, 0)).toBe(all.length);
  });

  it('an ingestor restarted in the middle of a window, its last ack lost, neither loses nor doubles the window', async () => {
    const db = 'rollups_restart';
    await influxd.createDatabase(db);
    const dir = await makeTempDir('rollup-restart');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const gw = await GatewayPeer.connect(broker.url, `gw-rollup-restart-${process.pid}`);
    cleanups.push(() => gw.close());
    const devices = ['meter-1', 'meter-2', 'meter-3'];
    const all = series(devices, T0, T0 + 4 * MIN, 21);
    // Cut in the middle of minute 2.
    const cut = all.findIndex((r) => r.ts >= T0 + 2 * MIN + 30_000);
    const firstHalf = chunks(all.slice(0, cut), 20);

    const first = await startIngestor(dir, db, {}, 'rollup-restart');
    let batchId = await sendAll(gw, firstHalf, 1);
    await first.ingestor.close();
    await first.sink.close();

    const second = await startIngestor(dir, db, {}, 'rollup-restart');
    cleanups.push(() => second.sink.close());
    cleanups.push(() => second.ingestor.close());
    // The gateway never saw the last ack: it resends that batch, which is a duplicate now.
    const resent = batchId - 1;
    gw.acks.splice(gw.acks.findIndex((a) => a.batchId === resent), 1);
    await sendAll(gw, [firstHalf[firstHalf.length - 1]!], resent);
    expect(second.ingestor.stats().duplicates).toBe(firstHalf[firstHalf.length - 1]!.length);
    batchId = await sendAll(gw, chunks(all.slice(cut), 20), batchId);
    await sendAll(gw, [closing(devices, T0 + 30 * MIN, all.length + 1)], batchId);

    const ours = await expectRollupsMatchInflux(db, T0, T0 + 4 * MIN, 12);
    expect([...ours.values()].reduce((n, r) => n + r.count, 0)).toBe(all.length);
  });
  it('stay exact with two ingestors sharing the load by partition, a device moving between gateways getting one series per gateway', async () => {
    const db = 'rollups_partition';
    await influxd.createDatabase(db);
    const dirs = [await makeTempDir('rollup-part-0'), await makeTempDir('rollup-part-1')];
    cleanups.push(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    const ingestors = [];
    for (const index of [0, 1]) {
      const started = await startIngestor(dirs[index]!, db, {}, `rollup-part-${index}`, { index, count: 2 });
      cleanups.push(() => started.sink.close());
      cleanups.push(() => started.ingestor.close());
      ingestors.push(started.ingestor);
    }
    // One gateway owned by each ingestor.
    const gatewayOf = (index: number): string => {
      for (let i = 0; ; i++) {
        const id = `gw-part-${process.pid}-${i}`;
        if (partitionHash(id) % 2 === index) return id;
      }
    };
    const gws = [await GatewayPeer.connect(broker.url, gatewayOf(0)), await GatewayPeer.connect(broker.url, gatewayOf(1))];
    cleanups.push(() => Promise.all(gws.map((g) => g.close())).then(() => undefined));

    // meter-a reports through gateway 0, meter-b through gateway 1, and meter-c moves from one to the other mid-minute.
    const a = series(['meter-a'], T0, T0 + 3 * MIN, 31, 1);
    const b = series(['meter-b'], T0, T0 + 3 * MIN, 32, 1);
    const c = series(['meter-c'], T0, T0 + 3 * MIN, 33, 1);
    const move = T0 + MIN + 30_000;
    const via0 = [...a, ...c.filter((r) => r.ts < move)].sort((x, y) => x.ts - y.ts).map((r, i) => ({ ...r, seq: i + 1 }));
    const via1 = [...b, ...c.filter((r) => r.ts >= move)].sort((x, y) => x.ts - y.ts).map((r, i) => ({ ...r, seq: i + 1 }));
    const next0 = await sendAll(gws[0]!, chunks(via0, 20), 1);
    const next1 = await sendAll(gws[1]!, chunks(via1, 20), 1);
    await sendAll(gws[0]!, [closing(['meter-a', 'meter-c'], T0 + 30 * MIN, via0.length + 1)], next0);
    await sendAll(gws[1]!, [closing(['meter-b', 'meter-c'], T0 + 30 * MIN, via1.length + 1)], next1);

    // Each ingestor took only its own gateway's readings.
    expect(ingestors.map((i) => i.stats().written)).toEqual([via0.length + 2, via1.length + 2]);
    const ours = await expectRollupsMatchInflux(db, T0, T0 + 3 * MIN, 10, true);
    // meter-c's minute 1 is split between the two gateways' series; together they hold all of it.
    const minute1 = [...ours].filter(([key]) => key.startsWith('meter-c ') && key.endsWith(` ${T0 + MIN}`)).map(([, r]) => r.count);
    expect(minute1).toHaveLength(2);
    expect(minute1.reduce((n, x) => n + x, 0)).toBe(c.filter((r) => r.ts >= T0 + MIN && r.ts < T0 + 2 * MIN).length);
  });
});
