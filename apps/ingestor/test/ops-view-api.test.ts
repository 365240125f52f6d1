// The API behind the ops view, in-process (the real routes on a real ops server, the real health
// model, the embedded SQLite sink): device paging with natural order and grouping, alert groups,
// acks and silences under the token's name, alert history, series per range, the served charts.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createOpsServer, createRegistry, ManualClock } from '@ferry/runtime';
import { HealthMonitor, parseRules } from '@ferry/health';
import { createSqliteSink } from '@ferry/sinks';
import type { Point } from '@ferry/sinks';
import { makeTempDir } from '@ferry/testkit';
import { addApiAuth, addDashboardRoutes, addHealthRoutes, groupAlerts, presentAlert } from '../src/ops-api.js';
import type { ApiToken } from '../src/ops-api.js';
import { addSeriesRoutes, deviceSeries, pickRollupWindow, sinkReader, thin } from '../src/series.js';
import { parseIngestorConfig } from '../src/config.js';

const MIN = 60_000;
const ADMIN = 'admin-token-0123456789';
const READER = 'read-token-0123456789';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The API's answers, as loosely as these tests read them. */
interface Answer {
  [key: string]: unknown;
  total: number;
  id: number;
  kept: number;
  devices: { deviceId: string; gatewayId: string; liveness: string }[];
  groups: { rule: string; gatewayId: string; count: number; severity: string; firing: number; alerts: unknown[] }[];
  alerts: { id: number; state: string; subject: { id: string }; acknowledged?: { by: string }; silencedBy: { by: string } | null; silencedByHistory: string[] }[];
  acknowledged?: { by: string; comment?: string };
  acks: { event: string; detail: string }[];
  silences: unknown[];
  series: Record<string, unknown[]>;
}

interface Rig {
  clock: ManualClock;
  monitor: HealthMonitor;
  call: <T = Answer>(method: string, url: string, opts?: { token?: string | null; body?: unknown }) => Promise<{ status: number; body: T }>;
  step: (ms: number) => void;
  feed: (deviceId: string, gatewayId: string, metrics?: Record<string, number>) => void;
}

async function rig(tokens: ApiToken[] = [{ token: ADMIN, role: 'admin', name: 'alice' }, { token: READER, role: 'read' }]): Promise<Rig & { sinkWrite: (points: Point[]) => Promise<void>; rollups: { windowMs: number; window: string; measurement: string }[] }> {
  const dir = await makeTempDir('ops-view-api');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const clock = new ManualClock(Date.now());
  const monitor = new HealthMonitor({ clock, rules: parseRules([{ name: 'device-offline', kind: 'device-offline', severity: 'critical' }]), defaults: { graceMs: 0, timeoutMs: '1m' } });
  const sink = createSqliteSink({ path: join(dir, 'points.db') });
  cleanups.push(() => sink.close());
  const rollups: { windowMs: number; window: string; measurement: string }[] = [];
  const ops = createOpsServer({ host: '127.0.0.1', port: 0, registry: createRegistry(), health: () => ({ ok: true }) });
  addApiAuth(ops.app, tokens);
  addHealthRoutes(ops.app, { monitor, tokens, now: () => clock.now() });
  addDashboardRoutes(ops.app);
  addSeriesRoutes(ops.app, { read: sinkReader(sink), recent: undefined, rollupWindows: () => rollups, measurement: 'telemetry', deviceTag: 'device', now: () => clock.now(), known: (id) => monitor.fleet.device(id) !== undefined });
  const url = await ops.listen();
  cleanups.push(() => ops.close());
  const call = async <T = Answer>(method: string, path: string, opts: { token?: string | null; body?: unknown } = {}): Promise<{ status: number; body: T }> => {
    const token = opts.token === undefined ? ADMIN : opts.token;
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: (text.startsWith('{') ? JSON.parse(text) : text) as T };
  };
  const step = (ms: number): void => {
    const end = clock.now() + ms;
    monitor.tick();
    for (let guard = 0; guard < 100_000; guard++) {
      const next = monitor.nextDeadline();
      if (next === undefined || next > end) break;
      clock.set(Math.max(clock.now(), next));
      monitor.tick();
    }
    clock.set(end);
    monitor.tick();
  };
  const feed: Rig['feed'] = (deviceId, gatewayId, metrics = { temperature: 21 }) => {
    monitor.observeReading({ deviceId, gatewayId, kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics });
  };
  const sinkWrite = async (points: Point[]): Promise<void> => {
    await sink.write(points);
  };
  return { clock, monitor, call, step, feed, sinkWrite, rollups };
}

