// A full disk under the cloud services, for real: the ingestor's data dir (and its embedded SQLite
// sink), then the broker's SQLite persistence, each on a small tmpfs filled to the last block, with
// every process run through the built CLI. While full, the service acknowledges nothing it could
// not record, says so in /healthz and /metrics, and stays up; once the filler is removed it
// resumes by itself and every reading a device got a PUBACK for is in the database exactly once.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fillDisk, stablePort, makeTempDir, mountSmallDisk, waitFor } from '@ferry/testkit';
import { compareDelivery, expectedSet, mergeExpected, publishReadings, sqliteCopies, totalOf } from './devices.js';
import type { PublishResult } from './devices.js';
import { FERRY_MAIN, gatewayOutbox, metricValue, startFerryProcess } from './processes.js';
import type { FerryProcess } from './processes.js';

const REPO_ROOT = join(FERRY_MAIN, '..', '..', '..', '..');
const DEVICES = 4;
const TMPFS_SIZE = '4m';

/** Undone after each test, last first: processes stop before their tmpfs is unmounted. */
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  // The processes run the compiled CLI, so build it (incremental: quick when up to date).
  try {
    await promisify(execFile)(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', 'apps/ferry'], { cwd: REPO_ROOT });
  } catch (err) {
    const { stdout = '' } = err as { stdout?: string };
    throw new Error(`ferry could not be built:\n${stdout.slice(0, 4000)}`, { cause: err });
  }
}, 300_000);

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A tmpfs of TMPFS_SIZE, unmounted after the test. Needs root, as the CI runner has. */
async function mountTmpfs(): Promise<string> {
  const disk = await mountSmallDisk(TMPFS_SIZE, 'services-disk');
  cleanups.push(() => disk.close());
  return disk.path;
}

interface Stack {
  readonly broker: FerryProcess;
  readonly ingestor: FerryProcess;
  readonly gateway: FerryProcess;
  readonly brokerUrl: string;
  readonly deviceUrl: string;
  readonly pointsDb: string;
  logs(): string;
}

/**
 * Broker, ingestor and gateway as children of the built CLI, on probed loopback ports, with the
 * ingestor's and the broker's data dirs where the test puts them (the ingestor's default sink,
 * points.db, lives in its data dir).
 */
async function startStack(dir: string, where: { ingestorDataDir: string; brokerDataDir?: string }): Promise<Stack> {
  const [brokerPort, brokerHttp, ingestorHttp, devicePort, gatewayHttp] = [await stablePort(), await stablePort(), await stablePort(), await stablePort(), await stablePort()];
  const brokerUrl = `mqtt://127.0.0.1:${brokerPort}`;
  const broker = startFerryProcess({
    kind: 'broker',
    dir,
    httpPort: brokerHttp,
    config: {
      listen: { host: '127.0.0.1', port: brokerPort },
      http: { host: '127.0.0.1', port: brokerHttp },
      ...(where.brokerDataDir !== undefined ? { dataDir: where.brokerDataDir } : {}),
      logLevel: 'info',
    },
  });
  const ingestor = startFerryProcess({
    kind: 'ingestor',
    dir,
    httpPort: ingestorHttp,
    config: {
      dataDir: where.ingestorDataDir,
      broker: { url: brokerUrl },
      http: { host: '127.0.0.1', port: ingestorHttp },
      write: { retry: { initialMs: 100, maxMs: 1000 } },
      logLevel: 'info',
    },
  });
  const gateway = startFerryProcess({
    kind: 'gateway',
    dir,
    httpPort: gatewayHttp,
    config: {
      gatewayId: 'gw-disk-full',
      dataDir: join(dir, 'gateway'),
      devices: { listen: { host: '127.0.0.1', port: devicePort } },
      uplink: { url: brokerUrl, ackTimeoutMs: 2_000, reconnectMinMs: 100, reconnectMaxMs: 1_000 },
      http: { host: '127.0.0.1', port: gatewayHttp },
      statusIntervalMs: 1_000,
      logLevel: 'info',
    },
  });
  const all = [broker, ingestor, gateway];
  cleanups.push(async () => {
    await Promise.allSettled([gateway.stop(), ingestor.stop()]);
    await broker.stop();
  });
  for (const p of all) await p.start();
  return {
    broker,
    ingestor,
    gateway,
    brokerUrl,
    deviceUrl: `mqtt://127.0.0.1:${devicePort}`,
    pointsDb: join(where.ingestorDataDir, 'points.db'),
    logs: () => all.map((p) => `--- ${p.name} (${p.logFile})\n${p.logTail(3000)}`).join('\n'),
  };
}

