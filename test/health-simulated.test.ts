// The ops API against a running system fed by simulated devices: the simulator publishes as real
// devices over MQTT to a gateway, the gateway forwards batches through Ferry's broker to the
// ingestor, and the API shows those devices online; stopping some shows them go offline.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import { createSimulator } from '@ferry/simulator';
import type { Simulator, SimulatorConfigInput } from '@ferry/simulator';
import { waitFor } from '@ferry/testkit';
import { startStack } from './stack.js';
import type { Stack } from './stack.js';

interface DeviceRow {
  deviceId: string;
  liveness: string;
  gatewayId?: string;
  messages: number;
  battery?: number;
  rssi?: number;
  lastDataAt?: number;
}

let stack: Stack;
const simulators: Simulator[] = [];

beforeAll(async () => {
  stack = await startStack({
    gatewayId: 'gw-sim',
    ingestor: {
      health: {
        tickMs: 50,
        flushIntervalMs: 200,
        // A fixed 5 s timeout: generous against a busy machine, short enough for a test.
        defaults: { timeoutMs: 5000, minTimeoutMs: 5000, suspectFraction: 0.9, graceMs: 0 },
        rules: [
          { name: 'device-offline', kind: 'device-offline', severity: 'warning' },
          { name: 'gateway-offline', kind: 'gateway-offline', severity: 'critical' },
        ],
        notifiers: { log: false },
      },
    },
  });
}, 60_000);

afterAll(async () => {
  await Promise.all(simulators.map((s) => s.close()));
  await stack?.close();
});

async function simulate(config: Omit<SimulatorConfigInput, 'url'>): Promise<Simulator> {
  const simulator = createSimulator({ url: stack.gateway.deviceUrl ?? '', intervalMs: 200, dropoutProbability: 0, ...config }, { logger: silentLogger() });
  simulators.push(simulator);
  await simulator.ready();
  return simulator;
}

async function api<T>(path: string): Promise<T> {
  // No tokens configured: the API answers loopback callers, which the test is.
  const res = await fetch(`${stack.ingestor.httpUrl ?? ''}${path}`);
  if (!res.ok) throw new Error(`${path} answered ${res.status}`);
  return (await res.json()) as T;
}

async function devices(): Promise<Map<string, DeviceRow>> {
  const body = await api<{ devices: DeviceRow[] }>('/api/devices?limit=100');
  return new Map(body.devices.map((d) => [d.deviceId, d]));
}

describe('the ops API fed by simulated devices', () => {
  it('shows simulated devices online through their gateway, and offline once they stop', async () => {
    await simulate({ devices: 3, deviceIdPrefix: 'field-' });
    // Stops without a word: offline by inactivity.
    const quiet = await simulate({ devices: 1, deviceIdPrefix: 'quiet-', status: false });
    // Says goodbye: its offline status takes it offline at once.
    const leaving = await simulate({ devices: 1, deviceIdPrefix: 'leaving-' });
    const all = ['field-0', 'field-1', 'field-2', 'quiet-0', 'leaving-0'];

    const online = await waitFor(
      async () => {
        const rows = await devices();
        return all.every((id) => rows.get(id)?.liveness === 'online' && (rows.get(id)?.messages ?? 0) >= 3) ? rows : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'every simulated device online' },
    );
    for (const id of all) expect(online.get(id)).toMatchObject({ gatewayId: 'gw-sim', battery: expect.any(Number) as number, rssi: expect.any(Number) as number });
    expect((await api<{ total: number }>('/api/devices?q=field-')).total).toBe(3);
    const one = await api<{ device: DeviceRow; readings: { fields: Record<string, unknown> }[] }>('/api/devices/field-1');
    expect(one.device.deviceId).toBe('field-1');
    // Its recent readings (the ingestor keeps them in memory): telemetry, and its online status.
    expect(one.readings.some((r) => typeof r.fields['temperature'] === 'number')).toBe(true);
    const gateways = await waitFor(
      async () => {
        const body = await api<{ gateways: { gatewayId: string; state: string; devices: number }[] }>('/api/gateways/health');
        return body.gateways.find((g) => g.gatewayId === 'gw-sim' && g.state === 'online');
      },
      { timeoutMs: 30_000, what: 'the gateway online in its health' },
    );
    expect(gateways.devices).toBe(5);

    await quiet.close();
    await leaving.close();
    await waitFor(
      async () => {
        const rows = await devices();
        return rows.get('quiet-0')?.liveness === 'offline' && rows.get('leaving-0')?.liveness === 'offline';
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'the stopped devices offline' },
    );
    // Why each went offline is on its record: one said so, the other fell silent.
    const reasonOf = async (id: string): Promise<string | undefined> =>
      (await api<{ device: { history: { to: string; reason: string }[] } }>(`/api/devices/${id}`)).device.history.filter((h) => h.to === 'offline').at(-1)?.reason;
    expect(await reasonOf('leaving-0')).toBe('status');
    expect(await reasonOf('quiet-0')).toBe('timeout');
    // The others kept reporting all along.
    const after = await devices();
    for (const id of ['field-0', 'field-1', 'field-2']) expect(after.get(id)?.liveness).toMatch(/^(online|suspect)$/);

    const firing = await waitFor(
      async () => {
        const body = await api<{ alerts: { rule: string; subject: { id: string } }[] }>('/api/alerts?state=firing');
        const ids = body.alerts.filter((a) => a.rule === 'device-offline').map((a) => a.subject.id).sort();
        return ids.length === 2 ? ids : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'device-offline alerts for the stopped devices' },
    );
    expect(firing).toEqual(['leaving-0', 'quiet-0']);
    const summary = await api<{ devices: Record<string, number>; gateways: Record<string, number> }>('/api/summary');
    expect(summary.devices).toMatchObject({ total: 5, offline: 2 });
    expect(summary.gateways).toMatchObject({ online: 1 });
    const metrics = await (await fetch(`${stack.ingestor.httpUrl ?? ''}/metrics`)).text();
    expect(metrics).toMatch(/^ferry_health_devices\{state="offline"\} 2$/m);
    expect(metrics).toMatch(/^ferry_health_device_messages_refused_total 0$/m);
  }, 120_000);
});
