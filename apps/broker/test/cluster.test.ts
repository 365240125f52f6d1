// Cluster mode against a real redis-server: two broker processes relay each other's publishes,
// and a persistent session moves from one to the other. Needs `npx tsc -b` first.
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import { makeTempDir, startRedis, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { killBrokerProcesses, startBrokerProcess } from './broker-process.js';
import type { BrokerProcess } from './broker-process.js';

let dir: string;
let redis: ServerHandle;
let a: BrokerProcess;
let b: BrokerProcess;
const clients: MqttClient[] = [];

beforeAll(async () => {
  dir = await makeTempDir('broker-cluster');
  redis = await startRedis();
  const config = { cluster: { redisUrl: redis.url } };
  [a, b] = await Promise.all([startBrokerProcess(dir, 'a', config, 0), startBrokerProcess(dir, 'b', config, 0)]);
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
});
afterAll(async () => {
  if (process.env.DUMP_BROKERS) console.log(a?.output(), b?.output());
  await Promise.all([a?.stop(), b?.stop()]);
  killBrokerProcesses();
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, ...options }, false);
  clients.push(client);
  return client;
}

/** Subscribes on B, publishes `text` on A until it arrives, and returns what B's subscriber got first. */
async function relayAtoB(topic: string, text: string): Promise<string | undefined> {
  const sub = await connect(b.url);
  const seen: string[] = [];
  sub.on('message', (_topic, payload) => seen.push(payload.toString()));
  await sub.subscribeAsync(`${topic}/#`, { qos: 1 });
  const pub = await connect(a.url);
  // The subscription reaches broker A through Redis shortly after the SUBACK; publish until it arrives.
  await waitFor(
    async () => {
      await pub.publishAsync(`${topic}/x`, text, { qos: 1 });
      return seen.length > 0;
    },
    { timeoutMs: 20_000, what: `a publish on A at the subscriber on B (${topic})` },
  );
  return seen[0];
}

describe('cluster mode (mqemitter-redis + aedes-persistence-redis)', () => {
  it('relays a publish on one broker to a subscriber on the other', async () => {
    expect(await relayAtoB('cluster', 'across')).toBe('across');
  });

  it('resumes a persistent session on the other broker with the messages queued meanwhile', async () => {
    const first = await connect(a.url, { clientId: 'roamer', clean: false });
    await first.subscribeAsync('roam/#', { qos: 1 });
    await first.endAsync();
    const pub = await connect(b.url);
    await pub.publishAsync('roam/1', 'queued', { qos: 1 });

    const second = mqtt.connect(b.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'roamer', clean: false });
    clients.push(second);
    const seen: string[] = [];
    second.on('message', (_topic, payload) => seen.push(payload.toString()));
    const sessionPresent = await new Promise<boolean>((resolve, reject) => {
      second.once('connect', (packet) => resolve(packet.sessionPresent));
      second.once('error', reject);
    });
    expect(sessionPresent).toBe(true);
    await waitFor(() => seen.length > 0, { timeoutMs: 20_000, what: 'the queued message on the other broker' });
    // QoS 1 is at least once: when the publish is still crossing Redis as the session resumes,
    // the live copy and the queued copy can both arrive (seen once in a loaded CI run). What must
    // hold is that the queued message arrives and nothing else does.
    expect(new Set(seen)).toEqual(new Set(['queued']));
    expect(seen.length).toBeLessThanOrEqual(2);
  });

  it('acknowledges a persistent session subscribing to several topics in one packet, and delivers on each', async () => {
    // aedes 1.2 stores such a SUBSCRIBE once per topic in parallel; aedes-persistence-redis lost
    // one of those waits, so the SUBACK never came and a topic stayed silent (the ingestor's
    // batches and statuses in one packet): before the fix the first packet already got no SUBACK.
    const pub = await connect(b.url);
    for (let i = 0; i < 10; i++) {
      const client = await connect(a.url, { clientId: `multi-${i}`, clean: false });
      const seen = new Set<string>();
      client.on('message', (topic) => seen.add(topic.split('/')[0]!));
      const granted = await Promise.race([
        client.subscribeAsync({ [`one${i}/#`]: { qos: 1 }, [`two${i}/#`]: { qos: 1 }, [`three${i}/#`]: { qos: 1 } }),
        new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`no SUBACK for packet ${i}`)), 10_000)),
      ]);
      expect(granted.map((g) => g.qos)).toEqual([1, 1, 1]);
      await waitFor(
        async () => {
          for (const level of [`one${i}`, `two${i}`, `three${i}`]) if (!seen.has(level)) await pub.publishAsync(`${level}/x`, 'x', { qos: 1 });
          return seen.size === 3;
        },
        { timeoutMs: 20_000, what: `a publish on every topic of packet ${i}` },
      );
    }
  });

  it('gets every CONNACK through when sessions move while their messages are in flight', async () => {
    // Before the CONNACK-first guard, a queued message could reach the client ahead of its CONNACK
    // and MQTT.js then timed out the connect: about 1 move in 30.
    const options = { protocolVersion: 4 as const, reconnectPeriod: 0, clean: false, connectTimeout: 10_000 };
    const pub = await connect(b.url);
    for (let i = 0; i < 40; i++) {
      const clientId = `mover-${i}`;
      const first = await mqtt.connectAsync(a.url, { ...options, clientId });
      await first.subscribeAsync('move/#', { qos: 1 });
      await first.endAsync();
      await pub.publishAsync('move/1', `m${i}`, { qos: 1 });
      const second = await mqtt.connectAsync(b.url, { ...options, clientId });
      await second.endAsync(true);
    }
  });

  it('stays up through a Redis crash and relays again once Redis is back', async () => {
    await redis.kill();
    // ioredis notices at once and keeps reconnecting; each failure is logged, not thrown.
    await waitFor(() => a.output().includes('cluster_redis_error') && b.output().includes('cluster_redis_error'), {
      timeoutMs: 20_000,
      what: 'both brokers to report the lost Redis connection',
    });
    await redis.restart();
    expect(a.running() && b.running()).toBe(true);
    expect(await relayAtoB('after', 'back')).toBe('back');
  });
});
