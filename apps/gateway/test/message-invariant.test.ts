// Issue #17's invariant at the gateway: every acknowledged device message is stored as readings,
// dead-lettered, or ignored by a pattern rule (counted by reason); received = the sum, per device
// and in total, in stats(), in /messages and in the metrics. A message that decodes to nothing
// without a rule to ignore it is dead-lettered, never acknowledged into nothing.
import { afterEach, describe, expect, it } from 'vitest';
import { createRegistry, silentLogger } from '@ferry/runtime';
import type { Registry } from '@ferry/runtime';
import { createGateway } from '../src/index.js';
import type { Gateway } from '../src/index.js';
import { NO_READING_REASON } from '../src/intake.js';
import { connectDevice, metricValue, startCloud, startTestBroker, tempDir, waitFor } from './harness.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const TOKEN = 'gateway-ops-token-0123456789';
const PATTERNS = [
  { pattern: 'homeassistant/#', action: 'ignore' as const, reason: 'home assistant discovery' },
  { pattern: 'tele/{deviceId}/+', format: 'tasmota' as const },
  { pattern: 'devices/{deviceId}/telemetry' },
];

async function start(): Promise<{ gateway: Gateway; registry: Registry; written: () => number }> {
  const uplink = await startTestBroker();
  cleanups.push(() => uplink.close());
  const peer = await startCloud(uplink.url, 'gw-inv', { autoAck: true });
  cleanups.push(() => peer.close());
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  const registry = createRegistry();
  const gateway = createGateway(
    {
      gatewayId: 'gw-inv',
      dataDir: dir.path,
      devices: { listen: { port: 0 }, patterns: PATTERNS },
      http: { port: 0, token: TOKEN },
      uplink: { url: uplink.url, reconnectMinMs: 50, reconnectMaxMs: 200 },
    },
    { logger: silentLogger(), registry },
  );
  cleanups.push(() => gateway.close());
  await gateway.ready();
  return { gateway, registry, written: () => peer.written.size };
}

describe('where every device message went', () => {
  it('accounts for each message once: stored, dead-lettered or ignored by reason, per device and in total', async () => {
    const { gateway, registry, written } = await start();
    const dev = await connectDevice(gateway.deviceUrl!, `inv-${Math.random().toString(16).slice(2)}`);
    cleanups.push(() => dev.endAsync(true));
    const now = Date.now();
    const sent: [string, string][] = [
      ['devices/d1/telemetry', JSON.stringify({ ts: now, metrics: { t: 1 } })],
      ['devices/d1/telemetry', '{"ts":'], // broken JSON
      ['devices/d1/telemetry', JSON.stringify({ ts: now + 1, metrics: { t: 2 } })],
      ['homeassistant/sensor/d1/t/config', '{"state_topic":"devices/d1/telemetry"}'],
      ['unknown/topic', '{}'],
      ['tele/plug-1/SENSOR', JSON.stringify({ Time: '2026-01-01T10:00:00', ENERGY: { Power: 12 } })],
      ['tele/plug-1/SENSOR', '{}'], // decodes to no reading, and no rule ignores it
    ];
    for (const [topic, payload] of sent) await dev.publishAsync(topic, payload, { qos: 1 });
    await waitFor(() => written() === 3, { what: 'the three readings at the cloud' });

    const messages = gateway.stats().messages;
    expect(messages).toMatchObject({ received: 7, stored: 3, dead_lettered: 3, ignored: 1, deferred: 0, ignoredBy: { 'home assistant discovery': 1 } });
    expect(messages.stored + messages.dead_lettered + messages.ignored + messages.deferred).toBe(gateway.stats().received);
    expect(gateway.deadLetters.list({ code: 'FERRY_ERR_PAYLOAD_SCHEMA' }).map((l) => [l.source.deviceId, l.reason])).toEqual([['plug-1', NO_READING_REASON]]);

    const settled = async (outcome: string) => metricValue(registry, 'ferry_gateway_messages_settled_total', { outcome });
    expect([await settled('stored'), await settled('dead_lettered'), await settled('ignored'), await settled('deferred')]).toEqual([3, 3, 1, 0]);
    expect(await metricValue(registry, 'ferry_gateway_received_total')).toBe(7);
    expect(await metricValue(registry, 'ferry_gateway_messages_ignored_total', { reason: 'home assistant discovery' })).toBe(1);

    // Per device, from the ops endpoint, with its token.
    expect((await fetch(`${gateway.httpUrl}/messages`)).status).toBe(401);
    const body = (await (await fetch(`${gateway.httpUrl}/messages`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as {
      devices: Record<string, { received: number; stored: number; dead_lettered: number; ignored: number }>;
    };
    expect(body.devices['d1']).toMatchObject({ received: 3, stored: 2, dead_lettered: 1, ignored: 0 });
    expect(body.devices['plug-1']).toMatchObject({ received: 2, stored: 1, dead_lettered: 1 });
    // Topics that name no device: the unknown one (dead-lettered) and the discovery config (ignored).
    expect(body.devices['(none)']).toMatchObject({ received: 2, dead_lettered: 1, ignored: 1 });
    expect((await fetch(`${gateway.httpUrl}/gaps`)).status).toBe(401);
  });
});
