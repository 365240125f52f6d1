// A device's recent readings over the API for every sink: a running ingestor writing to a real
// influxd (InfluxDB v1 sink, which cannot be read back) serves GET /api/devices/:id from memory; with
// the embedded SQLite sink, memory first and the database after a restart, while memory is empty.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { makeTempDir, startInfluxd, startMosquitto, waitFor } from '@ferry/testkit';
import type { InfluxdHandle, ServerHandle } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { countPoints } from './influx-count.js';
import { GatewayPeer } from './peer.js';

let broker: ServerHandle;
let influxd: InfluxdHandle;
const cleanups: (() => Promise<void> | void)[] = [];
beforeAll(async () => {
  [broker, influxd] = await Promise.all([startMosquitto(), startInfluxd()]);
});
afterAll(async () => {
  await Promise.all([broker?.stop(), influxd?.stop()]);
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const TOKEN = 'read-token-0123456789';

interface ApiReading {
  ts: number;
  measurement: string;
  kind?: string;
  fields: Record<string, unknown>;
  flags?: string[];
}
interface DeviceAnswer {
  readings: ApiReading[] | null;
  readingsSource: 'memory' | 'database' | null;
}

async function device(ingestor: Ingestor, id: string, query = ''): Promise<DeviceAnswer> {
  const res = await fetch(`${ingestor.httpUrl ?? ''}/api/devices/${id}${query}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  if (res.status !== 200) throw new Error(`GET /api/devices/${id}: ${res.status}`);
  return (await res.json()) as DeviceAnswer;
}

async function setup(name: string, sink?: IngestorConfigInput['sink'], processing?: IngestorConfigInput['processing']): Promise<{ start: () => Promise<Ingestor>; gw: GatewayPeer }> {
  const dir = await makeTempDir(name);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const id = `ing-${name}-${process.pid}-${Math.random().toString(16).slice(2, 8)}`;
  const gw = await GatewayPeer.connect(broker.url, `gw-${id}`);
  cleanups.push(() => gw.close());
  const start = async (): Promise<Ingestor> => {
    const ingestor = createIngestor(
      {
        ingestorId: id,
        dataDir: join(dir, 'data'),
        broker: { url: broker.url },
        ...(sink ? { sink } : {}),
        ...(processing ? { processing } : {}),
        write: { lingerMs: 5 },
        logLevel: 'silent',
        http: { port: 0, tokens: [{ token: TOKEN, role: 'read' }] },
        health: { tickMs: 50, flushIntervalMs: 100, defaults: { graceMs: 0 }, notifiers: { log: false } },
      },
      { logger: silentLogger() },
    );
    // close() is idempotent: a test may close it first to restart.
    cleanups.push(() => ingestor.close());
    await ingestor.ready();
    return ingestor;
  };
  return { start, gw };
}

/** Ten minutes ago, to the second: inside the default sinceMs (1 h) and the default skew limits. */
const T = Math.floor(Date.now() / 1000) * 1000 - 600_000;

let seq = 0;
function reading(deviceId: string, at: number, temperature: number, extra: Partial<Reading> = {}): Reading {
  seq++;
  return { seq, deviceId, kind: 'telemetry', ts: T + at, tsSource: 'device', receivedAt: T + at + 5, deviceSeq: seq, metrics: { temperature, battery: 80 }, ...extra };
}

describe('recent readings over the API', () => {
  it('serves a device\'s readings from memory with the InfluxDB v1 sink: values in ts order, kind and flags, within limit', async () => {
    await influxd.createDatabase('recent');
    const { start, gw } = await setup('recent-influx', { type: 'influxdb1', url: influxd.url, database: 'recent' });
    const ingestor = await start();
    await gw.send(1, [reading('pump-1', 1000, 20.5), reading('pump-1', 2000, 21), reading('pump-2', 2000, 5), reading('pump-1', 3000, 21.5, { flags: ['clock_unsynced'] })]);
    await gw.waitAck(1);
    // A late reading (an outbox replayed after an outage) takes its place by ts; a status reading shows under its measurement.
    await gw.send(2, [reading('pump-1', 500, 19), reading('pump-1', 4000, 22, { kind: 'status', metrics: { battery: 79 } })]);
    await gw.waitAck(2);
    await waitFor(async () => (await device(ingestor, 'pump-1')).readings?.length === 5, { timeoutMs: 20_000, what: 'five readings of pump-1 over the API' });

    const one = await device(ingestor, 'pump-1');
    expect(one.readingsSource).toBe('memory');
    expect(one.readings).toEqual([
      { ts: T + 500, measurement: 'telemetry', kind: 'telemetry', fields: { temperature: 19, battery: 80 } },
      { ts: T + 1000, measurement: 'telemetry', kind: 'telemetry', fields: { temperature: 20.5, battery: 80 } },
      { ts: T + 2000, measurement: 'telemetry', kind: 'telemetry', fields: { temperature: 21, battery: 80 } },
      // The point of a reading whose device clock was not set says so in the database (issue #17).
      { ts: T + 3000, measurement: 'telemetry', kind: 'telemetry', fields: { temperature: 21.5, battery: 80, ferry_clock_unsynced: true }, flags: ['clock_unsynced'] },
      { ts: T + 4000, measurement: 'device_status', kind: 'status', fields: { battery: 79 } },
    ]);
    // The newest within limit; only those inside sinceMs.
    expect((await device(ingestor, 'pump-1', '?limit=2')).readings?.map((r) => r.ts)).toEqual([T + 3000, T + 4000]);
    expect((await device(ingestor, 'pump-1', `?sinceMs=${Date.now() - (T + 2500)}`)).readings?.map((r) => r.ts)).toEqual([T + 3000, T + 4000]);
    expect((await device(ingestor, 'pump-2')).readings?.map((r) => r.fields['temperature'])).toEqual([5]);
    // What memory shows is what the database confirmed.
    expect(await countPoints(influxd, 'recent', 'temperature')).toBe(5);
  });

  it('shows the values the database has when the ingestor processes readings, and nothing for a reading processing emptied', async () => {
    await influxd.createDatabase('recent_processed');
    const processing: IngestorConfigInput['processing'] = { pipelines: [{ match: { metric: 'temperature' }, steps: [{ op: 'range', min: -40, max: 150 }] }] };
    const { start, gw } = await setup('recent-processed', { type: 'influxdb1', url: influxd.url, database: 'recent_processed' }, processing);
    const ingestor = await start();
    await gw.send(1, [reading('fan-1', 1000, 20), reading('fan-1', 2000, 500), reading('fan-1', 3000, 999, { metrics: { temperature: 999 } }), reading('fan-1', 4000, 21)]);
    await gw.waitAck(1);
    await waitFor(async () => (await device(ingestor, 'fan-1')).readings?.length === 3, { timeoutMs: 20_000, what: 'three readings of fan-1 over the API' });
    expect((await device(ingestor, 'fan-1')).readings?.map((r) => [r.ts - T, r.fields])).toEqual([
      [1000, { temperature: 20, battery: 80 }],
      [2000, { battery: 80 }],
      [4000, { temperature: 21, battery: 80 }],
    ]);
    expect(await countPoints(influxd, 'recent_processed', 'temperature')).toBe(2);
  });

  it('with the embedded SQLite sink, serves from memory, and from the database after a restart until memory has readings again', async () => {
    const { start, gw } = await setup('recent-sqlite');
    const first = await start();
    await gw.send(1, [reading('valve-1', 1000, 1), reading('valve-1', 2000, 2)]);
    await gw.waitAck(1);
    await waitFor(async () => (await device(first, 'valve-1')).readings?.length === 2, { timeoutMs: 20_000, what: 'two readings of valve-1 over the API' });
    const before = await device(first, 'valve-1');
    expect(before.readingsSource).toBe('memory');
    expect(before.readings?.map((r) => r.fields['temperature'])).toEqual([1, 2]);
    await first.close();

    // Memory starts empty; the health state survives in health.db, the points in points.db.
    const second = await start();
    const after = await device(second, 'valve-1');
    expect(after.readingsSource).toBe('database');
    expect(after.readings?.map((r) => [r.ts, r.fields['temperature']])).toEqual([
      [T + 1000, 1],
      [T + 2000, 2],
    ]);
    await gw.send(2, [reading('valve-1', 3000, 3)]);
    await gw.waitAck(2);
    await waitFor(async () => (await device(second, 'valve-1')).readingsSource === 'memory', { timeoutMs: 20_000, what: 'valve-1 served from memory again' });
    expect((await device(second, 'valve-1')).readings?.map((r) => r.fields['temperature'])).toEqual([3]);
  });
});
