// Scale-out as separate processes (issue #20): several `ferry ingestor` children sharing their state
// in a real Redis (`state.redisUrl`), behind Mosquitto 2 (MQTT 5 shared subscription) or two
// `ferry broker` children clustered through their own Redis, several `ferry gateway` children, and
// VictoriaMetrics as the database, every one on fixed loopback ports so any of them can be killed
// and restarted where it was. Also what the checks read (raw samples per device reading from
// VictoriaMetrics, the fleet counts in Redis), a rotating kill -9 schedule and paced devices.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, stablePort, startMosquitto, startRedis, startVictoriaMetrics, waitFor } from '@ferry/testkit';
import type { ServerHandle, VictoriaHandle } from '@ferry/testkit';
import { silentLogger, systemClock } from '@ferry/runtime';
import { fleetCounts } from '../../apps/ingestor/src/cluster/fleet-accounting.js';
import { connectRedis } from '../../apps/ingestor/src/cluster/redis.js';
import { publishReadings } from './devices.js';
import type { Copies, PublishResult } from './devices.js';
import { gatewayOutbox, startFerryProcess } from './processes.js';
import type { FerryProcess } from './processes.js';

// ---------------------------------------------------------------- Redis, the fleet counts

/**
 * Readings written per gateway across every ingestor, as the ingestors' own record script counted
 * them in Redis, read with the ingestor's own fleetCounts() (apps/ingestor/src/cluster/fleet-accounting.ts).
 */
export async function fleetWritten(redisUrl: string, keyPrefix = 'ferry:'): Promise<Record<string, number>> {
  const redis = connectRedis({ url: redisUrl, name: 'test', logger: silentLogger(), clock: systemClock });
  let timer: NodeJS.Timeout | undefined;
  try {
    const counts = await Promise.race([
      fleetCounts(redis, keyPrefix),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('Redis did not answer the fleet counts within 10 s')), 10_000);
      }),
    ]);
    return Object.fromEntries(Object.entries(counts.gateways).map(([gatewayId, c]) => [gatewayId, c.written]));
  } finally {
    clearTimeout(timer);
    redis.disconnect();
  }
}

// ---------------------------------------------------------------- VictoriaMetrics, raw samples

/** Raw samples of field `n` per device reading, with the sample times of those written twice. */
export interface VictoriaSamples {
  /** Samples per device and value: a reading's n is its device seq, so above 1 is a duplicate, 0 a loss. */
  readonly copies: Copies;
  /** `device:n` -> its samples' times, for readings with more than one. */
  readonly duplicates: Map<string, string[]>;
}

/**
 * Raw samples of telemetry_n{device=...} from /api/v1/export, not a query: a query would hide
 * samples sharing a timestamp. Every ingestor maps readings to the same points (no tag of its own:
 * a rewrite by another ingestor must be the same series, or no database could tell it is one).
 */
export async function victoriaSamples(vm: VictoriaHandle, range: { start: number; end: number }): Promise<VictoriaSamples> {
  await vm.flush();
  const copies: Copies = new Map();
  const writers = new Map<string, string[]>();
  for (const series of await vm.exportSeries('{__name__="telemetry_n"}', range)) {
    const device = series.metric.device;
    if (device === undefined) continue;
    let perDevice = copies.get(device);
    if (!perDevice) copies.set(device, (perDevice = new Map<number, number>()));
    series.values.forEach((value, k) => {
      perDevice.set(value, (perDevice.get(value) ?? 0) + 1);
      const key = `${device}:${value}`;
      const list = writers.get(key) ?? [];
      list.push(`@${series.timestamps[k]}`);
      writers.set(key, list);
    });
  }
  return { copies, duplicates: new Map([...writers].filter(([, list]) => list.length > 1)) };
}

// ---------------------------------------------------------------- the deployment

export type ScaleOutBroker = 'mosquitto' | 'ferry-cluster';

