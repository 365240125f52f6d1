// Issue 6 (ingestor scale-out). Two ingestors, one stream of batches from several gateways, real brokers and a real influxd:
// every reading is written exactly once. Mosquitto 2 splits the stream with an MQTT 5 shared
// subscription; aedes (MQTT 3.1.1, no $share) with the static partition by gateway-id hash.
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import { createBroker } from '@ferry/broker';
import type { Broker } from '@ferry/broker';
import { makeTempDir, startInfluxd, startMosquitto, startRedis } from '@ferry/testkit';
import type { InfluxdHandle, ServerHandle } from '@ferry/testkit';
import { createIngestor, partitionHash } from '@ferry/ingestor';
import type { Ingestor, IngestorConfigInput } from '@ferry/ingestor';
import { reading, readings } from '../apps/ingestor/test/fixtures.js';
import { GatewayPeer } from '../apps/ingestor/test/peer.js';
import { countPoints } from '../apps/ingestor/test/influx-count.js';

let influxd: InfluxdHandle;
const cleanups: (() => Promise<void> | void)[] = [];
let dbCounter = 0;

beforeAll(async () => {
  influxd = await startInfluxd();
});
afterAll(async () => {
  await influxd?.stop();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function ingestor(name: string, brokerUrl: string, db: string, extra: Partial<IngestorConfigInput>): Promise<Ingestor> {
  const dir = await makeTempDir(`ingestor-${name}`);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const instance = createIngestor(
    {
      ingestorId: `${name}-${process.pid}-${dbCounter}`,
      dataDir: dir,
      broker: { url: brokerUrl, ...(extra.broker ?? {}) },
      sink: { type: 'influxdb1', url: influxd.url, database: db },
      write: { lingerMs: 5 },
      http: extra.http ?? false,
      logLevel: 'silent',
      ...(extra.partition ? { partition: extra.partition } : {}),
      ...(extra.state ? { state: extra.state } : {}),
    },
    { logger: silentLogger() },
  );
  cleanups.push(() => instance.close());
  await instance.ready();
  return instance;
}

/** Each gateway sends `batches` batches of `size` readings with its own seqs; waits for every ack. */
async function stream(brokerUrl: string, gatewayIds: readonly string[], batches: number, size: number): Promise<void> {
  const peers = await Promise.all(gatewayIds.map((id) => GatewayPeer.connect(brokerUrl, id)));
  cleanups.push(async () => {
    for (const p of peers) await p.close();
  });
  for (let b = 1; b <= batches; b++) {
    for (const p of peers) await p.send(b, readings((b - 1) * size, size));
  }
  for (const p of peers) {
    for (let b = 1; b <= batches; b++) expect(await p.waitAck(b, 30_000)).toMatchObject({ accepted: size, duplicates: 0, rejected: [] });
  }
}

async function newDb(): Promise<string> {
  const db = `scale${++dbCounter}`;
  await influxd.createDatabase(db);
  return db;
}

describe('two ingestors on one batch stream', () => {
  it('share a Mosquitto 2 shared subscription and write every reading once', async () => {
    const mosquitto: ServerHandle = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const db = await newDb();
    const shared = { broker: { url: mosquitto.url, sharedGroup: 'ferry-ingestors' } };
    const a = await ingestor('share-a', mosquitto.url, db, shared);
    const b = await ingestor('share-b', mosquitto.url, db, shared);
    const gateways = ['gw-1', 'gw-2', 'gw-3', 'gw-4'];
    await stream(mosquitto.url, gateways, 5, 20);
    expect(await countPoints(influxd, db, 'temperature')).toBe(400);
    const [sa, sb] = [a.stats(), b.stats()];
    expect(sa.written + sb.written).toBe(400);
    expect(sa.duplicates + sb.duplicates).toBe(0);
    expect(sa.batches + sb.batches).toBe(20);
    // Both took part: the broker handed batches to each member of the group.
    expect(sa.batches).toBeGreaterThan(0);
    expect(sb.batches).toBeGreaterThan(0);
  });

  it('split the gateways of an aedes broker by partition and write every reading once', async () => {
    const broker: Broker = createBroker({ listen: { port: 0 }, http: false, logLevel: 'silent' });
    await broker.ready();
    cleanups.push(() => broker.close());
    const url = broker.url!;
    const db = await newDb();
    const a = await ingestor('part-0', url, db, { partition: { index: 0, count: 2 } });
    const b = await ingestor('part-1', url, db, { partition: { index: 1, count: 2 } });
    const candidates = Array.from({ length: 12 }, (_, i) => `gw-${i}`);
    const gateways = [...candidates.filter((id) => partitionHash(id) % 2 === 0).slice(0, 2), ...candidates.filter((id) => partitionHash(id) % 2 === 1).slice(0, 2)];
    expect(gateways.length).toBe(4);
    await stream(url, gateways, 5, 20);
    expect(await countPoints(influxd, db, 'temperature')).toBe(400);
    const [sa, sb] = [a.stats(), b.stats()];
    expect(sa.written).toBe(200);
    expect(sb.written).toBe(200);
    expect(sa.duplicates + sb.duplicates).toBe(0);
    expect(sa.notOwned).toBe(10);
    expect(sb.notOwned).toBe(10);
  });
});

describe('ingestors sharing their state in Redis', () => {
  async function redisState(): Promise<{ redisUrl: string; leaseMs: number; heartbeatMs: number }> {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    return { redisUrl: redis.url, leaseMs: 2_000, heartbeatMs: 200 };
  }

  it('write a batch resent to the other member of a shared subscription once: the second is a duplicate', async () => {
    const mosquitto: ServerHandle = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const db = await newDb();
    const state = await redisState();
    const shared = { broker: { url: mosquitto.url, sharedGroup: 'ferry-ingestors' }, state };
    const a = await ingestor('redis-share-a', mosquitto.url, db, shared);
    const b = await ingestor('redis-share-b', mosquitto.url, db, shared);
    const peer = await GatewayPeer.connect(mosquitto.url, 'gw-race');
    cleanups.push(() => peer.close());
    // The same batch again and again at once, as a gateway resending after a lost ack: the broker
    // hands the copies to both ingestors, which race for them.
    const items = readings(0, 50);
    for (let copy = 0; copy < 6; copy++) await peer.send(1, items);
    await expect.poll(() => a.stats().batches + b.stats().batches, { timeout: 30_000 }).toBe(6);
    await expect.poll(() => a.stats().written + b.stats().written + a.stats().duplicates + b.stats().duplicates, { timeout: 30_000 }).toBe(300);
    expect(a.stats().written + b.stats().written).toBe(50);
    expect(await countPoints(influxd, db, 'temperature')).toBe(50);
  });

  it('share out the gateways of an aedes broker by leases and write every reading once', async () => {
    const broker: Broker = createBroker({ listen: { port: 0 }, http: false, logLevel: 'silent' });
    await broker.ready();
    cleanups.push(() => broker.close());
    const url = broker.url!;
    const db = await newDb();
    const state = await redisState();
    const a = await ingestor('lease-a', url, db, { state, http: { port: 0 } });
    const b = await ingestor('lease-b', url, db, { state });
    await expect.poll(() => a.stats().cluster?.members.length, { timeout: 10_000 }).toBe(2);
    const gateways = Array.from({ length: 8 }, (_, i) => `gw-lease-${i}`);
    await stream(url, gateways, 5, 20);
    expect(await countPoints(influxd, db, 'temperature')).toBe(800);
    const [sa, sb] = [a.stats(), b.stats()];
    expect(sa.written + sb.written).toBe(800);
    expect(sa.duplicates + sb.duplicates).toBe(0);
    // Each batch reached both; the one not holding its gateway left it unread.
    expect(sa.batches + sb.batches).toBe(40);
    expect(sa.batches).toBeGreaterThan(0);
    expect(sb.batches).toBeGreaterThan(0);
    // The fleet's books, from either ingestor: every reading once, per gateway.
    const fleet = (await (await fetch(`${a.httpUrl}/api/fleet/counts`)).json()) as { total: { written: number }; gateways: Record<string, { written: number }> };
    expect(fleet.total.written).toBe(800);
    for (const id of gateways) expect(fleet.gateways[id]?.written).toBe(100);
    // One fleet view: a device only one ingestor wrote is known to both health models.
    const lone = await GatewayPeer.connect(url, 'gw-lone');
    cleanups.push(() => lone.close());
    await lone.send(1, [reading(1, { deviceId: 'dev-lone' })]);
    expect(await lone.waitAck(1, 30_000)).toMatchObject({ accepted: 1 });
    for (const instance of [a, b]) await expect.poll(() => instance.health?.fleet.device('dev-lone') !== undefined, { timeout: 10_000 }).toBe(true);
    const metrics = await (await fetch(`${a.httpUrl}/metrics`)).text();
    expect(metrics).toMatch(/^ferry_ingestor_cluster_members 2$/m);
    expect(metrics).toMatch(new RegExp(`^ferry_ingestor_cluster_gateways_held ${a.stats().cluster?.gatewaysHeld}$`, 'm'));
  });
});
