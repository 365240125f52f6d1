// The alert notifiers as the ingestor wires them (src/health.ts), against a real Mosquitto and a
// real MQTT.js subscriber, and a webhook receiver on a local HTTP server. Health time is a
// ManualClock; the broker, sockets and timers are real.
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync } from 'node:fs';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, createRegistry, silentLogger } from '@ferry/runtime';
import { makeTempDir, startMosquitto, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import type { AlertmanagerAlert, AlertmanagerPayload } from '@ferry/health';
import { createIngestorHealth, healthConfigSchema } from '../src/health.js';
import type { IngestorHealth, WrittenReading } from '../src/health.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Received {
  readonly topic: string;
  readonly retain: boolean;
  readonly alert: AlertmanagerAlert;
}

async function subscriber(url: string): Promise<{ client: MqttClient; received: Received[] }> {
  const received: Received[] = [];
  // Reconnects and subscribes again on its own after a broker restart.
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `alerts-sub-${Math.random().toString(16).slice(2, 8)}`, reconnectPeriod: 200 });
  cleanups.push(() => client.endAsync(true));
  client.on('message', (topic, payload, packet) => received.push({ topic, retain: packet.retain, alert: JSON.parse(payload.toString('utf8')) as AlertmanagerAlert }));
  await client.subscribeAsync('ferry/alerts/#', { qos: 1 });
  return { client, received };
}

async function webhookReceiver(): Promise<{ url: string; received: AlertmanagerPayload[] }> {
  const received: AlertmanagerPayload[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as AlertmanagerPayload);
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, received };
}

async function broker(): Promise<ServerHandle> {
  const handle = await startMosquitto();
  cleanups.push(() => handle.stop());
  return handle;
}

async function health(brokerUrl: string, clock: ManualClock, notifiers: Record<string, unknown>): Promise<IngestorHealth> {
  const dataDir = await makeTempDir('health-notifiers');
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const config = healthConfigSchema.parse({
    tickMs: 20,
    flushIntervalMs: 1000,
    defaults: { timeoutMs: '1m', graceMs: 0 },
    rules: [{ name: 'device-offline', kind: 'device-offline', severity: 'critical' }],
    notifiers: { log: false, ...notifiers },
  });
  const h = createIngestorHealth({ config, dataDir, brokerUrl, clock, logger: silentLogger(), links: () => ({ broker: true, sink: true }), deadLetters: () => 0, registry: createRegistry() });
  cleanups.push(() => h.close());
  await h.start();
  return h;
}

function written(clock: ManualClock, deviceId: string): WrittenReading[] {
  const now = clock.now();
  return [{ gatewayId: 'gw1', origin: 'gateway', reading: { deviceId, kind: 'telemetry', ts: now, tsSource: 'device', receivedAt: now, metrics: { temperature: 21 } } }];
}

describe('mqtt alert notifier on a real broker', () => {
  it('publishes a firing alert and its resolution on the configured topic, in the Alertmanager alert shape', async () => {
    const mosquitto = await broker();
    const sub = await subscriber(mosquitto.url);
    const clock = new ManualClock(Date.UTC(2026, 10, 25, 12, 0, 0));
    const h = await health(mosquitto.url, clock, { mqttTopic: 'ferry/alerts' });

    h.observeWritten(written(clock, 'pump-1'));
    clock.advance(120_000);
    const firingAt = clock.now();
    await waitFor(() => sub.received.length >= 1, { timeoutMs: 20_000, what: 'the firing alert on MQTT' });
    const [firing] = sub.received;
    expect(firing?.topic).toBe('ferry/alerts/device-offline/pump-1');
    expect(firing?.retain).toBe(false);
    expect(firing?.alert).toEqual({
      status: 'firing',
      labels: { alertname: 'device-offline', severity: 'critical', deviceId: 'pump-1', gatewayId: 'gw1' },
      annotations: { summary: 'device pump-1 is offline', value: 'offline' },
      startsAt: new Date(firingAt).toISOString(),
      endsAt: '0001-01-01T00:00:00Z',
      generatorURL: '',
      fingerprint: expect.stringMatching(/^[0-9a-f]{16}$/),
    });

    clock.advance(5_000);
    h.observeWritten(written(clock, 'pump-1'));
    await waitFor(() => sub.received.length >= 2, { timeoutMs: 20_000, what: 'the resolved alert on MQTT' });
    const resolved = sub.received[1];
    expect(resolved?.topic).toBe('ferry/alerts/device-offline/pump-1');
    expect(resolved?.alert).toMatchObject({ status: 'resolved', startsAt: new Date(firingAt).toISOString(), endsAt: new Date(clock.now()).toISOString(), fingerprint: firing?.alert.fingerprint });
    // Two batches, none dropped (the first may count as failed if it came before the notifier's connection was up: it was queued).
    const stats = await waitFor(
      () => {
        const s = h.notifiers.stats()['mqtt'];
        return s && s.delivered + s.failed === 2 ? s : undefined;
      },
      { timeoutMs: 20_000, what: 'both batches settled in the hub' },
    );
    expect(stats.dropped).toBe(0);
  });

  it('with the broker down, the webhook still delivers; the MQTT alert is queued and published once the broker is back', async () => {
    const mosquitto = await broker();
    const sub = await subscriber(mosquitto.url);
    const hook = await webhookReceiver();
    const clock = new ManualClock(Date.UTC(2026, 10, 25, 12, 0, 0));
    // Retained, because the subscriber and the notifier reconnect in either order after the restart.
    const h = await health(mosquitto.url, clock, { mqttTopic: 'ferry/alerts', mqttRetain: true, webhooks: [{ url: hook.url }] });

    h.observeWritten(written(clock, 'pump-1'));
    clock.advance(120_000);
    h.observeWritten(written(clock, 'pump-2'));
    await waitFor(() => sub.received.length === 1 && hook.received.length === 1, { timeoutMs: 20_000, what: 'pump-1 on both notifiers' });

    await mosquitto.kill();
    clock.advance(120_000);
    await waitFor(() => hook.received.some((p) => p.alerts.some((a) => a.labels['deviceId'] === 'pump-2')), { timeoutMs: 20_000, what: 'pump-2 on the webhook while the broker is down' });
    await waitFor(() => (h.notifiers.stats()['mqtt']?.failed ?? 0) >= 1, { timeoutMs: 20_000, what: 'the MQTT notifier to report the batch queued' });
    expect(sub.received.map((r) => r.alert.labels['deviceId'])).toEqual(['pump-1']);

    await mosquitto.restart();
    const pump2 = await waitFor(() => sub.received.find((r) => r.alert.labels['deviceId'] === 'pump-2'), { timeoutMs: 30_000, what: 'pump-2 on MQTT after the restart' });
    expect(pump2).toMatchObject({ topic: 'ferry/alerts/device-offline/pump-2', alert: { status: 'firing' } });

    // Down again with an alert in the MQTT queue: closing the health monitor does not wait for the broker.
    await mosquitto.kill();
    clock.advance(5_000);
    h.observeWritten(written(clock, 'pump-1'));
    await waitFor(() => hook.received.some((p) => p.status === 'resolved'), { timeoutMs: 20_000, what: 'the resolve on the webhook' });
    await h.close();
  });
});
