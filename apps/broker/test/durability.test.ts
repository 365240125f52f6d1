// Durability across a broker kill -9: with SQLite persistence, a QoS 1 or 2 message queued for an
// offline persistent session and a retained message are still there when the broker comes back.
// Needs `npx tsc -b` first (the broker runs as the built CLI).
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import { stablePort, makeTempDir, waitFor } from '@ferry/testkit';
import { killBrokerProcesses, startBrokerProcess } from './broker-process.js';

let dir: string;
const clients: MqttClient[] = [];

beforeAll(async () => {
  dir = await makeTempDir('broker-durability');
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
});
afterAll(() => {
  killBrokerProcesses();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, ...options }, false);
  clients.push(client);
  return client;
}

function collect(client: MqttClient): { topic: string; payload: string; qos: number; retain: boolean }[] {
  const seen: { topic: string; payload: string; qos: number; retain: boolean }[] = [];
  client.on('message', (topic, payload, packet) => seen.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain }));
  return seen;
}

describe('SQLite persistence across a broker kill -9', () => {
  it('delivers QoS 1 and QoS 2 messages queued for an offline persistent session after the restart', async () => {
    const port = await stablePort();
    const config = { dataDir: join(dir, 'queued') };
    let broker = await startBrokerProcess(dir, 'queued', config, port);

    const sub1 = await connect(broker.url, { clientId: 'durable-sub', clean: false });
    await sub1.subscribeAsync('ferry/test/#', { qos: 2 });
    await sub1.endAsync();

    const pub = await connect(broker.url, { clientId: 'durable-pub' });
    await pub.publishAsync('ferry/test/q1', 'one', { qos: 1 });
    await pub.publishAsync('ferry/test/q2', 'two', { qos: 2 });
    await broker.kill();

    broker = await startBrokerProcess(dir, 'queued', config, port);
    // Listeners go on before the CONNACK, so that nothing the resumed session replays is missed.
    const sub2 = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'durable-sub', clean: false });
    clients.push(sub2);
    const seen = collect(sub2);
    const sessionPresent = await new Promise<boolean>((resolve, reject) => {
      sub2.once('connect', (packet) => resolve(packet.sessionPresent));
      sub2.once('error', reject);
    });
    expect(sessionPresent).toBe(true);
    await waitFor(() => seen.length >= 2, { timeoutMs: 20_000, what: 'both queued messages after the restart' });
    // QoS 1 is at least once: a publish whose journal entry was not yet cleared when the broker was
    // killed is replayed, so it may come twice. QoS 2 is exactly once.
    const distinct = [...new Map(seen.map((m) => [`${m.topic} ${m.payload} ${m.qos}`, [m.topic, m.payload, m.qos]])).values()];
    expect(distinct.sort()).toEqual([
      ['ferry/test/q1', 'one', 1],
      ['ferry/test/q2', 'two', 2],
    ]);
    expect(seen.filter((m) => m.qos === 2)).toHaveLength(1);
    await broker.stop();
  });

  it('delivers every QoS 1 publish it acknowledged, when killed right after the last PUBACK', async () => {
    const config = { dataDir: join(dir, 'acked') };
    let broker = await startBrokerProcess(dir, 'acked', config, 0);
    const sub1 = await connect(broker.url, { clientId: 'acked-sub', clean: false });
    await sub1.subscribeAsync('acked/#', { qos: 1 });
    await sub1.endAsync();

    // Four publishers, 50 publishes in flight each: PUBACKs come from group commits of many publishes.
    const TOTAL = 2000;
    const publishers = await Promise.all([0, 1, 2, 3].map((i) => connect(broker.url, { clientId: `acked-pub-${i}` })));
    const acked: string[] = [];
    await Promise.all(
      publishers.map(async (pub, p) => {
        for (let start = p * 50; start < TOTAL; start += 200) {
          const window = Array.from({ length: 50 }, (_, k) => `m${start + k}`).filter((_, k) => start + k < TOTAL);
          await Promise.all(window.map((m) => pub.publishAsync(`acked/${p}`, m, { qos: 1 }).then(() => acked.push(m))));
        }
      }),
    );
    await broker.kill();
    expect(acked).toHaveLength(TOTAL);

    broker = await startBrokerProcess(dir, 'acked', config, 0);
    const sub2 = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'acked-sub', clean: false });
    clients.push(sub2);
    const seen = collect(sub2);
    const delivered = new Set<string>();
    await waitFor(
      () => {
        for (const m of seen) delivered.add(m.payload);
        return delivered.size >= TOTAL;
      },
      { timeoutMs: 30_000, what: `all ${TOTAL} acknowledged publishes at the subscriber (${delivered.size} so far)` },
    );
    expect([...delivered].sort()).toEqual([...acked].sort());
    await broker.stop();
  });

  it('resends to a reconnecting QoS 1 subscriber, after a kill -9, every message it had not acknowledged, each cleared by its PUBACK', async () => {
    const config = { dataDir: join(dir, 'inflight') };
    let broker = await startBrokerProcess(dir, 'inflight', config, 0);
    const sub1 = await connect(broker.url, { clientId: 'inflight-sub', clean: false });
    await sub1.subscribeAsync('inflight/#', { qos: 1 });
    await sub1.endAsync();
    const pub = await connect(broker.url, { clientId: 'inflight-pub' });
    const sent = ['held-a', 'held-b', 'held-c', 'held-d'];
    for (const m of sent) await pub.publishAsync('inflight/x', m, { qos: 1 });

    // The subscriber takes its queue but acknowledges nothing: MQTT.js stops at the first message,
    // whose callback never runs, and the raw bytes show that the broker sent them all.
    const holder = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'inflight-sub', clean: false });
    clients.push(holder);
    let raw = '';
    holder.stream.on('data', (chunk: Buffer) => (raw += chunk.toString('latin1')));
    holder.handleMessage = () => {
      // no callback: no PUBACK
    };
    await waitFor(() => sent.every((m) => raw.includes(m)), { timeoutMs: 20_000, what: 'the queued messages sent at the first connect' });
    await broker.kill();
    await holder.endAsync(true);

    broker = await startBrokerProcess(dir, 'inflight', config, 0);
    const sub2 = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'inflight-sub', clean: false });
    clients.push(sub2);
    const again: { payload: string; messageId: number | undefined }[] = [];
    sub2.on('message', (_topic, payload, packet) => again.push({ payload: payload.toString(), messageId: packet.messageId }));
    await waitFor(() => new Set(again.map((m) => m.payload)).size >= sent.length, { timeoutMs: 20_000, what: 'every unacknowledged message after the restart' });
    expect([...new Set(again.map((m) => m.payload))].sort()).toEqual(sent);
    // Each in flight under its own packet id, and (MQTT.js acks each) every PUBACK clears its row.
    expect(new Set(again.map((m) => m.messageId)).size).toBe(again.length);
    await sub2.endAsync();

    const sub3 = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'inflight-sub', clean: false });
    clients.push(sub3);
    const after = collect(sub3);
    await new Promise<void>((resolve, reject) => {
      sub3.once('connect', () => resolve());
      sub3.once('error', reject);
    });
    // A marker published now arrives after anything still queued: nothing else may come before it.
    const pub2 = await connect(broker.url, { clientId: 'inflight-pub' });
    await pub2.publishAsync('inflight/x', 'marker', { qos: 1 });
    await waitFor(() => after.some((m) => m.payload === 'marker'), { timeoutMs: 20_000, what: 'the marker' });
    expect(after.map((m) => m.payload)).toEqual(['marker']);
    await broker.stop();
  });

  it('keeps retained messages across the restart', async () => {
    const port = await stablePort();
    const config = { dataDir: join(dir, 'retained') };
    let broker = await startBrokerProcess(dir, 'retained', config, port);
    const pub = await connect(broker.url, { clientId: 'retain-pub' });
    await pub.publishAsync('ferry/retained/a', 'kept', { qos: 1, retain: true });
    await broker.kill();

    broker = await startBrokerProcess(dir, 'retained', config, port);
    const sub = await connect(broker.url, { clientId: 'retain-sub' });
    const seen = collect(sub);
    await sub.subscribeAsync('ferry/retained/#', { qos: 1 });
    await waitFor(() => seen.length >= 1, { timeoutMs: 20_000, what: 'the retained message after the restart' });
    expect(seen[0]).toMatchObject({ topic: 'ferry/retained/a', payload: 'kept', retain: true });
    await broker.stop();
  });
});
