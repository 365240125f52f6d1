// Issue #20, item 5: three `ferry ingestor` children sharing their state in Redis while one of them
// is kill -9ed every few seconds (or Redis itself is), behind either broker kind, with real
// `ferry gateway` children and VictoriaMetrics. Followed to the end: every PUBACKed reading is in
// VictoriaMetrics exactly once (raw samples), the gateways' outboxes are empty, and the fleet
// counts in Redis say exactly how many readings were written, whichever ingestor wrote them.
// `npx tsc -b` must have run first (the children run apps/ferry/dist/main.js).
import { rm } from 'node:fs/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBroker } from '@ferry/broker';
import { createIngestor } from '@ferry/ingestor';
import { createRegistry, silentLogger } from '@ferry/runtime';
import { makeTempDir, startRedis, waitFor } from '@ferry/testkit';
import { readings } from '../../apps/ingestor/test/fixtures.js';
import { MemorySink } from '../../apps/ingestor/test/memory-sink.js';
import { GatewayPeer } from '../../apps/ingestor/test/peer.js';
import { metricValue } from './processes.js';
import { compareDelivery, expectedSet, mergeExpected, totalOf } from './devices.js';
import type { Delivery } from './devices.js';
import { fleetWritten, ingestorStats, killRotating, publishPaced, startScaleOut, victoriaSamples } from './cluster.js';
import type { KillRecord, ScaleOut, ScaleOutOptions } from './cluster.js';

// 15,000 readings a case: 3 gateways x 4 devices x 1,250, paced at about 500 readings/s (125 per
// device every 3 s) so that they flow for ~30 s whatever the machine's speed, and the faults land
// while they do.
const GATEWAYS = 3;
const DEVICES_PER_GATEWAY = 4;
const PER_DEVICE = 1_250;
const STEP = 125;
const STEP_MS = 3_000;
const INGESTORS = 3;

// Shortened so that a dead ingestor's gateways move within a second or two and the case stays
// quick. The shipped defaults are state.leaseMs 5,000 and state.heartbeatMs 1,000 (apps/ingestor/
// src/config.ts) and uplink.ackTimeoutMs 15,000 (apps/gateway/src/config.ts): the same faults, only
// slower to resolve.
const TIMING = { leaseMs: 2_000, heartbeatMs: 300, ackTimeoutMs: 3_000 } as const;
/** A kill -9 every 3 s, rotating over the three ingestors. */
const KILL_EVERY_MS = 3_000;

interface CaseReport {
  readonly name: string;
  readonly readings: number;
  readonly kills: number;
  readonly lost: number;
  readonly duplicates: number;
  readonly seconds: number;
}
const reports: CaseReport[] = [];
let deployment: ScaleOut | undefined;

afterEach(async () => {
  await deployment?.close();
  deployment = undefined;
});

afterAll(() => {
  for (const r of reports) {
    process.stderr.write(`[scale-out] ${r.name}: readings=${r.readings} kills=${r.kills} lost=${r.lost} duplicates=${r.duplicates} seconds=${r.seconds}\n`);
  }
});

function devicesOf(gatewayId: string): string[] {
  return Array.from({ length: DEVICES_PER_GATEWAY }, (_, d) => `${gatewayId}-d${d}`);
}

interface Outcome {
  readonly expected: Map<string, Set<number>>;
  readonly delivery: Delivery;
  /** device:n -> ingestor@sample time, for readings with more than one sample. */
  readonly writersOfDuplicates: Map<string, string[]>;
  readonly fleet: Record<string, number>;
  readonly faults: number;
  readonly seconds: number;
}

/**
 * Devices publish through every gateway while `faults` runs (until it is told the run is over:
 * every device reading PUBACKed and every outbox empty), then waits until the system settled by
 * itself and returns what VictoriaMetrics and Redis hold.
 */
