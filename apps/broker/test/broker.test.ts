import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import { isFerryError } from '@ferry/protocol';
import { createLogger, silentLogger } from '@ferry/runtime';
import { createBroker } from '../src/index.js';
import type { Broker, BrokerConfigInput } from '../src/index.js';
import { mosquittoPublish, mosquittoSubscribe } from './mosquitto-clients.js';
import type { MosquittoSubscriber } from './mosquitto-clients.js';

const brokers: Broker[] = [];
const clients: MqttClient[] = [];
const subscribers: MosquittoSubscriber[] = [];

// Log files stay open until the whole file is done: aedes may still report a disconnect after close().
const logFds: number[] = [];
afterAll(() => {
  for (const fd of logFds.splice(0)) closeSync(fd);
});

afterEach(async () => {
  await Promise.all(subscribers.splice(0).map((s) => s.stop()));
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  await Promise.all(brokers.splice(0).map((b) => b.close()));
});

async function startBroker(config: BrokerConfigInput = {}): Promise<Broker & { port: number }> {
  const broker = createBroker({ listen: { port: 0 }, http: false, ...config }, { logger: silentLogger() });
  brokers.push(broker);
  await broker.ready();
  return Object.assign(broker, { port: Number(new URL(broker.url!).port) });
}

async function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, ...options }, false);
  clients.push(client);
  return client;
}

