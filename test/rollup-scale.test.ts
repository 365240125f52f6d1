// Issue 20: continuous rollups with several ingestors sharing their state through Redis. A gateway's
// lease moves from one ingestor to the other in the middle of a window, and the rollup points equal
// what one ingestor computes over the same readings (count, sum, min and max exact): the windows
// travel through Redis with the gateway, and the points the first holder completed but could not
// write are written by the next one. Real Redis and brokers (the Ferry broker, leases; Mosquitto 2,
// shared subscription); the ingestors write to one in-memory sink keyed like a time-series database.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { FerryError } from '@ferry/protocol';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import type { Point, Sink, SinkWriteResult } from '@ferry/sinks';
import { createBroker } from '@ferry/broker';
import { makeTempDir, startMosquitto, startRedis, waitFor } from '@ferry/testkit';
import { createIngestor } from '@ferry/ingestor';
import type { Ingestor } from '@ferry/ingestor';
import { GatewayPeer } from '../apps/ingestor/test/peer.js';
import { MemorySink } from '../apps/ingestor/test/memory-sink.js';

const MIN = 60_000;
/** Three hours ago, on the hour: no window is still filling by the wall clock. */
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / 3_600_000) * 3_600_000;
const DEVICES = ['d1', 'd2'];

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Integer values (sums exact whatever the order), a reading every 2-4 s per device over [T0, T0 + 3 min). */
function stream(): Reading[] {
  const out: Reading[] = [];
  DEVICES.forEach((deviceId, d) => {
    for (let ts = T0 + 500 * d, i = 0; ts < T0 + 3 * MIN; ts += 2_000 + ((i * 7919) % 2_000), i++) {
      out.push({ seq: 0, deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts, metrics: { v: ((i * 37 + d * 11) % 50) - 10 } });
    }
  });
  return out.sort((a, b) => a.ts - b.ts).map((r, i) => ({ ...r, seq: i + 1 }));
}

/** What one ingestor writes: per device and window start, count/sum/min/max. */
function expected(readings: readonly Reading[]): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (const r of readings) {
    const v = r.metrics['v'] as number;
    const start = r.ts - (r.ts % MIN);
    const k = `${r.deviceId} ${start}`;
    const w = out.get(k);
    if (!w) out.set(k, { v_count: 1, v_sum: v, v_min: v, v_max: v });
    else Object.assign(w, { v_count: w['v_count']! + 1, v_sum: w['v_sum']! + v, v_min: Math.min(w['v_min']!, v), v_max: Math.max(w['v_max']!, v) });
  }
  return out;
}

function rollupsIn(sink: MemorySink): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (const p of sink.points.values()) {
    if (p.measurement !== 'telemetry_1m') continue;
    const { v_count, v_sum, v_min, v_max } = p.fields as Record<string, number>;
    out.set(`${p.tags['device']} ${Number(p.timestampNs / 1_000_000n)}`, { v_count: v_count!, v_sum: v_sum!, v_min: v_min!, v_max: v_max! });
  }
  return out;
}

/** One ingestor's way to the shared sink; it can be made to fail its rollup writes (retried, never refused). */
class RollupGate implements Sink {
  readonly description = 'gated memory';
  failRollups = false;
  constructor(private readonly inner: MemorySink) {}
  async write(points: readonly Point[]): Promise<SinkWriteResult> {
    if (this.failRollups && points.some((p) => p.measurement === 'telemetry_1m')) throw new FerryError('FERRY_ERR_SINK_UNAVAILABLE', 'rollup writes held back by the test');
    return this.inner.write(points);
  }
  ping = async (): Promise<boolean> => true;
  close = async (): Promise<void> => undefined;
}

async function ingestor(name: string, brokerUrl: string, redisUrl: string, sink: Sink, sharedGroup?: string): Promise<Ingestor> {
  const dir = await makeTempDir(`rollup-scale-${name}`);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const instance = createIngestor(
    {
      ingestorId: `${name}-${process.pid}`,
      dataDir: dir,
      broker: { url: brokerUrl, ...(sharedGroup ? { sharedGroup } : {}) },
      write: { lingerMs: 5, closeTimeoutMs: 500 },
      http: false,
      health: { enabled: false },
      logLevel: 'silent',
      state: { redisUrl, leaseMs: 2_000, heartbeatMs: 200 },
      processing: { rollups: [{ match: { metric: 'v' }, windows: ['1m'], aggregates: ['count', 'sum', 'min', 'max'], allowedLatenessMs: 0 }] },
    },
    { logger: silentLogger(), sink },
  );
  cleanups.push(() => instance.close());
  await instance.ready();
  return instance;
}