async function runWithFaults(scale: ScaleOut, faults: (over: () => Promise<boolean>) => Promise<number>): Promise<Outcome> {
  const started = Date.now();
  // Device times from the clock now, a little in the past: reading n of a device is at baseTs + n ms.
  const baseTs = Date.now() - 10 * 60_000;
  let publishingOver = false;
  const publishing = Promise.all(
    scale.gateways.map((g) => publishPaced({ url: g.deviceUrl, deviceIds: devicesOf(g.id), count: PER_DEVICE, step: STEP, stepMs: STEP_MS, baseTs, deadlineMs: 300_000 })),
  ).finally(() => {
    publishingOver = true;
  });
  // A publishing failure must not wait for the fault schedule to notice.
  publishing.catch(() => undefined);
  const faultCount = await faults(async () => publishingOver && (await scale.outboxDepth()) === 0);
  const results = await publishing;
  const expected = mergeExpected(...results.map(expectedSet));
  const total = totalOf(expected);
  const range = { start: baseTs - 1_000, end: baseTs + PER_DEVICE + 1_000 };

  await waitFor(
    async () => {
      if ((await scale.outboxDepth()) !== 0) return false;
      const fleet = Object.values(await fleetWritten(scale.redis.url)).reduce((a, b) => a + b, 0);
      if (fleet < total) return false;
      return compareDelivery(expected, (await victoriaSamples(scale.vm, range)).copies).missing.length === 0;
    },
    { timeoutMs: 180_000, intervalMs: 500, what: 'every outbox to drain and every reading to be in VictoriaMetrics and counted in Redis' },
  ).catch(async (err: unknown) => {
    const delivery = compareDelivery(expected, (await victoriaSamples(scale.vm, range).catch(() => ({ copies: new Map() }))).copies);
    throw new Error(
      `${(err as Error).message}\noutbox depth ${await scale.outboxDepth().catch(() => -1)}, missing ${delivery.missing.length} (first ${delivery.missing.slice(0, 5).join(', ')}), fleet ${JSON.stringify(await fleetWritten(scale.redis.url).catch(() => ({})))}\n${scale.logs()}`,
    );
  });
  const samples = await victoriaSamples(scale.vm, range);
  return {
    expected,
    delivery: compareDelivery(expected, samples.copies),
    writersOfDuplicates: samples.duplicates,
    fleet: await fleetWritten(scale.redis.url),
    faults: faultCount,
    seconds: Math.round((Date.now() - started) / 100) / 10,
  };
}

function expectNothingLostCountedOnce(name: string, outcome: Outcome, scale: ScaleOut): void {
  const { expected, delivery, fleet } = outcome;
  const readings = totalOf(expected);
  reports.push({ name, readings, kills: outcome.faults, lost: delivery.missing.length, duplicates: delivery.extraCopies, seconds: outcome.seconds });
  expect(readings).toBe(GATEWAYS * DEVICES_PER_GATEWAY * PER_DEVICE);
  expect(delivery.missing, `lost readings\n${scale.logs(1500)}`).toEqual([]);
  // No duplicate raw samples either: a kill -9 while a chunk's write is in flight to the database
  // leaves the chunk's write intent open, and whoever writes the resend first asks VictoriaMetrics
  // which of those readings it holds already (apps/ingestor/src/intents.ts, docs/scaling.md).
  const writers = [...outcome.writersOfDuplicates].slice(0, 5).map(([reading, list]) => `${reading} <- ${list.join(', ')}`);
  expect(delivery.extraCopies, `duplicate samples, first: ${writers.join('; ')}\n${scale.logs(1500)}`).toBe(0);
  expect(delivery.unexpected).toEqual([]);
  // Accounting across ingestors: each gateway's readings counted once, whoever wrote them.
  const perGateway = Object.fromEntries(scale.gateways.map((g) => [g.id, devicesOf(g.id).reduce((n, d) => n + (expected.get(d)?.size ?? 0), 0)]));
  expect(fleet).toEqual(perGateway);
}