describe('ops view API', () => {
  it('pages devices in natural id order with the total, filters by gateway and state, and groups by gateway', async () => {
    const { call, feed, step } = await rig();
    for (let i = 1; i <= 120; i++) feed(`sim-${i}`, i % 2 === 0 ? 'gw-10' : 'gw-2');
    step(1000);
    const first = await call('GET', '/api/devices?sort=id&order=asc&limit=50');
    expect(first.body.total).toBe(120);
    expect(first.body.devices).toHaveLength(50);
    expect(first.body.devices.slice(0, 3).map((d: { deviceId: string }) => d.deviceId)).toEqual(['sim-1', 'sim-2', 'sim-3']);
    const last = await call('GET', '/api/devices?sort=id&order=asc&limit=50&offset=100');
    expect(last.body.devices.map((d: { deviceId: string }) => d.deviceId)).toEqual(Array.from({ length: 20 }, (_, i) => `sim-${101 + i}`));
    const desc = await call('GET', '/api/devices?sort=id&order=desc&limit=2');
    expect(desc.body.devices.map((d: { deviceId: string }) => d.deviceId)).toEqual(['sim-120', 'sim-119']);
    const gw = await call('GET', '/api/devices?gateway=gw-10&limit=5');
    expect(gw.body.total).toBe(60);
    expect(new Set(gw.body.devices.map((d: { gatewayId: string }) => d.gatewayId))).toEqual(new Set(['gw-10']));
    // Grouped: gw-2 before gw-10 (natural), ids in natural order within.
    const grouped = await call('GET', '/api/devices?group=gateway&sort=id&limit=200');
    const ids = grouped.body.devices.map((d: { deviceId: string; gatewayId: string }) => `${d.gatewayId}/${d.deviceId}`);
    expect(ids.slice(0, 2)).toEqual(['gw-2/sim-1', 'gw-2/sim-3']);
    expect(ids[60]).toBe('gw-10/sim-2');
    // Ten fall silent: the state filter finds them.
    step(30_000);
    for (let i = 11; i <= 120; i++) feed(`sim-${i}`, i % 2 === 0 ? 'gw-10' : 'gw-2');
    step(2 * MIN - 30_000);
    for (let i = 11; i <= 120; i++) feed(`sim-${i}`, i % 2 === 0 ? 'gw-10' : 'gw-2');
    step(1000);
    const offline = await call('GET', '/api/devices?state=offline&sort=id');
    expect(offline.body.devices.map((d: { deviceId: string }) => d.deviceId)).toEqual(Array.from({ length: 10 }, (_, i) => `sim-${i + 1}`));
    const summary = await call<{ devices: Record<string, number> }>('GET', '/api/summary');
    const d = summary.body.devices as { total: number; online: number; suspect: number; offline: number; flapping: number; unreachable: number; unknown: number };
    expect(d.online + d.suspect + d.offline + d.flapping + d.unreachable + d.unknown).toBe(d.total);
  });

  it('groups active alerts by rule and gateway with counts, the largest first', async () => {
    const { call, feed, step } = await rig();
    for (let i = 1; i <= 40; i++) feed(`a-${i}`, 'gw-a');
    for (let i = 1; i <= 3; i++) feed(`b-${i}`, 'gw-b');
    step(2 * MIN);
    const groups = await call('GET', '/api/alerts/groups?perGroup=5');
    expect(groups.body.total).toBe(43);
    expect(groups.body.groups.map((g: { rule: string; gatewayId: string; count: number; severity: string }) => [g.rule, g.gatewayId, g.count, g.severity])).toEqual([
      ['device-offline', 'gw-a', 40, 'critical'],
      ['device-offline', 'gw-b', 3, 'critical'],
    ]);
    expect(groups.body.groups[0]?.alerts).toHaveLength(5);
    expect(groups.body.groups[0]?.firing).toBe(40);
  });

  it('acks and un-acks under the token name with a comment, silences under it, and keeps both in the history', async () => {
    const { call, feed, step, clock } = await rig();
    feed('d1', 'gw-1');
    feed('d2', 'gw-1');
    step(2 * MIN);
    const [a1, a2] = (await call('GET', '/api/alerts?state=firing')).body.alerts as { id: number; subject: { id: string } }[];
    expect(a1 && a2).toBeTruthy();
    // A read token may not act.
    expect((await call('POST', `/api/alerts/${a1!.id}/ack`, { token: READER, body: {} })).status).toBe(403);
    const acked = await call('POST', `/api/alerts/${a1!.id}/ack`, { body: { comment: 'truck on its way', by: 'mallory' } });
    expect(acked.status).toBe(200);
    expect(acked.body.acknowledged).toMatchObject({ by: 'alice', comment: 'truck on its way' });
    const unacked = await call('POST', `/api/alerts/${a1!.id}/unack`, { body: { comment: 'wrong site' } });
    expect(unacked.body.acknowledged).toBeUndefined();
    expect(unacked.body.acks.map((e: { event: string; detail: string }) => [e.event, e.detail])).toEqual([
      ['acknowledged', 'alice: truck on its way'],
      ['unacknowledged', 'alice: wrong site'],
    ]);
    expect((await call('POST', '/api/alerts/999/unack', { body: {} })).status).toBe(404);

    const silence = await call('POST', '/api/silences', { body: { subject: a2!.subject.id, durationMs: 3_600_000, comment: 'maintenance' } });
    expect(silence.status).toBe(201);
    expect(silence.body).toMatchObject({ by: 'alice', comment: 'maintenance', endsAt: clock.now() + 3_600_000 });
    const listed = (await call('GET', '/api/alerts?state=firing')).body.alerts as { subject: { id: string }; silencedBy: { by: string } | null }[];
    expect(listed.find((a) => a.subject.id === a2!.subject.id)?.silencedBy).toMatchObject({ by: 'alice' });
    expect(listed.find((a) => a.subject.id === a1!.subject.id)?.silencedBy).toBeNull();
    expect((await call('GET', '/api/silences')).body.silences).toHaveLength(1);
    expect((await call('DELETE', `/api/silences/${silence.body.id}`)).status).toBe(200);
    expect((await call('GET', '/api/silences')).body.silences).toHaveLength(0);

    // Both come back and resolve: the history says who acted.
    expect((await call('GET', '/api/alerts/history')).body.alerts).toEqual([]);
    await call('POST', `/api/alerts/${a1!.id}/ack`, { body: {} });
    feed('d1', 'gw-1');
    feed('d2', 'gw-1');
    step(1000);
    const history = (await call('GET', '/api/alerts/history?limit=10')).body;
    expect(history.kept).toBe(2);
    expect(history.alerts.every((a) => a.state === 'resolved')).toBe(true);
    expect(history.alerts.find((a) => a.id === a1!.id)?.acknowledged).toMatchObject({ by: 'alice' });
    expect(history.alerts.find((a) => a.id === a2!.id)?.silencedByHistory).toEqual(['alice']);
    expect((await call('GET', `/api/alerts/history?subject=${a1!.subject.id}`)).body.alerts.map((a: { id: number }) => a.id)).toEqual([a1!.id]);
  });

  it('names who acts: a token without a name is token-N, the tokenless loopback API is local', async () => {
    const named = await rig([{ token: READER, role: 'read' }, { token: ADMIN, role: 'admin' }]);
    expect((await named.call('GET', '/api/whoami')).body).toEqual({ name: 'token-2', role: 'admin' });
    expect((await named.call('GET', '/api/whoami', { token: READER })).body).toEqual({ name: 'token-1', role: 'read' });
    const open = await rig([]);
    open.feed('d1', 'gw-1');
    open.step(2 * MIN);
    const [alert] = (await open.call('GET', '/api/alerts', { token: null })).body.alerts as { id: number }[];
    const acked = await open.call('POST', `/api/alerts/${alert!.id}/ack`, { token: null, body: {} });
    expect(acked.body.acknowledged?.by).toBe('local');
    expect((await open.call('GET', '/api/whoami', { token: null })).body).toEqual({ name: 'local', role: 'admin' });
  });

  it('the configured tokens get names, token-1 and on when not given', () => {
    const config = parseIngestorConfig({ dataDir: '/tmp/x', broker: { url: 'mqtt://127.0.0.1:1883' }, http: { tokens: [{ token: ADMIN, role: 'admin', name: 'ops-team' }, { token: READER, role: 'read' }] } });
    expect(config.http === false ? [] : config.http.tokens.map((t) => t.name)).toEqual(['ops-team', 'token-2']);
  });

  it('answers a range from the database: raw for an hour, the rollup for a day, averaged down when there are too many', async () => {
    const { call, feed, step, clock, sinkWrite, rollups } = await rig();
    feed('pump-1', 'gw-1');
    step(1000);
    const now = clock.now();
    const raw: Point[] = [];
    for (let i = 0; i < 120; i++) raw.push({ measurement: 'telemetry', tags: { device: 'pump-1', gateway: 'gw-1' }, fields: { temperature: 20 + i / 100 }, timestampNs: BigInt(now - (120 - i) * 20_000) * 1_000_000n });
    await sinkWrite(raw);
    const hour = await call('GET', '/api/devices/pump-1/series?range=1h');
    expect(hour.body).toMatchObject({ source: 'database', range: '1h', from: now - 3_600_000, to: now, bucketMs: null });
    expect(hour.body.series.temperature).toHaveLength(120);
    const quarter = await call('GET', '/api/devices/pump-1/series?range=15m');
    expect(quarter.body.series.temperature).toHaveLength(45);
    const thinned = await call('GET', '/api/devices/pump-1/series?range=1h&maxPoints=20');
    expect(thinned.body.bucketMs).toBe(180_000);
    expect(thinned.body.series.temperature?.length).toBeLessThanOrEqual(21);

    // Without a rollup a day is raw too; with one, it is read.
    expect((await call('GET', '/api/devices/pump-1/series?range=24h')).body.source).toBe('database');
    rollups.push({ windowMs: 60_000, window: '1m', measurement: 'telemetry_1m' }, { windowMs: 3_600_000, window: '1h', measurement: 'telemetry_1h' });
    await sinkWrite([0, 1, 2].map((i) => ({ measurement: 'telemetry_1m', tags: { device: 'pump-1' }, fields: { temperature_mean: 20 + i, temperature_min: 19 + i, temperature_max: 21 + i, temperature_count: 3 }, timestampNs: BigInt(now - (3 - i) * 60_000) * 1_000_000n })));
    const day = await call('GET', '/api/devices/pump-1/series?range=24h&maxPoints=2000');
    expect(day.body).toMatchObject({ source: 'rollup', window: '1m' });
    expect(day.body.series.temperature).toEqual([0, 1, 2].map((i) => [now - (3 - i) * 60_000, 20 + i, 19 + i, 21 + i]));
    // A week at 1-minute windows is too many points: the hourly rollup answers (it has none yet, so raw does).
    expect(pickRollupWindow(rollups, 7 * 86_400_000, 1000)?.window).toBe('1h');
    expect((await call('GET', '/api/devices/pump-1/series?range=7d')).body.source).toBe('database');
    expect((await call('GET', '/api/devices/nobody/series?range=1h')).status).toBe(404);
    expect((await call('GET', '/api/devices/pump-1/series?range=2y')).status).toBe(400);
  });

  it('without a readable database answers from memory and says from when', () => {
    const now = Date.now();
    const answer = deviceSeries(
      {
        read: undefined,
        recent: () => [
          { ts: now - 5000, kind: 'telemetry', metrics: { temperature: 20, on: true } },
          { ts: now - 1000, kind: 'telemetry', metrics: { temperature: 21, on: false } },
        ],
        rollupWindows: () => [],
        measurement: 'telemetry',
        deviceTag: 'device',
        now: () => now,
      },
      'pump-1',
      '24h',
      1000,
    );
    expect(answer).toMatchObject({ source: 'memory', coveredFrom: now - 5000, series: { temperature: [[now - 5000, 20], [now - 1000, 21]], on: [[now - 5000, 1], [now - 1000, 0]] } });
  });

  it('averages into buckets and leaves an empty bucket empty, so a gap stays a gap', () => {
    expect(thin([[0, 1], [10, 3], [100, 5], [350, 7]], 0, 100)).toEqual([[5, 2], [100, 5], [350, 7]]);
  });

  it('serves the charting library from node_modules', async () => {
    const { call } = await rig();
    const js = await call<string>('GET', '/dashboard/vendor/uplot.js', { token: null });
    expect(js.status).toBe(200);
    expect(js.body).toContain('uPlot');
    expect((await call('GET', '/dashboard/vendor/uplot.css', { token: null })).status).toBe(200);
  });

  it('presents and groups alerts without a server (pure)', () => {
    const base = { key: 'k', kind: 'device-offline' as const, labels: {}, state: 'firing' as const, summary: 's', startsAt: 0, notified: false, history: [] };
    const a = presentAlert({ ...base, id: 1, rule: 'r', severity: 'warning', subject: { kind: 'gateway', id: 'gw-1' } }, undefined);
    const b = presentAlert({ ...base, id: 2, rule: 'r', severity: 'critical', subject: { kind: 'device', id: 'd' }, labels: { gatewayId: 'gw-1' } }, { id: 7, matchers: {}, startsAt: 0, endsAt: 1, by: 'x' });
    const [group] = groupAlerts([a, b], 1);
    expect(group).toMatchObject({ rule: 'r', gatewayId: 'gw-1', severity: 'critical', count: 2, silenced: 1 });
    expect(group?.alerts).toHaveLength(1);
  });
});