interface StorageHealth {
  readonly full: boolean;
  readonly since: number | null;
  readonly lastError: string | null;
  readonly failures: number;
}

async function storageOf(p: FerryProcess): Promise<{ ok: boolean; storage: StorageHealth }> {
  const health = await p.health();
  const storage = health.storage as StorageHealth | undefined;
  if (!storage) throw new Error(`${p.name} /healthz has no storage field: ${JSON.stringify(health)}`);
  return { ok: health.ok === true, storage };
}

/** Fails with every log when the condition does not come. */
function withLogs(stack: Stack): (err: unknown) => never {
  return (err) => {
    throw new Error(`${(err as Error).message}\n${stack.logs()}`);
  };
}

/** One QoS 1 publish from a plain client: 'acked' on PUBACK, 'refused' when the broker drops the connection instead. */
async function probePublish(url: string, n: number): Promise<'acked' | 'refused'> {
  let client: mqtt.MqttClient;
  try {
    client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `probe-${process.pid}-${n}`, clean: true, reconnectPeriod: 0, connectTimeout: 5_000 });
  } catch {
    return 'refused';
  }
  client.on('error', () => undefined);
  try {
    return await new Promise<'acked' | 'refused'>((resolve) => {
      client.once('close', () => resolve('refused'));
      client.publish('probe/disk-full', `probe ${n}`, { qos: 1 }, (err) => resolve(err ? 'refused' : 'acked'));
    });
  } finally {
    client.end(true);
  }
}

/**
 * Watches the gateway's outbox while `service` reports a full disk: returns every depth seen from
 * when the service said so until it had refused five more writes and `alsoWait` holds (so acks
 * had their chance to come).
 */
async function depthsWhileFull(stack: Stack, service: FerryProcess, prefix: 'ingestor' | 'broker', alsoWait: () => Promise<boolean>): Promise<number[]> {
  await waitFor(async () => (await storageOf(service)).storage.full, { timeoutMs: 30_000, intervalMs: 100, what: `${service.name} /healthz to report a full disk` }).catch(withLogs(stack));
  const failuresBefore = (await storageOf(service)).storage.failures;
  const depths: number[] = [];
  /** /healthz answers while the disk is full: each must say so (full, and not ok). */
  const reports: string[] = [];
  await waitFor(
    async () => {
      depths.push((await gatewayOutbox(stack.gateway)).depth);
      const health = await storageOf(service);
      reports.push(`ok=${health.ok} full=${health.storage.full}`);
      return health.storage.failures >= failuresBefore + 5 && (await alsoWait());
    },
    { timeoutMs: 60_000, intervalMs: 100, what: `${service.name} to refuse five more writes` },
  ).catch(withLogs(stack));
  expect(reports.filter((r) => r !== 'ok=false full=true')).toEqual([]);
  const metrics = await service.metrics();
  expect(metricValue(metrics, `ferry_${prefix}_storage_full`)).toBe(1);
  expect(metricValue(metrics, `ferry_${prefix}_storage_full_total`)).toBeGreaterThan(0);
  return depths;
}

/** After the filler is gone: an empty outbox, every expected reading in points.db, and the service healthy again. */
async function expectRecovered(stack: Stack, service: FerryProcess, expected: ReadonlyMap<string, ReadonlySet<number>>): Promise<void> {
  await waitFor(
    async () => (await gatewayOutbox(stack.gateway)).depth === 0 && compareDelivery(expected, sqliteCopies(stack.pointsDb)).missing.length === 0,
    { timeoutMs: 45_000, intervalMs: 200, what: 'an empty outbox and every PUBACKed reading in points.db' },
  ).catch(withLogs(stack));
  const delivery = compareDelivery(expected, sqliteCopies(stack.pointsDb));
  expect(delivery.missing).toEqual([]);
  expect(delivery.duplicated).toEqual([]);
  expect(delivery.unexpected).toEqual([]);
  expect(delivery.present).toBe(totalOf(expected));
  // Healthy again by itself (the state holds a few seconds past the last failure, then clears).
  await waitFor(async () => (await storageOf(service)).ok, { timeoutMs: 30_000, intervalMs: 200, what: `${service.name} /healthz ok again` }).catch(withLogs(stack));
  expect((await storageOf(service)).storage.full).toBe(false);
  expect(metricValue(await service.metrics(), `ferry_${service.name === 'broker' ? 'broker' : 'ingestor'}_storage_full`)).toBe(0);
}