export interface ScaleOutOptions {
  /** Mosquitto 2 with broker.sharedGroup (admission `shared`), or two clustered `ferry broker`s (admission `leases`). */
  readonly broker: ScaleOutBroker;
  readonly ingestors: number;
  readonly gateways: number;
  /** state.leaseMs and state.heartbeatMs of every ingestor. */
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  /** The gateways' uplink.ackTimeoutMs: how soon a batch sent to a killed ingestor is sent again. */
  readonly ackTimeoutMs: number;
  /** Redis for the ingestors' state with appendonly/appendfsync always, so it can be killed and restarted. */
  readonly persistentRedis?: boolean;
  /** Tag of the temp dir. */
  readonly name?: string;
}

export interface ScaleOutGateway {
  readonly id: string;
  readonly process: FerryProcess;
  /** The gateway's embedded device listener. */
  readonly deviceUrl: string;
}

export interface ScaleOut {
  readonly dir: string;
  /** The ingestors' shared state. */
  readonly redis: ServerHandle;
  /** The Ferry brokers' own Redis (ferry-cluster only). */
  readonly brokerRedis: ServerHandle | undefined;
  readonly vm: VictoriaHandle;
  readonly mosquitto: ServerHandle | undefined;
  readonly brokers: readonly FerryProcess[];
  readonly ingestors: readonly FerryProcess[];
  readonly gateways: readonly ScaleOutGateway[];
  /** Sum of the gateways' outbox depths. */
  outboxDepth(): Promise<number>;
  /** Tails of every Ferry child's log, for a failure message. */
  logs(chars?: number): string;
  close(): Promise<void>;
}

/** The ingestors' id; a restarted one keeps it (its Redis member id is new each start). */
export function ingestorId(i: number): string {
  return `ingestor-${i}`;
}

export function scaleGatewayId(g: number): string {
  return `gw-scale-${g}`;
}

/**
 * Starts everything and waits until every ingestor sees the others in Redis and every gateway's
 * uplink is up. A probed port taken by another test before a child bound it fails the start with
 * EADDRINUSE: the whole start is then tried again on new ports.
 */
export async function startScaleOut(options: ScaleOutOptions): Promise<ScaleOut> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startScaleOutOnce(options);
    } catch (err) {
      if (attempt >= 3 || !(err as Error).message.includes('EADDRINUSE')) throw err;
    }
  }
}

