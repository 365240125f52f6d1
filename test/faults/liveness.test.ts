// Device and gateway liveness against real processes (`ferry broker`, `ferry ingestor`, `ferry
// gateway` and `ferry simulate` children): kill -9 of the gateway and of a device, quick restart
// cycles, a stale retained Will replayed to a restarted ingestor, a gateway clock 10 minutes off,
// and an ingestor restarted while the gateway is down. Behaviour only: every wait polls.
// `npx tsc -b` must have run first (the children run apps/ferry/dist/main.js).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uplinkTopics } from '@ferry/protocol';
import { createSimulator } from '@ferry/simulator';
import type { Simulator } from '@ferry/simulator';
import { silentLogger } from '@ferry/runtime';
import { waitFor } from '@ferry/testkit';
import { FERRY_MAIN } from './processes.js';
import { GATEWAY_ID, startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const LIBFAKETIME = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/faketime/libfaketime.so.1'].find((p) => existsSync(p));

interface DeviceRow {
  deviceId: string;
  liveness: string;
  gatewayId?: string;
  /** On the device page only. */
  history: { at: number; to: string; reason: string }[];
}
interface GatewayRow {
  gatewayId: string;
  state: string;
  epoch?: number;
  lastStatusAt?: number;
  clockOffsetMs?: number;
  history: { at: number; to: string; reason: string }[];
}
interface AlertRow {
  rule: string;
  state: string;
  startsAt: number;
  subject: { kind: string; id: string };
}

let stack: ChildStack;
const simulators: Simulator[] = [];

beforeAll(async () => {
  stack = await startChildStack({
    ingestor: {
      health: {
        tickMs: 50,
        flushIntervalMs: 200,
        // Device timeouts far longer than any test step: offline here can only come from a Will.
        defaults: { timeoutMs: 60_000, minTimeoutMs: 60_000, graceMs: 0 },
        rules: [
          { name: 'device-offline', kind: 'device-offline', severity: 'warning' },
          { name: 'gateway-offline', kind: 'gateway-offline', severity: 'critical' },
        ],
        notifiers: { log: true },
      },
    },
  });
  const field = createSimulator({ url: stack.deviceUrl, devices: 3, deviceIdPrefix: 'field-', intervalMs: 200, dropoutProbability: 0 }, { logger: silentLogger() });
  simulators.push(field);
  await field.ready();
}, 300_000);

afterAll(async () => {
  await Promise.allSettled(simulators.map((s) => s.close()));
  await stack?.close();
});

async function api<T>(path: string): Promise<T> {
  const res = await fetch(`${stack.ingestor.httpUrl}${path}`);
  if (!res.ok) throw new Error(`${path} answered ${res.status}`);
  return (await res.json()) as T;
}

async function devices(): Promise<Map<string, DeviceRow>> {
  const body = await api<{ devices: DeviceRow[] }>('/api/devices?limit=1000');
  return new Map(body.devices.map((d) => [d.deviceId, d]));
}

async function gateway(): Promise<GatewayRow | undefined> {
  const body = await api<{ gateways: GatewayRow[] }>('/api/gateways/health');
  return body.gateways.find((g) => g.gatewayId === GATEWAY_ID);
}

async function alertsSince(since: number): Promise<AlertRow[]> {
  const body = await api<{ alerts: AlertRow[] }>('/api/alerts?limit=1000');
  return body.alerts.filter((a) => a.startsAt >= since);
}

const FIELD = ['field-0', 'field-1', 'field-2'];

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  return waitFor(async () => (await probe()) || undefined, { timeoutMs, intervalMs: 100, what }).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${stack.logs()}`);
  });
}

/** The gateway online and every field device online: the state each test starts and ends in. */
async function allOnline(what: string): Promise<void> {
  await until(what, async () => {
    const [g, rows] = [await gateway(), await devices()];
    return g?.state === 'online' && FIELD.every((id) => rows.get(id)?.liveness === 'online');
  });
}

function withEnv<T>(env: Record<string, string>, start: () => T): T {
  // The child is spawned synchronously inside start(): the environment it copies is this one.
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return start();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe('liveness you can trust, with real processes', { timeout: 300_000 }, () => {
  it('kill -9 of the gateway: gateway offline, its devices unreachable, one gateway-offline alert, no device alerts', async () => {
    await allOnline('the gateway and the field devices online');
    const since = Date.now();
    await stack.gateway.kill();
    await until('the gateway offline and its devices unreachable', async () => {
      const [g, rows] = [await gateway(), await devices()];
      return g?.state === 'offline' && FIELD.every((id) => rows.get(id)?.liveness === 'unreachable');
    });
    // Its Will (not a timeout) said so.
    expect((await gateway())?.history.at(-1)).toMatchObject({ to: 'offline', reason: 'will' });
    await until('the gateway-offline alert firing', async () => (await alertsSince(since)).some((a) => a.rule === 'gateway-offline' && a.state === 'firing'));
    const alerts = await alertsSince(since);
    expect(alerts.filter((a) => a.rule === 'gateway-offline').map((a) => a.subject.id)).toEqual([GATEWAY_ID]);
    expect(alerts.filter((a) => a.rule === 'device-offline')).toEqual([]);

    await stack.gateway.start();
    await allOnline('the gateway and its devices back online');
    // The alert resolves at the model's next tick after the gateway is back, not with the status itself.
    await until('the gateway-offline alert resolved', async () => (await alertsSince(since)).some((a) => a.rule === 'gateway-offline' && a.state === 'resolved'));
    const after = await alertsSince(since);
    expect(after.filter((a) => a.rule === 'gateway-offline').map((a) => a.state)).toEqual(['resolved']);
    expect(after.filter((a) => a.rule === 'device-offline')).toEqual([]);
  });

  it('kill -9 of a simulated device with a Will: offline by its Will, dated at arrival after its online', async () => {
    const child: ChildProcess = spawn(
      process.execPath,
      [FERRY_MAIN, 'simulate', '--url', stack.deviceUrl, '--devices', '1', '--device-id-prefix', 'will-', '--interval-ms', '200', '--dropout-probability', '0', '--log-level', 'warn'],
      { stdio: 'ignore' },
    );
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await until('the simulated device online', async () => (await devices()).get('will-0')?.liveness === 'online');
      child.kill('SIGKILL');
      await exited;
      const device = await until('the killed device offline', async () => {
        const d = (await api<{ device: DeviceRow }>('/api/devices/will-0')).device;
        return d.liveness === 'offline' ? d : undefined;
      });
      // Its Will did it, long before its 60 s timeout could.
      expect(device.history.at(-1)).toMatchObject({ to: 'offline', reason: 'status' });
      expect((await devices()).get('field-0')?.liveness).toBe('online');
      // In the database, the offline status is dated after the same session's online.
      const states = await until('both statuses in the database', () => {
        const rows = statusRows('will-0');
        return Promise.resolve(rows.some((r) => r.state === 'offline') ? rows : undefined);
      });
      const online = states.filter((r) => r.state === 'online').at(-1);
      const offline = states.filter((r) => r.state === 'offline').at(-1);
      expect(online).toBeDefined();
      expect(offline!.ts).toBeGreaterThanOrEqual(online!.ts);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('quick restart cycles: killed and restarted at once 10 times, it ends online with nothing stuck', async () => {
    await allOnline('online before the cycles');
    for (let i = 0; i < 10; i++) {
      await stack.gateway.kill();
      await stack.gateway.start();
    }
    await allOnline('the gateway and its devices online after the cycles');
    const rows = await devices();
    expect(FIELD.map((id) => rows.get(id)?.liveness)).toEqual(['online', 'online', 'online']);
    const summary = await api<{ devices: Record<string, number> }>('/api/summary');
    expect(summary.devices['unreachable']).toBe(0);
    expect(summary.devices['flapping']).toBe(0);
  });

  it('a stale retained Will of an old session, replayed to a restarted ingestor, does not override the newer online', async () => {
    await allOnline('online before');
    const oldEpoch = (await gateway())?.epoch;
    expect(oldEpoch).toEqual(expect.any(Number));
    await stack.gateway.kill();
    await stack.gateway.start();
    const newEpoch = await until('a new session online', async () => {
      const g = await gateway();
      return g?.state === 'online' && g.epoch !== undefined && g.epoch > (oldEpoch ?? 0) ? g.epoch : undefined;
    });
    await stack.ingestor.stop();
    // The old session's Will, retained last (as when the broker publishes it after the new session
    // connected), with a time that looks newer than anything: order is by session, not by clock.
    const staleWill = { v: 1, gatewayId: GATEWAY_ID, state: 'offline', ts: Date.now() + 10 * 60_000, uplink: 'lost', epoch: oldEpoch };
    const client = await mqtt.connectAsync(stack.brokerUrl, { protocolVersion: 4, clientId: `stale-will-${process.pid}` });
    try {
      await client.publishAsync(uplinkTopics.status(GATEWAY_ID), JSON.stringify(staleWill), { qos: 1, retain: true });
    } finally {
      await client.endAsync();
    }
    const restartedAt = Date.now();
    await stack.ingestor.start();
    // The retained Will is the first the restarted ingestor hears of the gateway; a live status of
    // the new session follows. Once that one is in, the Will must not have shown the gateway
    // offline, not even for a moment.
    const g = await until('a live status after the ingestor restart', async () => {
      const row = await gateway();
      return row?.lastStatusAt !== undefined && row.lastStatusAt > restartedAt ? row : undefined;
    });
    expect(g).toMatchObject({ state: 'online', epoch: newEpoch });
    expect(g.history.filter((h) => h.at >= restartedAt && h.to === 'offline')).toEqual([]);
    await allOnline('still online after the replay');
  });

  it('the ingestor restarted while the gateway is down shows it offline, its devices unreachable', async () => {
    await allOnline('online before');
    await stack.ingestor.stop();
    await stack.gateway.kill();
    await stack.ingestor.start();
    await until('the gateway offline and its devices unreachable after the ingestor restart', async () => {
      const [g, rows] = [await gateway(), await devices()];
      return g?.state === 'offline' && FIELD.every((id) => rows.get(id)?.liveness === 'unreachable');
    });
    await stack.gateway.start();
    await allOnline('back online');
  });

  it('a gateway clock 10 minutes behind the ingestor changes nothing: online, its devices online, offline when killed', async () => {
    if (!LIBFAKETIME) throw new Error('libfaketime is missing: scripts/setup.mjs --servers installs Debian faketime');
    await allOnline('online before');
    await stack.gateway.stop();
    // The devices stamp their readings with the true time, ten minutes ahead of this gateway's
    // clock: its skew window is opened so that it takes them.
    const env = { LD_PRELOAD: LIBFAKETIME, FAKETIME: '-10m', FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_NO_CACHE: '1' };
    await restartWithLimits(() => withEnv(env, () => stack.gateway.start()));
    await until('the gateway clock offset learned', async () => {
      const g = await gateway();
      return g?.state === 'online' && g.clockOffsetMs !== undefined && g.clockOffsetMs > 5 * 60_000;
    });
    await allOnline('online with a gateway clock 10 minutes behind');
    // Stays so: nothing goes suspect for a while of steady readings.
    for (let i = 0; i < 10; i++) {
      const rows = await devices();
      expect(FIELD.map((id) => rows.get(id)?.liveness)).toEqual(['online', 'online', 'online']);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    await stack.gateway.kill();
    await until('the skewed gateway offline and its devices unreachable', async () => {
      const [g, rows] = [await gateway(), await devices()];
      return g?.state === 'offline' && FIELD.every((id) => rows.get(id)?.liveness === 'unreachable');
    });
    await restartWithLimits(() => stack.gateway.start());
    await allOnline('back online with the true clock');
  });
});

/**
 * The gateway's config is written once by the stack; for the skewed run its device skew window
 * must be wide. The config file is rewritten in place (same ports, same data dir) around a start.
 */
async function restartWithLimits(start: () => Promise<void>): Promise<void> {
  const file = join(stack.dir, 'gateway.json');
  const config = JSON.parse(readFileSync(file, 'utf8')) as { limits?: Record<string, unknown> };
  config.limits = { ...config.limits, maxFutureSkewMs: 3_600_000 };
  writeFileSync(file, JSON.stringify(config, null, 2));
  await start();
}

function statusRows(deviceId: string): { state: string; ts: number }[] {
  let db: Database.Database;
  try {
    db = new Database(stack.pointsDb, { readonly: true, fileMustExist: true });
  } catch {
    return [];
  }
  try {
    return db
      .prepare<[string], { state: string; ts: number }>(
        "SELECT value_text AS state, CAST(ts_ns / 1000000 AS INTEGER) AS ts FROM point_fields WHERE field = 'state' AND json_extract(tags, '$.device') = ? ORDER BY rowid",
      )
      .all(deviceId);
  } catch {
    return [];
  } finally {
    db.close();
  }
}