/** The cluster stats of every ingestor, for a failure message and the record. */
async function clusterSummary(scale: ScaleOut): Promise<string> {
  const rows = await Promise.all(
    scale.ingestors.map(async (p) => {
      const stats: Record<string, unknown> = await ingestorStats(p).catch(() => ({}));
      return `${p.name} starts=${p.starts} written=${String(stats.written)} duplicates=${String(stats.duplicates)} cluster=${JSON.stringify(stats.cluster)}`;
    }),
  );
  return rows.join('\n');
}

async function killIngestorsCase(name: string, broker: ScaleOutOptions['broker']): Promise<void> {
  const scale = await startScaleOut({ name: `scale-out-${broker}`, broker, ingestors: INGESTORS, gateways: GATEWAYS, ...TIMING });
  deployment = scale;
  let kills: KillRecord[] = [];
  const outcome = await runWithFaults(scale, async (over) => {
    kills = await killRotating(scale.ingestors, { everyMs: KILL_EVERY_MS, over, deadlineMs: 400_000 });
    return kills.length;
  });
  process.stderr.write(`[scale-out] ${name}\nkills: ${kills.map((k) => `${k.name}@${k.at} down ${k.downMs} ms`).join(', ')}\n${await clusterSummary(scale)}\n`);
  expectNothingLostCountedOnce(name, outcome, scale);
  // Faults while readings flowed, not only after: at least one kill of each ingestor.
  expect(outcome.faults).toBeGreaterThanOrEqual(INGESTORS);
  expect(scale.ingestors.every((p) => p.starts >= 2)).toBe(true);
}

describe('three ingestors with shared state, one kill -9ed every few seconds', { timeout: 600_000 }, () => {
  it('behind Mosquitto 2 (MQTT 5 shared subscription) lose no reading and count each once across the ingestors', async () => {
    await killIngestorsCase('A mosquitto shared subscription', 'mosquitto');
  });

  it('behind two clustered Ferry brokers (leases by rendezvous) lose no reading and count each once across the ingestors', async () => {
    await killIngestorsCase('B ferry broker cluster', 'ferry-cluster');
  });
});

describe('Redis restarted while readings flow', { timeout: 600_000 }, () => {
  it('the ingestors wait for it and go on: nothing lost, each reading counted once', async () => {
    const scale = await startScaleOut({ name: 'scale-out-redis', broker: 'mosquitto', ingestors: INGESTORS, gateways: GATEWAYS, persistentRedis: true, ...TIMING });
    deployment = scale;
    const pids = scale.ingestors.map((p) => p.pid);
    const logSize = scale.ingestors.map((p) => p.logTail(Number.MAX_SAFE_INTEGER).length);
    const sinceStart = (i: number): string => scale.ingestors[i]!.logTail(Number.MAX_SAFE_INTEGER).slice(logSize[i]);
    let outages = 0;
    const outcome = await runWithFaults(scale, async (over) => {
      // Two outages longer than a lease, each begun while batches are on their way (an outbox
      // holds readings), so that some wait for Redis in the middle of their path.
      for (let i = 0; i < 2; i++) {
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        if (await over()) break;
        await waitFor(async () => (await scale.outboxDepth()) > 0, { timeoutMs: 60_000, intervalMs: 10, what: 'readings on their way' });
        await scale.redis.kill();
        outages++;
        // Every ingestor notices (its state connection) and keeps running: it waits, it does not exit.
        await waitFor(() => scale.ingestors.every((_, k) => sinceStart(k).split('redis connection lost').length - 1 >= outages), {
          timeoutMs: 30_000,
          what: 'every ingestor to log the lost Redis connection',
        });
        // /healthz says so: not ok, Redis not connected, while the process waits.
        for (const p of scale.ingestors) expect(await p.health()).toMatchObject({ ok: false, redis: { connected: false } });
        await new Promise((resolve) => setTimeout(resolve, TIMING.leaseMs + 1_000));
        await scale.redis.restart();
        await waitFor(() => scale.ingestors.every((_, k) => sinceStart(k).split('redis connection back').length - 1 >= outages), {
          timeoutMs: 30_000,
          what: 'every ingestor to log Redis back',
        });
      }
      return outages;
    });
    process.stderr.write(`[scale-out] C redis restarted\n${await clusterSummary(scale)}\n`);
    // A write the database confirmed while Redis was away has its record queued; once Redis is
    // back and the lease expired another ingestor may take the gateway's resend before that record
    // lands (seen once: 44 readings in a CI run). Its write intent, stored before the write, makes
    // the taker look in the database first.
    expectNothingLostCountedOnce('C redis restarted', outcome, scale);
    expect(outages).toBe(2);
    // The same processes throughout: they waited rather than failing.
    expect(scale.ingestors.map((p) => p.pid)).toEqual(pids);
    for (const p of scale.ingestors) expect(await p.health()).toMatchObject({ ok: true, redis: { connected: true } });
  });
});