async function sendAll(peer: GatewayPeer, readings: readonly Reading[], size: number, firstBatchId: number, between?: () => Promise<void>): Promise<number> {
  let batchId = firstBatchId;
  for (let i = 0; i < readings.length; i += size) {
    // As a gateway does: resent until acked (a batch that reaches no holder, e.g. while the members change, is dropped unacked).
    const items = readings.slice(i, i + size);
    const id = batchId;
    await waitFor(
      async () => {
        await peer.send(id, items);
        return peer.waitAck(id, 1_500).catch(() => undefined);
      },
      { timeoutMs: 30_000, what: `the ack of batch ${id}` },
    );
    expect(peer.ackOf(id)).toMatchObject({ rejected: [] });
    batchId++;
    await between?.();
  }
  return batchId;
}

describe('rollups with ingestors sharing their state in Redis', () => {
  it('equal one ingestor\'s after the gateway\'s lease moves mid-window, the first holder\'s unwritten points written by the next', async () => {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const broker = createBroker({ listen: { port: 0 }, http: false, logLevel: 'silent' });
    await broker.ready();
    cleanups.push(() => broker.close());
    const sink = new MemorySink();
    const gates = [new RollupGate(sink), new RollupGate(sink)];
    // Until the lease moves, rollup points do not reach the database: they wait in the outbox in Redis.
    for (const g of gates) g.failRollups = true;
    const a = await ingestor('lease-a', broker.url!, redis.url, gates[0]!);
    const b = await ingestor('lease-b', broker.url!, redis.url, gates[1]!);
    await waitFor(() => a.stats().cluster?.members.length === 2 && b.stats().cluster?.members.length === 2, { timeoutMs: 10_000, what: 'two members' });
    const peer = await GatewayPeer.connect(broker.url!, 'gw-roll');
    cleanups.push(() => peer.close());

    const readings = stream();
    const closing: Reading[] = DEVICES.map((deviceId, i) => ({ seq: readings.length + 1 + i, deviceId, kind: 'telemetry', ts: T0 + 10 * MIN + i, tsSource: 'device', receivedAt: T0 + 10 * MIN, metrics: { v: 0 } }));
    // Up to 1.5 min: the first window is complete, the second half full.
    const cut = readings.findIndex((r) => r.ts >= T0 + 1.5 * MIN);
    let batchId = await sendAll(peer, readings.slice(0, cut), 7, 1);
    const [holder, next, nextGate] = a.stats().batches > 0 ? [a, b, gates[1]!] : [b, a, gates[0]!];
    expect(next.stats().batches).toBe(0);
    expect(holder.stats().written).toBe(cut);
    expect(rollupsIn(sink).size).toBe(0);

    // The holder goes (its leases released), the other takes the gateway over in the middle of the second window.
    await holder.close();
    nextGate.failRollups = false;
    batchId = await sendAll(peer, readings.slice(cut), 7, batchId);
    await sendAll(peer, closing, 2, batchId);
    expect(next.stats().batches).toBeGreaterThan(0);
    expect(next.stats().written + holder.stats().written).toBe(readings.length + closing.length);

    const want = expected(readings);
    expect(want.size).toBe(6);
    await waitFor(() => rollupsIn(sink).size >= want.size, { timeoutMs: 15_000, what: 'every rollup point' });
    expect(rollupsIn(sink)).toEqual(want);
    expect([...sink.points.values()].filter((p) => p.measurement === 'telemetry').length).toBe(readings.length + closing.length);
  });

  it('equal one ingestor\'s when a shared subscription hands the gateway\'s batches to either ingestor in turn', async () => {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const sink = new MemorySink();
    const a = await ingestor('share-a', mosquitto.url, redis.url, sink, 'ferry-rollups');
    const b = await ingestor('share-b', mosquitto.url, redis.url, sink, 'ferry-rollups');
    const peer = await GatewayPeer.connect(mosquitto.url, 'gw-share');
    cleanups.push(() => peer.close());

    const readings = stream();
    const closing: Reading[] = DEVICES.map((deviceId, i) => ({ seq: readings.length + 1 + i, deviceId, kind: 'telemetry', ts: T0 + 10 * MIN + i, tsSource: 'device', receivedAt: T0 + 10 * MIN, metrics: { v: 0 } }));
    // Each batch once the gateway's lease was let go (200 ms quiet): it may go to either, and its taker loads the windows.
    const released = (): Promise<void> =>
      waitFor(() => a.stats().cluster?.gatewaysHeld === 0 && b.stats().cluster?.gatewaysHeld === 0, { timeoutMs: 10_000, what: 'the gateway let go' }).then(() => undefined);
    const batchId = await sendAll(peer, readings, 9, 1, released);
    await sendAll(peer, closing, 2, batchId);
    expect(a.stats().batches).toBeGreaterThan(0);
    expect(b.stats().batches).toBeGreaterThan(0);
    expect(a.stats().written + b.stats().written).toBe(readings.length + closing.length);

    const want = expected(readings);
    await waitFor(() => rollupsIn(sink).size >= want.size, { timeoutMs: 15_000, what: 'every rollup point' });
    expect(rollupsIn(sink)).toEqual(want);
  });
});
