import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, silentLogger } from '@ferry/runtime';
import { HealthMonitor } from '../src/monitor.js';
import { parseRules } from '../src/rules.js';
import type { AlertNotification } from '../src/alerts.js';
import { createNotifierHub, createWebhookNotifier, createMqttNotifier, createLogNotifier } from '../src/notifiers/index.js';
import type { AlertmanagerPayload, Notifier } from '../src/notifiers/index.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

function body(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** A receiver that answers the given statuses in turn (then 200) and keeps what it got. */
async function receiver(statuses: number[]): Promise<{ url: string; received: AlertmanagerPayload[]; attempts: () => number }> {
  const received: AlertmanagerPayload[] = [];
  let attempts = 0;
  const server = createServer((req, res) => {
    void body(req).then((text) => {
      attempts++;
      const status = statuses.shift() ?? 200;
      if (status === 200) received.push(JSON.parse(text) as AlertmanagerPayload);
      if (status === 429) res.setHeader('retry-after', '0');
      res.writeHead(status).end();
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, received, attempts: () => attempts };
}

function firingBatch(): AlertNotification[] {
  const clock = new ManualClock(1_700_000_000_000);
  const monitor = new HealthMonitor({ clock, rules: parseRules([{ name: 'device-offline', kind: 'device-offline', severity: 'critical' }]), defaults: { graceMs: 0, timeoutMs: '1m' } });
  monitor.observeReading({ deviceId: 'pump-1', gatewayId: 'gw1', kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 } });
  monitor.tick();
  clock.advance(120_000);
  return monitor.tick();
}

const fast = { initialMs: 10, maxMs: 50, factor: 2 };

describe('webhook notifier', () => {
  it('retries 5xx and 429 and then delivers an Alertmanager-compatible payload', async () => {
    const hook = await receiver([503, 429, 500]);
    const notifier = createWebhookNotifier({ url: hook.url, backoff: fast, externalURL: 'http://ops.example:9100' });
    await notifier.notify(firingBatch());
    expect(hook.attempts()).toBe(4);
    const [payload] = hook.received;
    expect(payload).toMatchObject({ version: '4', status: 'firing', receiver: 'ferry', commonLabels: { alertname: 'device-offline', severity: 'critical', deviceId: 'pump-1', gatewayId: 'gw1' } });
    expect(payload?.alerts[0]).toMatchObject({ status: 'firing', endsAt: '0001-01-01T00:00:00Z', annotations: { summary: 'device pump-1 is offline' } });
    expect(payload?.alerts[0]?.startsAt).toBe(new Date(1_700_000_120_000).toISOString());
    expect(payload?.alerts[0]?.fingerprint).toMatch(/^[0-9a-f]{16}$/);
  });

  it('does not retry a 400', async () => {
    const hook = await receiver([400]);
    const notifier = createWebhookNotifier({ url: hook.url, backoff: fast });
    await expect(notifier.notify(firingBatch())).rejects.toThrow(/400/);
    expect(hook.attempts()).toBe(1);
  });

  it('gives up after maxAttempts on a receiver that is down', async () => {
    const hook = await receiver([]);
    servers.splice(0).forEach((s) => s.close());
    const notifier = createWebhookNotifier({ url: hook.url, backoff: fast, maxAttempts: 3 });
    await expect(notifier.notify(firingBatch())).rejects.toThrow(/webhook/);
  });
});

describe('notifier hub', () => {
  it('a failing notifier does not block the others', async () => {
    const hook = await receiver([]);
    const published: { topic: string; message: string }[] = [];
    const broken: Notifier = { name: 'broken', notify: () => Promise.reject(new Error('smtp down')) };
    // Never settles: a hung notifier must not hold up delivery elsewhere either.
    const hung: Notifier = { name: 'hung', notify: () => new Promise<void>(() => undefined) };
    const mqtt = createMqttNotifier({
      client: {
        connected: true,
        publishAsync: (topic, message) => {
          published.push({ topic, message: String(message) });
          return Promise.resolve();
        },
        on: () => undefined,
        removeListener: () => undefined,
      },
      topic: 'ferry/alerts',
    });
    const hub = createNotifierHub([hung, broken, createLogNotifier(silentLogger()), createWebhookNotifier({ url: hook.url, backoff: fast }), mqtt], silentLogger());
    hub.send(firingBatch());
    const deadline = Date.now() + 10_000;
    while ((hook.received.length === 0 || published.length === 0) && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(hook.received).toHaveLength(1);
    expect(published.map((p) => p.topic)).toEqual(['ferry/alerts/device-offline/pump-1']);
    expect(JSON.parse(published[0]?.message ?? '{}')).toMatchObject({ status: 'firing', labels: { deviceId: 'pump-1' } });
    const settled = (): boolean => {
      const s = hub.stats();
      return s['broken']?.failed === 1 && s['webhook']?.delivered === 1 && s['mqtt']?.delivered === 1 && s['log']?.delivered === 1;
    };
    while (!settled() && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(hub.stats()).toMatchObject({ broken: { failed: 1 }, log: { delivered: 1 }, webhook: { delivered: 1 }, mqtt: { delivered: 1 }, hung: { delivered: 0, failed: 0 } });
  });
});

/** A client that is down until connect() is called, recording what it was asked to publish. */
function offlineClient(): { client: Parameters<typeof createMqttNotifier>[0]['client']; topics: string[]; connect: () => void } {
  const listeners = new Set<() => void>();
  const topics: string[] = [];
  const client = {
    connected: false,
    publishAsync(topic: string) {
      topics.push(topic);
      return Promise.resolve();
    },
    on(_event: 'connect', listener: () => void) {
      listeners.add(listener);
    },
    removeListener(_event: 'connect', listener: () => void) {
      listeners.delete(listener);
    },
  };
  return {
    client,
    topics,
    connect() {
      client.connected = true;
      for (const l of listeners) l();
    },
  };
}

function batchFor(subjects: string[]): AlertNotification[] {
  const [one] = firingBatch();
  if (!one) throw new Error('no alert');
  return subjects.map((id) => ({ status: one.status, alert: { ...one.alert, subject: { kind: 'device' as const, id } } }));
}

describe('mqtt notifier queue', () => {
  it('reports a batch undelivered at once while the broker is away, and sends it in order once connected', async () => {
    const fake = offlineClient();
    const notifier = createMqttNotifier({ client: fake.client, topic: 'ferry/alerts' });
    await expect(notifier.notify(batchFor(['a', 'b']))).rejects.toThrow(/broker unreachable; 2 alert messages queued/);
    await expect(notifier.notify(batchFor(['c']))).rejects.toThrow(/3 alert messages queued/);
    expect(fake.topics).toEqual([]);
    fake.connect();
    const deadline = Date.now() + 5000;
    while (notifier.queued > 0 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(fake.topics).toEqual(['ferry/alerts/device-offline/a', 'ferry/alerts/device-offline/b', 'ferry/alerts/device-offline/c']);
    expect(notifier.published).toBe(3);
    await notifier.notify(batchFor(['d']));
    expect(fake.topics.at(-1)).toBe('ferry/alerts/device-offline/d');
  });

  it('keeps at most maxQueued messages, dropping the oldest and counting them', async () => {
    const fake = offlineClient();
    const notifier = createMqttNotifier({ client: fake.client, topic: 'ferry/alerts', maxQueued: 2 });
    await expect(notifier.notify(batchFor(['a', 'b', 'c']))).rejects.toThrow(/unreachable/);
    expect(notifier.queued).toBe(2);
    expect(notifier.dropped).toBe(1);
    fake.connect();
    const deadline = Date.now() + 5000;
    while (notifier.queued > 0 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(fake.topics).toEqual(['ferry/alerts/device-offline/b', 'ferry/alerts/device-offline/c']);
  });
});

describe('notifier hub bounds', () => {
  it('keeps at most maxQueued batches for a notifier that falls behind, counting what it drops, without slowing the others', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const seen: string[] = [];
    const slow: Notifier = { name: 'slow', notify: (batch) => gate.then(() => void seen.push(batch[0]?.alert.subject.id ?? '')) };
    let fastCount = 0;
    const fast: Notifier = {
      name: 'fast',
      notify: () => {
        fastCount++;
        return Promise.resolve();
      },
    };
    const hub = createNotifierHub([slow, fast], silentLogger(), { maxQueued: 2 });
    const deadline = Date.now() + 5000;
    for (const [i, id] of ['a', 'b', 'c', 'd', 'e'].entries()) {
      hub.send(batchFor([id]));
      while (fastCount < i + 1 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    }
    // a is with the slow notifier; b and c made way for d and e.
    expect(hub.stats()).toMatchObject({ fast: { delivered: 5, dropped: 0 }, slow: { delivered: 0, dropped: 2 } });
    release();
    await hub.idle();
    expect(seen).toEqual(['a', 'd', 'e']);
    expect(hub.stats()['slow']).toEqual({ delivered: 3, failed: 0, dropped: 2 });
  });

  it('close gives up on a hung notifier after closeTimeoutMs and drops what it still held', async () => {
    const hung: Notifier = { name: 'hung', notify: () => new Promise<void>(() => undefined) };
    const hub = createNotifierHub([hung, createLogNotifier(silentLogger())], silentLogger(), { closeTimeoutMs: 50 });
    hub.send(batchFor(['a']));
    hub.send(batchFor(['b']));
    await hub.close();
    expect(hub.stats()).toEqual({ hung: { delivered: 0, failed: 0, dropped: 1 }, log: { delivered: 2, failed: 0, dropped: 0 } });
  });
});
