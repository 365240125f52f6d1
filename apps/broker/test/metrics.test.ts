// The ops endpoint: counts of what the broker holds and relays, read from /metrics and /healthz.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { silentLogger } from '@ferry/runtime';
import { makeTempDir, waitFor } from '@ferry/testkit';
import { createBroker } from '../src/index.js';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('broker-metrics');
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('broker metrics', () => {
  it('reports retained messages, stored in-flight messages and messages out by QoS', async () => {
    const broker = createBroker({ listen: { port: 0 }, http: { port: 0 }, dataDir: join(dir, 'data') }, { logger: silentLogger() });
    await broker.ready();
    const opts = { protocolVersion: 4 as const, reconnectPeriod: 0 };
    const offline = await mqtt.connectAsync(broker.url!, { ...opts, clientId: 'offline-sub', clean: false });
    await offline.subscribeAsync('m/#', { qos: 1 });
    await offline.endAsync();
    const online = await mqtt.connectAsync(broker.url!, opts);
    let got = 0;
    online.on('message', () => (got += 1));
    await online.subscribeAsync('m/#', { qos: 1 });
    const pub = await mqtt.connectAsync(broker.url!, opts);
    try {
      await pub.publishAsync('m/kept', 'r', { qos: 1, retain: true });
      await pub.publishAsync('m/zero', 'z', { qos: 0 });
      await waitFor(() => got === 2, { what: 'both messages at the online subscriber' });
      const text = await waitFor(async () => {
        const body = await (await fetch(`${broker.httpUrl!}/metrics`)).text();
        return /messages_out_total\{qos="0"\} 1/.test(body) ? body : undefined;
      }, { what: 'the QoS 0 message counted out' });
      expect(text).toMatch(/^ferry_broker_retained_messages 1$/m);
      // Both messages wait for the offline persistent session; only the QoS 1 one is stored.
      expect(text).toMatch(/^ferry_broker_inflight_messages\{direction="outgoing"\} 1$/m);
      expect(text).toMatch(/^ferry_broker_messages_out_total\{qos="1"\} 1$/m);
      const health = (await (await fetch(`${broker.httpUrl!}/healthz`)).json()) as { ok: boolean; urls: { tcp: string } };
      expect(health).toMatchObject({ ok: true, urls: { tcp: broker.url } });
    } finally {
      await Promise.all([online.endAsync(true), pub.endAsync(true)]);
      await broker.close();
    }
  });
});