/** Collects messages on a client and resolves once `count` have arrived. */
function collect(client: MqttClient, count: number, timeoutMs = 10_000): Promise<{ topic: string; payload: string; qos: number; retain: boolean }[]> {
  const got: { topic: string; payload: string; qos: number; retain: boolean }[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${count} messages`)), timeoutMs);
    client.on('message', (topic, payload, packet) => {
      got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain });
      if (got.length === count) {
        clearTimeout(timer);
        resolve(got);
      }
    });
  });
}

async function pollUntil<T>(read: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error('condition not met before the deadline');
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('broker', () => {
  it('relays QoS 0 and QoS 1 publishes between MQTT.js clients', async () => {
    const broker = await startBroker();
    const sub = await connect(broker.url!);
    await sub.subscribeAsync('relay/#', { qos: 1 });
    const arrived = collect(sub, 2);
    const pub = await connect(broker.url!);
    await pub.publishAsync('relay/a', 'zero', { qos: 0 });
    await pub.publishAsync('relay/b', 'one', { qos: 1 });
    const got = await arrived;
    expect(got.map((m) => [m.topic, m.payload, m.qos]).sort()).toEqual([
      ['relay/a', 'zero', 0],
      ['relay/b', 'one', 1],
    ]);
    expect(broker.stats()).toEqual({ connections: 2, published: 2 });
  });

  it('relays mosquitto_pub to MQTT.js and MQTT.js to mosquitto_sub at QoS 0 and 1', async () => {
    const broker = await startBroker();
    const sub = await connect(broker.url!);
    await sub.subscribeAsync('interop/in/#', { qos: 1 });
    const arrived = collect(sub, 2);
    expect((await mosquittoPublish(broker.port, ['-t', 'interop/in/q0', '-q', '0', '-m', 'from-mosquitto-0'])).code).toBe(0);
    expect((await mosquittoPublish(broker.port, ['-t', 'interop/in/q1', '-q', '1', '-m', 'from-mosquitto-1'])).code).toBe(0);
    expect((await arrived).map((m) => [m.topic, m.payload, m.qos]).sort()).toEqual([
      ['interop/in/q0', 'from-mosquitto-0', 0],
      ['interop/in/q1', 'from-mosquitto-1', 1],
    ]);

    const mosq = mosquittoSubscribe(broker.port, 'interop/out/#', ['-q', '1']);
    subscribers.push(mosq);
    await mosq.subscribed;
    const pub = await connect(broker.url!);
    await pub.publishAsync('interop/out/q0', 'to-mosquitto-0', { qos: 0 });
    await pub.publishAsync('interop/out/q1', 'to-mosquitto-1', { qos: 1 });
    const got = await mosq.waitFor(2);
    expect(got.map((m) => [m.topic, m.payload, m.qos]).sort()).toEqual([
      ['interop/out/q0', 'to-mosquitto-0', 0],
      ['interop/out/q1', 'to-mosquitto-1', 1],
    ]);
  });

  it('keeps a retained message for subscribers that arrive later', async () => {
    const broker = await startBroker();
    expect((await mosquittoPublish(broker.port, ['-t', 'devices/d1/status', '-q', '1', '-r', '-m', 'online'])).code).toBe(0);
    const mosq = mosquittoSubscribe(broker.port, 'devices/+/status', ['-q', '1']);
    subscribers.push(mosq);
    const [message] = await mosq.waitFor(1);
    expect(message).toMatchObject({ topic: 'devices/d1/status', payload: 'online', retained: true });

    const late = await connect(broker.url!);
    const arrived = collect(late, 1);
    await late.subscribeAsync('devices/+/status', { qos: 1 });
    expect((await arrived)[0]).toMatchObject({ topic: 'devices/d1/status', payload: 'online', retain: true });
  });

  it('publishes the Last Will of a client whose connection drops without DISCONNECT', async () => {
    const broker = await startBroker();
    const mosq = mosquittoSubscribe(broker.port, 'gw/+/status', ['-q', '1']);
    subscribers.push(mosq);
    await mosq.subscribed;
    const watched = await connect(broker.url!, {
      clientId: 'will-holder',
      will: { topic: 'gw/g1/status', payload: Buffer.from('offline'), qos: 1, retain: true },
    });
    (watched.stream as Socket).destroy();
    const [will] = await mosq.waitFor(1);
    expect(will).toMatchObject({ topic: 'gw/g1/status', payload: 'offline', qos: 1 });
  });

  it('does not publish the Last Will after a clean DISCONNECT', async () => {
    const broker = await startBroker();
    const sub = await connect(broker.url!);
    await sub.subscribeAsync('gw/+/status', { qos: 1 });
    const received: string[] = [];
    sub.on('message', (topic) => received.push(topic));
    const polite = await connect(broker.url!, { will: { topic: 'gw/g2/status', payload: Buffer.from('offline'), qos: 1, retain: false } });
    await polite.endAsync();
    // A marker published after the disconnect arrives after any will would have.
    const marker = collect(sub, 1);
    const pub = await connect(broker.url!);
    await pub.publishAsync('gw/marker/status', 'marker', { qos: 1 });
    await marker;
    expect(received).toEqual(['gw/marker/status']);
  });

  it('refuses anonymous and wrong credentials when auth is configured, and logs the failure', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-broker-log-'));
    const logFile = join(dir, 'broker.log');
    const fd = openSync(logFile, 'a');
    logFds.push(fd);
    const logger = createLogger({ level: 'info', fd });
    const broker = createBroker(
      { listen: { port: 0 }, http: false, auth: { users: [{ username: 'gw1', password: 's3cret' }] }, acl: 'off' },
      { logger },
    );
    try {
      await broker.ready();
      const port = Number(new URL(broker.url!).port);

      await expect(mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0 }, false)).rejects.toThrow(/Bad username or password/i);
      await expect(
        mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0, username: 'gw1', password: 'wrong' }, false),
      ).rejects.toThrow(/Bad username or password/i);
      const refused = await mosquittoPublish(port, ['-u', 'gw1', '-P', 'nope', '-t', 'x', '-m', 'y']);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/user ?name or password|not authori[sz]ed/i);

      const ok = await connect(broker.url!, { username: 'gw1', password: 's3cret' });
      expect(ok.connected).toBe(true);
      expect((await mosquittoPublish(port, ['-u', 'gw1', '-P', 's3cret', '-t', 'x', '-m', 'y'])).code).toBe(0);

      const failures = await pollUntil(() => {
        const lines = readFileSync(logFile, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"auth_failure"'))
          .map((l) => JSON.parse(l) as { event: string; username: string | null; component: string });
        return lines.length >= 3 ? lines : undefined;
      });
      expect(failures.map((f) => f.username)).toEqual([null, 'gw1', 'gw1']);
      expect(failures[0]).toMatchObject({ component: 'broker', event: 'auth_failure' });
    } finally {
      await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
      await broker.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('queues QoS 1 messages for a persistent session while it is offline (MQTT.js)', async () => {
    const broker = await startBroker();
    const first = await connect(broker.url!, { clientId: 'ingestor-persist', clean: false });
    await first.subscribeAsync('ferry/v1/gw/+/batch', { qos: 1 });
    await first.endAsync();

    const pub = await connect(broker.url!);
    for (const n of [1, 2, 3]) await pub.publishAsync(`ferry/v1/gw/g${n}/batch`, `batch-${n}`, { qos: 1 });

    const again = mqtt.connect(broker.url!, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'ingestor-persist', clean: false });
    clients.push(again);
    const connack = new Promise<boolean>((resolve) => again.once('connect', (packet) => resolve(packet.sessionPresent)));
    const queued = await collect(again, 3);
    expect(await connack).toBe(true);
    expect(queued.map((m) => m.payload)).toEqual(['batch-1', 'batch-2', 'batch-3']);
    expect(queued.every((m) => m.qos === 1)).toBe(true);
  });

  it('queues QoS 1 messages for a persistent mosquitto_sub session while it is offline', async () => {
    const broker = await startBroker();
    const first = mosquittoSubscribe(broker.port, 'queue/#', ['-q', '1', '-c', '-i', 'mosq-persist']);
    subscribers.push(first);
    await first.subscribed;
    await first.stop();

    const pub = await connect(broker.url!);
    await pub.publishAsync('queue/a', 'while-offline-1', { qos: 1 });
    await pub.publishAsync('queue/b', 'while-offline-2', { qos: 1 });

    const again = mosquittoSubscribe(broker.port, 'queue/#', ['-q', '1', '-c', '-i', 'mosq-persist']);
    subscribers.push(again);
    const got = await again.waitFor(2);
    expect(got.map((m) => m.payload)).toEqual(['while-offline-1', 'while-offline-2']);
  });

  it('closes the connection of a client that publishes more than maxPayloadBytes', async () => {
    const broker = await startBroker({ maxPayloadBytes: 1024 });
    const pub = await connect(broker.url!);
    const closed = new Promise<void>((resolve) => pub.once('close', () => resolve()));
    pub.publish('big', Buffer.alloc(2048, 1), { qos: 1 });
    await closed;
    const sub = await connect(broker.url!);
    await sub.subscribeAsync('small', { qos: 1 });
    const arrived = collect(sub, 1);
    const pub2 = await connect(broker.url!);
    await pub2.publishAsync('small', Buffer.alloc(1024, 1), { qos: 1 });
    expect((await arrived)[0]?.payload.length).toBe(1024);
  });

  it('serves /healthz and ferry_broker_* metrics on its ops endpoint', async () => {
    const broker = createBroker({ listen: { port: 0 }, http: { port: 0 } }, { logger: silentLogger() });
    brokers.push(broker);
    await broker.ready();
    const pub = await connect(broker.url!);
    await pub.publishAsync('m/1', 'abcd', { qos: 1 });
    await pub.publishAsync('m/0', 'ab', { qos: 0 });

    const health = await fetch(`${broker.httpUrl!}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, connections: 1 });

    // The QoS 0 publish has no ack, so wait until the broker has counted it.
    const metrics = await pollUntil(async () => {
      const text = await (await fetch(`${broker.httpUrl!}/metrics`)).text();
      return /messages_in_total\{qos="0"\}/.test(text) ? text : undefined;
    });
    expect(metrics).toMatch(/^ferry_broker_connections 1$/m);
    expect(metrics).toMatch(/^ferry_broker_messages_in_total\{qos="1"\} 1$/m);
    expect(metrics).toMatch(/^ferry_broker_messages_in_total\{qos="0"\} 1$/m);
    expect(metrics).toMatch(/^ferry_broker_bytes_in_total 6$/m);
    // The process itself, under the standard names dashboards expect.
    expect(metrics).toMatch(/^process_resident_memory_bytes \d+$/m);
    expect(metrics).toMatch(/^nodejs_eventloop_lag_seconds [\d.e-]+$/m);
  });

  it('refuses a bad config value naming the field', () => {
    let caught: unknown;
    try {
      createBroker({ listen: { port: 70000 } });
    } catch (err) {
      caught = err;
    }
    expect(isFerryError(caught, 'FERRY_ERR_CONFIG_INVALID')).toBe(true);
    expect((caught as Error).message).toContain('listen.port');
  });

  it('keeps anonymous access off beyond loopback unless auth says otherwise', async () => {
    const refusal = (config: BrokerConfigInput): string => {
      try {
        createBroker(config);
      } catch (err) {
        expect(isFerryError(err, 'FERRY_ERR_CONFIG_INVALID')).toBe(true);
        return (err as Error).message;
      }
      return 'accepted';
    };
    expect(refusal({ listen: { host: '0.0.0.0', port: 0 } })).toMatch(/auth: listen\.host 0\.0\.0\.0 is reachable beyond this host/);
    expect(refusal({ listen: false, websocket: { host: '::', port: 0 } })).toMatch(/websocket\.host ::/);
    expect(refusal({ listen: { host: '127.0.0.1', port: 0 } })).toBe('accepted');
    expect(refusal({ listen: { host: '0.0.0.0', port: 0 }, auth: { users: [{ username: 'gw', password: 'pw' }] }, acl: 'off' })).toBe('accepted');
    expect(refusal({ auth: {} })).toMatch(/auth needs users or passwordFile/);

    // Open on purpose: anyone may connect, with or without a username.
    const open = await startBroker({ listen: { host: '0.0.0.0', port: 0 }, auth: { allowAnonymous: true } });
    const url = `mqtt://127.0.0.1:${open.port}`;
    expect((await connect(url)).connected).toBe(true);
    expect((await connect(url, { username: 'anyone', password: 'x' })).connected).toBe(true);
  });

  it('closes cleanly: clients are disconnected and the port is released', async () => {
    const broker = await startBroker();
    const client = await connect(broker.url!);
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    await broker.close();
    await closed;
    await expect(mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0 }, false)).rejects.toThrow();
    await expect(broker.ready()).rejects.toThrow(/FERRY_ERR_NOT_READY/);
  });
});