describe('a gateway lease that lapses while Redis is away', { timeout: 120_000 }, () => {
  // In process and step by step, a path case C once took: a batch taken under the lease just as
  // Redis went away, its records read back after the lease had lapsed, then written beside the copy
  // another ingestor took from the gateway's resend (apps/ingestor/src/cluster/cluster-state.ts).
  it('leaves a batch whose records came back after the lease lapsed unwritten and unacked; the resend is written once', async () => {
    const cleanups: (() => Promise<unknown>)[] = [];
    try {
      const redis = await startRedis({ persistent: true });
      cleanups.push(() => redis.stop());
      const broker = createBroker({ listen: { port: 0 }, http: false, logLevel: 'silent' });
      await broker.ready();
      cleanups.push(() => broker.close());
      const dir = await makeTempDir('lease-lapse');
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const sink = new MemorySink();
      const registry = createRegistry();
      const ingestor = createIngestor(
        {
          ingestorId: `lapse-${process.pid}`,
          dataDir: dir,
          broker: { url: broker.url! },
          write: { lingerMs: 5 },
          http: false,
          logLevel: 'silent',
          state: { redisUrl: redis.url, leaseMs: TIMING.leaseMs, heartbeatMs: TIMING.heartbeatMs },
        },
        { sink, registry, logger: silentLogger() },
      );
      cleanups.push(() => ingestor.close());
      await ingestor.ready();
      const peer = await GatewayPeer.connect(broker.url!, 'gw-lapse');
      cleanups.push(() => peer.close());

      await peer.send(1, readings(0, 10));
      expect(await peer.waitAck(1)).toMatchObject({ accepted: 10 });
      expect(ingestor.stats().cluster?.gatewaysHeld).toBe(1);

      await redis.kill();
      // Taken at once under the lease still held here; its records wait for Redis.
      await peer.send(2, readings(10, 10));
      await waitFor(() => ingestor.stats().cluster?.gatewaysHeld === 0, { timeoutMs: 10_000, what: 'the lease to lapse locally' });
      expect(ingestor.stats().cluster?.waiting, 'batch 2 went into the pipeline, not into a wait for the lease').toBe(0);
      await redis.restart();

      // Its records come back now: the batch is given up (not acked, the gateway resends it), not written.
      const failed = async (): Promise<number> => metricValue(await registry.metrics(), 'ferry_ingestor_batches_total', 'outcome="failed"');
      await waitFor(async () => (await failed()) >= 1 || sink.points.size > 10 || peer.ackOf(2) !== undefined, { timeoutMs: 30_000, what: 'batch 2 to be settled one way or the other' });
      expect(sink.points.size).toBe(10);
      expect(peer.ackOf(2)).toBeUndefined();
      expect(ingestor.stats().cluster?.lapsedBeforeWrite).toBe(1);

      // The resend is taken under a new lease and written once.
      await peer.send(2, readings(10, 10));
      expect(await peer.waitAck(2, 30_000)).toMatchObject({ accepted: 10 });
      expect(sink.points.size).toBe(20);
    } finally {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    }
  });
});
