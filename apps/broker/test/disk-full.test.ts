// The broker's SQLite persistence on a full disk, for real (a 4 MiB tmpfs filled to the last block):
// the broker stays up whatever aedes asks of the persistence, says so in /healthz and /metrics, and
// delivers what it PUBACKed once space returns, without a restart.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import { createRegistry, silentLogger } from '@ferry/runtime';
import { fillDisk, mountSmallDisk, waitFor } from '@ferry/testkit';
import type { SmallDisk } from '@ferry/testkit';
import { createBroker } from '../src/index.js';
import type { Broker } from '../src/index.js';

let small: SmallDisk | undefined;
let disk: string;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  small = await mountSmallDisk('4m', 'broker-disk-full');
  disk = small.path;
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(() => {
  small?.close();
});

/** Fills the small disk with a file, leaving `leaveBytes` free; removed after the test. */
function fillSmallDisk(leaveBytes = 0): string {
  const path = join(disk, 'filler');
  fillDisk(path, leaveBytes);
  cleanups.push(() => rmSync(path, { force: true }));
  return path;
}

async function startBroker(name: string): Promise<{ broker: Broker; registry: ReturnType<typeof createRegistry> }> {
  const dataDir = join(disk, name);
  const registry = createRegistry();
  const broker = createBroker({ listen: { host: '127.0.0.1', port: 0 }, http: { host: '127.0.0.1', port: 0 }, dataDir }, { logger: silentLogger(), registry });
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  cleanups.push(() => broker.close());
  await broker.ready();
  return { broker, registry };
}

async function connect(url: string, options: IClientOptions): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5_000, ...options }, false);
  client.on('error', () => undefined);
  cleanups.push(() => client.endAsync(true));
  return client;
}

async function storageOf(broker: Broker): Promise<{ status: number; storage: { full: boolean; failures: number; redeliveries: number } }> {
  const res = await fetch(`${broker.httpUrl}/healthz`);
  const body = (await res.json()) as { storage: { full: boolean; failures: number; redeliveries: number } };
  return { status: res.status, storage: body.storage };
}

async function metric(registry: ReturnType<typeof createRegistry>, name: string): Promise<number> {
  const found = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  return found?.values.reduce((sum, v) => sum + v.value, 0) ?? 0;
}

describe('the broker on a full disk', () => {
  it('stays up when a client takes over a session whose will is stored while the disk is full, and takes it again once space returns', async () => {
    const { broker, registry } = await startBroker('wills');
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    cleanups.push(() => process.off('unhandledRejection', onUnhandled));
    const will = { topic: 'status/gw-1', payload: Buffer.from('offline'), qos: 0 as const, retain: false };
    await connect(broker.url!, { clientId: 'gw-1', clean: false, will });

    fillSmallDisk();
    // The same client id again, as after a half-open connection: aedes deletes the stored will
    // first, and a failure there used to be an unhandled rejection, the end of the process.
    await connect(broker.url!, { clientId: 'gw-1', clean: false, will }).catch(() => undefined);
    await waitFor(async () => (await storageOf(broker)).storage.full, { timeoutMs: 10_000, what: '/healthz to report a full disk' });
    expect((await storageOf(broker)).status).toBe(503);
    expect(await metric(registry, 'ferry_broker_storage_full')).toBe(1);
    expect(await metric(registry, 'ferry_broker_storage_full_total')).toBeGreaterThan(0);
    expect(unhandled).toEqual([]);

    rmSync(join(disk, 'filler'));
    const back = await waitFor(() => connect(broker.url!, { clientId: 'gw-1', clean: false, will }).catch(() => undefined), { timeoutMs: 10_000, what: 'the client connected again' });
    expect(back.connected).toBe(true);
    await waitFor(async () => (await storageOf(broker)).status === 200, { timeoutMs: 30_000, what: '/healthz ok again' });
    expect(await metric(registry, 'ferry_broker_storage_full')).toBe(0);
    expect(unhandled).toEqual([]);
  });

  it('publishes again, once space returns, a QoS 1 message it PUBACKed and then could not queue for its subscribers', async () => {
    const { broker } = await startBroker('redelivery');
    const subscribers = ['sub-1', 'sub-2', 'sub-3', 'sub-4', 'sub-5'];
    for (const clientId of subscribers) {
      const sub = await connect(broker.url!, { clientId, clean: false });
      await sub.subscribeAsync('big/#', { qos: 1 });
      await sub.endAsync();
    }
    // Room for the journal's copy of a 200 KB message, not for five queued copies of it.
    fillSmallDisk(600 * 1024);
    const payload = Buffer.alloc(200 * 1024, 7);
    const publisher = await connect(broker.url!, { clientId: 'big-publisher', clean: true });
    await publisher.publishAsync('big/one', payload, { qos: 1 });
    await waitFor(async () => (await storageOf(broker)).storage.redeliveries === 1, { timeoutMs: 10_000, what: 'the publish waiting to be published again' });
    expect((await storageOf(broker)).storage.full).toBe(true);

    rmSync(join(disk, 'filler'));
    await waitFor(async () => (await storageOf(broker)).storage.redeliveries === 0, { timeoutMs: 15_000, what: 'the publish stored and relayed' });
    for (const clientId of subscribers) {
      const sub = mqtt.connect(broker.url!, { protocolVersion: 4, reconnectPeriod: 0, clientId, clean: false });
      cleanups.push(() => sub.endAsync(true));
      const got: Buffer[] = [];
      sub.on('message', (_topic, message) => got.push(message));
      await waitFor(() => got.length >= 1, { timeoutMs: 10_000, what: `${clientId} to get the message` });
      // Its PUBACK is in; whatever else was queued for it would have come with the session.
      await sub.endAsync();
      expect(got).toHaveLength(1);
      expect(got[0]!.equals(payload)).toBe(true);
    }
  });
});