describe('a full disk under the cloud services', { timeout: 180_000 }, () => {
  it('the ingestor acks nothing while its disk is full, reports it, and writes every reading exactly once when space returns', async () => {
    const dir = await makeTempDir('disk-full-ingestor');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const disk = await mountTmpfs();
    const stack = await startStack(dir, { ingestorDataDir: join(disk, 'ingestor') });
    const deviceIds = Array.from({ length: DEVICES }, (_, d) => `full-ing-${d}`);
    const baseTs = Date.now() - 60_000;

    const warm = await publishReadings({ url: stack.deviceUrl, deviceIds, from: 0, count: 25, baseTs });
    await expectRecovered(stack, stack.ingestor, expectedSet(warm));
    const ingestorPid = stack.ingestor.pid;

    const filler = join(disk, 'filler');
    fillDisk(filler);
    // The gateway's disk is not full: devices still get their PUBACKs, and the outbox holds the readings.
    const during: PublishResult = await publishReadings({ url: stack.deviceUrl, deviceIds, from: 25, count: 250, baseTs });
    const published = totalOf(expectedSet(during));
    expect(published).toBe(DEVICES * 250);

    // The gateway resends unacked batches: twice, so the ingestor had every chance to ack them.
    const resendsBefore = metricValue(await stack.gateway.metrics(), 'ferry_gateway_resends_total');
    const depths = await depthsWhileFull(stack, stack.ingestor, 'ingestor', async () => metricValue(await stack.gateway.metrics(), 'ferry_gateway_resends_total') >= resendsBefore + 2);
    // Nothing acked while the ingestor could not record it: the outbox never shrank.
    expect(Math.min(...depths)).toBe(published);
    expect(Math.max(...depths)).toBe(published);
    const health = await storageOf(stack.ingestor);
    expect(health.storage.lastError).toMatch(/disk is full|no space/i);
    expect(health.storage.since).toBeTypeOf('number');

    rmSync(filler);
    const expected = mergeExpected(expectedSet(warm), expectedSet(during));
    await expectRecovered(stack, stack.ingestor, expected);
    // Each reading recorded as written once: a failed write was never recorded, a resend never written again.
    expect(metricValue(await stack.ingestor.metrics(), 'ferry_ingestor_readings_written_total')).toBe(totalOf(expected));
    // The same process throughout: the full disk crashed nothing.
    expect(stack.ingestor.pid).toBe(ingestorPid);
    expect(stack.ingestor.starts).toBe(1);
  });

  it('the broker withholds PUBACKs while its disk is full, stays up, reports it, and delivers every reading exactly once when space returns', async () => {
    const dir = await makeTempDir('disk-full-broker');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const disk = await mountTmpfs();
    const stack = await startStack(dir, { ingestorDataDir: join(dir, 'ingestor'), brokerDataDir: join(disk, 'broker') });
    const deviceIds = Array.from({ length: DEVICES }, (_, d) => `full-brk-${d}`);
    const baseTs = Date.now() - 60_000;

    const warm = await publishReadings({ url: stack.deviceUrl, deviceIds, from: 0, count: 25, baseTs });
    await expectRecovered(stack, stack.broker, expectedSet(warm));
    expect(await probePublish(stack.brokerUrl, 0)).toBe('acked');
    const brokerPid = stack.broker.pid;

    const filler = join(disk, 'filler');
    fillDisk(filler);
    const during = await publishReadings({ url: stack.deviceUrl, deviceIds, from: 25, count: 250, baseTs });
    const published = totalOf(expectedSet(during));
    expect(published).toBe(DEVICES * 250);

    // The gateway cannot even connect (its will cannot be stored): it keeps trying, and that is the wait.
    const depths = await depthsWhileFull(stack, stack.broker, 'broker', () => Promise.resolve(true));
    expect(Math.min(...depths)).toBe(published);
    expect(Math.max(...depths)).toBe(published);
    // A QoS 1 publish the broker cannot journal gets no PUBACK.
    expect(await probePublish(stack.brokerUrl, 1)).toBe('refused');
    expect((await storageOf(stack.broker)).storage.lastError).toMatch(/disk is full|no space/i);
    expect(stack.broker.pid).toBe(brokerPid);

    rmSync(filler);
    await expectRecovered(stack, stack.broker, mergeExpected(expectedSet(warm), expectedSet(during)));
    expect(await probePublish(stack.brokerUrl, 2)).toBe('acked');
    expect(stack.broker.pid).toBe(brokerPid);
    expect(stack.broker.starts).toBe(1);
  });
});