async function startScaleOutOnce(options: ScaleOutOptions): Promise<ScaleOut> {
  const dir = await makeTempDir(options.name ?? 'scale-out');
  const servers: ServerHandle[] = [];
  const children: FerryProcess[] = [];
  const stopAll = async (): Promise<void> => {
    // Devices' side first, then the ingestors, then what they lean on.
    for (const kind of ['gateway', 'ingestor', 'broker']) await Promise.allSettled(children.filter((c) => c.name.startsWith(kind)).map((c) => c.stop()));
    await Promise.allSettled(servers.map((s) => s.stop()));
    if (process.env.FERRY_KEEP_FAULT_DIRS === undefined) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  };
  try {
    const [redis, vm] = await Promise.all([startRedis({ persistent: options.persistentRedis === true }), startVictoriaMetrics()]);
    servers.push(redis, vm);
    let mosquitto: ServerHandle | undefined;
    let brokerRedis: ServerHandle | undefined;
    const brokers: FerryProcess[] = [];
    let brokerUrls: string[];
    if (options.broker === 'mosquitto') {
      mosquitto = await startMosquitto();
      servers.push(mosquitto);
      brokerUrls = [mosquitto.url];
    } else {
      brokerRedis = await startRedis();
      servers.push(brokerRedis);
      brokerUrls = [];
      for (let b = 0; b < 2; b++) {
        const [port, http] = [await stablePort(), await stablePort()];
        brokerUrls.push(`mqtt://127.0.0.1:${port}`);
        const broker = startFerryProcess({
          kind: 'broker',
          name: `broker-${b}`,
          dir,
          httpPort: http,
          config: { listen: { host: '127.0.0.1', port }, http: { host: '127.0.0.1', port: http }, cluster: { redisUrl: brokerRedis.url }, logLevel: 'info' },
        });
        brokers.push(broker);
        children.push(broker);
      }
      await Promise.all(brokers.map((b) => b.start()));
    }
    const brokerFor = (i: number): string => brokerUrls[i % brokerUrls.length]!;

    const ingestors: FerryProcess[] = [];
    for (let i = 0; i < options.ingestors; i++) {
      const http = await stablePort();
      const ingestor = startFerryProcess({
        kind: 'ingestor',
        name: `ingestor-${i}`,
        dir,
        httpPort: http,
        config: {
          ingestorId: ingestorId(i),
          dataDir: join(dir, `ingestor-${i}`),
          broker: { url: brokerFor(i), ...(options.broker === 'mosquitto' ? { sharedGroup: 'ferry-ingestors' } : {}) },
          sink: { type: 'influxdb2', url: vm.url, token: 'unused', org: 'ferry', bucket: 'ferry' },
          http: { host: '127.0.0.1', port: http },
          write: { retry: { initialMs: 100, maxMs: 1000 } },
          state: { redisUrl: redis.url, leaseMs: options.leaseMs, heartbeatMs: options.heartbeatMs },
          logLevel: 'info',
        },
      });
      ingestors.push(ingestor);
      children.push(ingestor);
    }
    await Promise.all(ingestors.map(startReported));
    await waitFor(async () => (await Promise.all(ingestors.map(clusterMembers))).every((m) => m.length === options.ingestors), {
      timeoutMs: 60_000,
      intervalMs: 100,
      what: `each of the ${options.ingestors} ingestors to see the others in Redis`,
    });

    const gateways: ScaleOutGateway[] = [];
    for (let g = 0; g < options.gateways; g++) {
      const [devicePort, http] = [await stablePort(), await stablePort()];
      const id = scaleGatewayId(g);
      const gateway = startFerryProcess({
        kind: 'gateway',
        name: `gateway-${g}`,
        dir,
        httpPort: http,
        config: {
          gatewayId: id,
          dataDir: join(dir, `gateway-${g}`),
          devices: { listen: { host: '127.0.0.1', port: devicePort } },
          uplink: { url: brokerFor(g + 1), ackTimeoutMs: options.ackTimeoutMs, reconnectMinMs: 100, reconnectMaxMs: 1_000 },
          http: { host: '127.0.0.1', port: http },
          statusIntervalMs: 1_000,
          logLevel: 'info',
        },
      });
      gateways.push({ id, process: gateway, deviceUrl: `mqtt://127.0.0.1:${devicePort}` });
      children.push(gateway);
    }
    await Promise.all(gateways.map((g) => g.process.start()));

    return {
      dir,
      redis,
      brokerRedis,
      vm,
      mosquitto,
      brokers,
      ingestors,
      gateways,
      async outboxDepth() {
        let depth = 0;
        for (const g of gateways) depth += (await gatewayOutbox(g.process)).depth;
        return depth;
      },
      logs(chars = 2500) {
        return children.map((p) => `--- ${p.name} (${p.logFile})\n${p.logTail(chars)}`).join('\n');
      },
      close: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * Waits until the child's CLI reported ready (`{"service":...,"state":"ready"}` on its stdout) as
 * many times as it was started. /healthz answers 200 as soon as the broker connection is up, which
 * for an ingestor is before its subscriptions are acknowledged and before it takes any batch.
 */
export async function untilReported(child: FerryProcess, timeoutMs = 60_000): Promise<void> {
  await waitFor(() => child.logTail(Number.MAX_SAFE_INTEGER).split('"state":"ready"').length - 1 >= child.starts, {
    timeoutMs,
    intervalMs: 100,
    what: `${child.name} (start ${child.starts}) to report ready`,
  }).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n--- ${child.name} log tail:\n${child.logTail(3000)}`);
  });
}

/** start() and untilReported(). */
export async function startReported(child: FerryProcess): Promise<void> {
  await child.start();
  await untilReported(child);
}

/** The ingestor's /api/stats. */
export async function ingestorStats(ingestor: FerryProcess): Promise<Record<string, unknown>> {
  const res = await fetch(`${ingestor.httpUrl}/api/stats`);
  if (!res.ok) throw new Error(`${ingestor.name} /api/stats answered ${res.status}`);
  return (await res.json()) as Record<string, unknown>;
}

/** The live members the ingestor sees in Redis (its /api/stats `cluster.members`). */
export async function clusterMembers(ingestor: FerryProcess): Promise<readonly string[]> {
  const cluster = (await ingestorStats(ingestor)).cluster as { members?: unknown } | undefined;
  return Array.isArray(cluster?.members) ? (cluster.members as string[]) : [];
}

// ---------------------------------------------------------------- kill -9, rotating

export interface KillRecord {
  readonly name: string;
  /** When the SIGKILL was sent (epoch ms). */
  readonly at: number;
  /** ms since the schedule started. */
  readonly atMs: number;
  /** From the SIGKILL until the restarted child answered /healthz 200. */
  readonly downMs: number;
}

export interface KillScheduleOptions {
  /** A kill every this long, whatever the restarts take. */
  readonly everyMs: number;
  /** Checked before each kill: true ends the schedule. */
  readonly over: () => boolean | Promise<boolean>;
  /** Give up (reject) after this long. */
  readonly deadlineMs?: number;
}

/**
 * kill -9 of one process every `everyMs`, each in turn, each restarted at once on the same ports
 * and data dir, until `over()`. The cadence does not wait for a restart, so under load two may be
 * down at once; a victim whose last restart is still under way is waited for before it is killed
 * again. Resolves once every restart reported ready (startReported). The pause only paces the
 * faults; no check depends on it.
 */
export async function killRotating(victims: readonly FerryProcess[], options: KillScheduleOptions): Promise<KillRecord[]> {
  const started = Date.now();
  const deadlineMs = options.deadlineMs ?? 600_000;
  const kills: KillRecord[] = [];
  const restarting = new Map<FerryProcess, Promise<void>>();
  // Set from a restart's callback; read through a function so the checks are not narrowed away.
  const failed: { error?: Error } = {};
  const failure = (): Error | undefined => failed.error;
  for (let turn = 0; ; turn++) {
    await new Promise((resolve) => setTimeout(resolve, options.everyMs));
    const early = failure();
    if (early) throw early;
    if (await options.over()) break;
    if (Date.now() - started > deadlineMs) throw new Error(`the kill schedule still running after ${deadlineMs} ms (${kills.length} kills)`);
    const victim = victims[turn % victims.length]!;
    await restarting.get(victim);
    const at = Date.now();
    await victim.kill();
    restarting.set(
      victim,
      startReported(victim).then(
        () => {
          kills.push({ name: victim.name, at, atMs: at - started, downMs: Date.now() - at });
        },
        (err: unknown) => {
          failed.error ??= err instanceof Error ? err : new Error(String(err));
        },
      ),
    );
  }
  await Promise.all(restarting.values());
  const late = failure();
  if (late) throw late;
  return kills.sort((a, b) => a.atMs - b.atMs);
}

// ---------------------------------------------------------------- devices, paced

export interface PacedPublishOptions {
  readonly url: string;
  readonly deviceIds: readonly string[];
  readonly count: number;
  /** Readings per device per step; each step starts `stepMs` after the one before (or when it ends, if later). */
  readonly step: number;
  readonly stepMs: number;
  readonly baseTs: number;
  readonly deadlineMs?: number;
}

/**
 * publishReadings in steps, so the readings flow over a time set by the test rather than by the
 * machine's speed, and faults land while they flow. The pause paces the load; no check depends on it.
 */
export async function publishPaced(options: PacedPublishOptions): Promise<PublishResult> {
  const started = Date.now();
  const acked = new Map<string, Set<number>>(options.deviceIds.map((d) => [d, new Set<number>()]));
  let republished = 0;
  let connections = 0;
  for (let from = 0, step = 0; from < options.count; from += options.step, step++) {
    const wait = started + step * options.stepMs - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const result = await publishReadings({
      url: options.url,
      deviceIds: options.deviceIds,
      from,
      count: Math.min(options.step, options.count - from),
      window: 10,
      baseTs: options.baseTs,
      deadlineMs: Math.max(1, (options.deadlineMs ?? 600_000) - (Date.now() - started)),
    });
    republished += result.republished;
    connections += result.connections;
    for (const [device, seqs] of result.acked) for (const n of seqs) acked.get(device)?.add(n);
  }
  return { acked, republished, connections };
}
