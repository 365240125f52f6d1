// The health API against a running ingestor: a real Mosquitto, the SQLite sink, a gateway peer
// publishing batches and its status, and the HTTP API over a socket.
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { uplinkTopics } from '@ferry/protocol';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { makeTempDir, waitFor } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { GatewayPeer } from './peer.js';
import { useMosquitto } from './mosquitto-env.js';

const mosquitto = useMosquitto();
const { cleanups } = mosquitto;


const ADMIN = 'admin-token-0123456789';
const READER = 'read-token-0123456789';

function config(dir: string, id: string): IngestorConfigInput {
  return {
    ingestorId: id,
    dataDir: dir,
    broker: { url: mosquitto.url },
    write: { lingerMs: 5 },
    logLevel: 'silent',
    // The admin token's name is who acks (an ack's `by` comes from the token, not the body).
    http: { port: 0, tokens: [{ token: ADMIN, role: 'admin', name: 'alice' }, { token: READER, role: 'read' }] },
    health: {
      tickMs: 50,
      flushIntervalMs: 100,
      defaults: { timeoutMs: 3000, minTimeoutMs: 1000, suspectFraction: 0.9, graceMs: 0 },
      rules: [
        { name: 'device-offline', kind: 'device-offline', severity: 'warning' },
        { name: 'gateway-offline', kind: 'gateway-offline', severity: 'critical' },
      ],
      notifiers: { log: true },
    },
  };
}

let seq = 0;
function reading(deviceId: string, value: number): Reading {
  const now = Date.now();
  seq++;
  return { seq, deviceId, kind: 'telemetry', ts: now - 50, tsSource: 'device', receivedAt: now, deviceSeq: seq, metrics: { temperature: value, battery: 77, rssi: -61 } };
}

async function get<T>(url: string, token = READER): Promise<{ status: number; body: T }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: (await res.json()) as T };
}

async function setup(): Promise<{ dir: string; start: () => Promise<Ingestor>; gw: GatewayPeer }> {
  const dir = await makeTempDir('health-api');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const id = `ing-health-${process.pid}-${Math.random().toString(16).slice(2, 8)}`;
  const gw = await GatewayPeer.connect(mosquitto.url, `gw-${id}`);
  cleanups.push(() => gw.close());
  const start = async (): Promise<Ingestor> => {
    const ingestor = createIngestor(config(dir, id), { logger: silentLogger() });
    cleanups.push(() => ingestor.close());
    await ingestor.ready();
    return ingestor;
  };
  return { dir, start, gw };
}

interface DeviceRow {
  deviceId: string;
  liveness: string;
  gatewayId?: string;
  battery?: number;
}

describe('health API', () => {
  it('lists devices and gateways, shows one device with its readings, and raises the offline alert', async () => {
    const { start, gw } = await setup();
    const ingestor = await start();
    const base = ingestor.httpUrl ?? '';
    await gw.publishRaw(uplinkTopics.status(gw.gatewayId), Buffer.from(JSON.stringify({ v: 1, gatewayId: gw.gatewayId, state: 'online', ts: Date.now(), version: '2.0.0', outbox: { depth: 3, bytes: 300, oldestTs: Date.now() - 1000 } })), true);
    await gw.send(1, [reading('pump-1', 20), reading('pump-2', 21), reading('valve-9', 22)]);
    await waitFor(async () => (await get<{ total: number }>(`${base}/api/devices`)).body.total === 3, { timeoutMs: 20_000 });

    const searched = await get<{ total: number; devices: DeviceRow[] }>(`${base}/api/devices?q=pump&sort=id&order=desc`);
    expect(searched.body.devices.map((d) => d.deviceId)).toEqual(['pump-2', 'pump-1']);
    expect(searched.body.devices[0]).toMatchObject({ liveness: expect.stringMatching(/^(online|suspect)$/), gatewayId: gw.gatewayId, battery: 77 });

    const one = await get<{ device: DeviceRow; readings: { fields: Record<string, unknown> }[] }>(`${base}/api/devices/pump-1`);
    expect(one.body.device.liveness).toMatch(/^(online|suspect)$/);
    expect(one.body.readings.map((r) => r.fields['temperature'])).toEqual([20]);

    const gateways = await get<{ gateways: { gatewayId: string; state: string; version: string; outboxDepth: number; devices: number }[] }>(`${base}/api/gateways/health`);
    expect(gateways.body.gateways).toEqual([expect.objectContaining({ gatewayId: gw.gatewayId, state: 'online', version: '2.0.0', outboxDepth: 3, devices: 3 })]);

    // pump-1 and valve-9 keep reporting; pump-2 falls silent and goes offline.
    await waitFor(
      async () => {
        await gw.send(++seq, [reading('pump-1', 20), reading('valve-9', 22)]);
        const alerts = await get<{ alerts: { id: number; state: string; subject: { id: string } }[] }>(`${base}/api/alerts?state=firing`);
        return alerts.body.alerts.some((a) => a.subject.id === 'pump-2');
      },
      { timeoutMs: 20_000, intervalMs: 200 },
    );
    const summary = await get<{ devices: Record<string, number>; alerts: { firing: number } }>(`${base}/api/summary`);
    expect(summary.body.devices).toMatchObject({ total: 3, offline: 1 });
    expect(summary.body.alerts.firing).toBe(1);

    const [alert] = (await get<{ alerts: { id: number }[] }>(`${base}/api/alerts?state=firing`)).body.alerts;
    const denied = await fetch(`${base}/api/alerts/${alert?.id}/ack`, { method: 'POST', headers: { authorization: `Bearer ${READER}`, 'content-type': 'application/json' }, body: '{}' });
    expect(denied.status).toBe(403);
    expect((await fetch(`${base}/api/alerts`)).status).toBe(401);
    const acked = await fetch(`${base}/api/alerts/${alert?.id}/ack`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ comment: 'truck on its way' }) });
    expect(acked.status).toBe(200);
    expect(await acked.json()).toMatchObject({ acknowledged: { by: 'alice', comment: 'truck on its way' } });
    const silence = await fetch(`${base}/api/silences`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ subject: 'valve-*', durationMs: 60_000 }) });
    expect(silence.status).toBe(201);
  });

  it('keeps device health and alerts across an ingestor restart', async () => {
    const { start, gw } = await setup();
    const first = await start();
    await gw.send(1, [reading('meter-1', 1)]);
    await waitFor(async () => (await get<{ total: number }>(`${first.httpUrl ?? ''}/api/devices`)).body.total === 1, { timeoutMs: 20_000 });
    await waitFor(async () => (await get<{ alerts: unknown[] }>(`${first.httpUrl ?? ''}/api/alerts?state=firing`)).body.alerts.length === 1, { timeoutMs: 20_000, intervalMs: 200 });
    await first.close();

    const second = await start();
    const devices = await get<{ devices: DeviceRow[] }>(`${second.httpUrl ?? ''}/api/devices`);
    expect(devices.body.devices).toEqual([expect.objectContaining({ deviceId: 'meter-1', liveness: 'offline', gatewayId: gw.gatewayId })]);
    const alerts = await get<{ alerts: { state: string; subject: { id: string } }[] }>(`${second.httpUrl ?? ''}/api/alerts`);
    expect(alerts.body.alerts).toEqual([expect.objectContaining({ state: 'firing', subject: { kind: 'device', id: 'meter-1' } })]);
  });
});
