// The gateway page's data: each gateway's status history kept bounded in memory (gateway-history.ts),
// GET /api/gateways/:id/history with the data's age and drops per point, and the Grafana links
// (grafana.ts) checked against the dashboards shipped in docker/grafana/dashboards.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createOpsServer, createRegistry, ManualClock } from '@ferry/runtime';
import { HealthMonitor, parseRules } from '@ferry/health';
import { uplinkTopics } from '@ferry/protocol';
import type { GatewayStatus } from '@ferry/protocol';
import { addApiAuth, addHealthRoutes } from '../src/ops-api.js';
import { addGatewayRoutes } from '../src/gateway-api.js';
import { GatewayHistory, withDrops } from '../src/gateway-history.js';
import { GRAFANA_DASHBOARDS, grafanaLink } from '../src/grafana.js';
import { GatewayStatuses } from '../src/statuses.js';
import { parseIngestorConfig } from '../src/config.js';

const DASHBOARDS = join(import.meta.dirname, '..', '..', '..', 'docker', 'grafana', 'dashboards');
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function status(gatewayId: string, ts: number, extra: Partial<GatewayStatus> = {}): GatewayStatus {
  return { v: 1, gatewayId, state: 'online', ts, statusIntervalMs: 10_000, outbox: { depth: 0, bytes: 0, oldestTs: null }, ...extra };
}

describe('gateway history', () => {
  it('keeps at most maxSamples per gateway, merging the older half so the recent statuses keep their resolution', () => {
    const history = new GatewayHistory({ maxSamples: 100 });
    const start = Date.now() - 3_600_000;
    for (let i = 0; i < 360; i++) history.record(status('gw-1', start + i * 10_000, { outbox: { depth: i, bytes: 0, oldestTs: null } }), start + i * 10_000);
    const samples = history.samples('gw-1', 0)!;
    expect(samples.length).toBeLessThanOrEqual(100);
    // Every status is accounted for: merged points say how many they stand for.
    expect(samples.reduce((n, s) => n + s.statuses, 0)).toBe(360);
    // The newest statuses are whole; a merged point keeps the largest backlog of its span.
    expect(samples.at(-1)).toMatchObject({ backlog: 359, statuses: 1 });
    expect(samples[0]!.statuses).toBeGreaterThan(1);
    expect(samples[0]!.backlog).toBe(samples[0]!.statuses - 1);
    const times = samples.map((s) => s.at);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    expect(history.stats().merged).toBe(360 - samples.length);
  });

  it('lets go of points older than its span, forgets a cleared gateway and bounds the gateways it keeps', () => {
    const history = new GatewayHistory({ spanMs: 60_000, maxGateways: 2 });
    const t = Date.now();
    history.record(status('gw-1', t - 120_000), t - 120_000);
    history.record(status('gw-1', t), t);
    expect(history.samples('gw-1', 0)).toHaveLength(1);
    expect(history.stats().expired).toBe(1);
    history.record(status('gw-2', t), t);
    history.record(status('gw-3', t + 1), t + 1);
    expect(history.samples('gw-1', 0)).toBeUndefined();
    expect(history.stats()).toMatchObject({ gateways: 2, gatewaysEvicted: 1 });
    const statuses = new GatewayStatuses(history);
    statuses.apply(uplinkTopics.status('gw-4'), Buffer.from(JSON.stringify(status('gw-4', t))), t);
    expect(history.samples('gw-4', 0)).toHaveLength(1);
    statuses.apply(uplinkTopics.status('gw-4'), Buffer.alloc(0), t);
    expect(history.samples('gw-4', 0)).toBeUndefined();
  });

  it('counts drops per point from the counter, a reset counting from zero', () => {
    const t = Date.now();
    const history = new GatewayHistory();
    for (const [i, dropped] of [[0, 5], [1, 5], [2, 12], [3, 2]] as const) history.record(status('gw-1', t + i, { dropped: { outbox_full: dropped } }), t + i);
    expect(withDrops(history.samples('gw-1', 0)!).map((p) => p.drops)).toEqual([0, 0, 7, 2]);
  });
});

async function api(grafanaUrl?: string) {
  const clock = new ManualClock(Date.now());
  const monitor = new HealthMonitor({ clock, rules: parseRules([]), defaults: { graceMs: 0, timeoutMs: '1m' } });
  const history = new GatewayHistory();
  const statuses = new GatewayStatuses(history);
  const ops = createOpsServer({ host: '127.0.0.1', port: 0, registry: createRegistry(), health: () => ({ ok: true }) });
  addApiAuth(ops.app, []);
  addHealthRoutes(ops.app, { monitor, tokens: [], now: () => clock.now(), grafanaUrl });
  addGatewayRoutes(ops.app, { history, latest: (id) => statuses.get(id), known: (id) => monitor.fleet.devicesOf(id) > 0, now: () => clock.now(), grafanaUrl });
  const url = await ops.listen();
  cleanups.push(() => ops.close());
  const publish = (s: GatewayStatus): void => {
    statuses.apply(uplinkTopics.status(s.gatewayId), Buffer.from(JSON.stringify(s)), clock.now());
  };
  const get = async (path: string): Promise<{ status: number; body: Record<string, unknown> & { points: { at: number; backlog: number | null; drops: number | null }[] } }> => {
    const res = await fetch(`${url}${path}`);
    return { status: res.status, body: (await res.json()) as never };
  };
  return { clock, monitor, publish, get };
}

describe('GET /api/gateways/:id/history', () => {
  it("answers a gateway's backlog and drops over the range asked, with the age of its last status and stale once overdue", async () => {
    const { clock, publish, get } = await api();
    for (let i = 0; i < 400; i++) {
      publish(status('gw-a', clock.now(), { outbox: { depth: i % 50, bytes: 10, oldestTs: clock.now() - 5000 }, dropped: { outbox_full: Math.floor(i / 100) } }));
      clock.advance(10_000);
    }
    const hour = await get('/api/gateways/gw-a/history?range=1h');
    expect(hour.status).toBe(200);
    const to = hour.body['to'] as number;
    expect(to - (hour.body['from'] as number)).toBe(3_600_000);
    expect(hour.body.points.length).toBeGreaterThan(300);
    expect(hour.body.points.every((p) => p.at >= to - 3_600_000 && p.at <= to)).toBe(true);
    // The counter went up by one every 100 statuses: drops show as 1 where it did, 0 elsewhere.
    expect(hour.body.points.reduce((n, p) => n + (p.drops ?? 0), 0)).toBe(3);
    expect(hour.body).toMatchObject({ gatewayId: 'gw-a', range: '1h', stale: false, statusIntervalMs: 10_000, grafana: null });
    expect(hour.body['ageMs']).toBe(10_000);
    const day = await get('/api/gateways/gw-a/history?range=24h');
    expect(day.body.points.length).toBeGreaterThan(hour.body.points.length);
    // Silent for a minute: stale, with its age.
    clock.advance(60_000);
    const quiet = await get('/api/gateways/gw-a/history');
    expect(quiet.body).toMatchObject({ stale: true, ageMs: 70_000 });
  });

  it('answers a gateway known only by its devices with no points, refuses an unknown gateway and a bad range', async () => {
    const { clock, monitor, get } = await api();
    monitor.observeReading({ deviceId: 'd-1', gatewayId: 'gw-quiet', kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 } });
    const quiet = await get('/api/gateways/gw-quiet/history');
    expect(quiet.status).toBe(200);
    expect(quiet.body).toMatchObject({ points: [], stale: true, reportedAt: null, status: null });
    expect((await get('/api/gateways/gw-none/history')).status).toBe(404);
    expect((await get('/api/gateways/gw-quiet/history?range=7d')).status).toBe(400);
  });

  it('links a device and a gateway to the shipped Grafana dashboards when http.grafanaUrl is set', async () => {
    const { clock, monitor, publish, get } = await api('http://localhost:3000/');
    publish(status('gw-1', clock.now()));
    monitor.observeReading({ deviceId: 'pump 7', gatewayId: 'gw-1', kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 } });
    expect((await get('/api/gateways/gw-1/history')).body['grafana']).toBe('http://localhost:3000/d/ferry-gateway-backlog?var-gateway=gw-1');
    expect((await get('/api/devices/pump%207')).body['grafana']).toBe('http://localhost:3000/d/ferry-device-detail?var-device=pump+7');
  });
});

describe('Grafana links', () => {
  it("name the shipped dashboards' uids and template variables", () => {
    const shipped = ['device-detail.json', 'gateway-backlog.json'].map((f) => JSON.parse(readFileSync(join(DASHBOARDS, f), 'utf8')) as { uid: string; templating: { list: { name: string }[] } });
    for (const { uid, variable } of Object.values(GRAFANA_DASHBOARDS)) {
      const dashboard = shipped.find((d) => d.uid === uid);
      expect(dashboard, uid).toBeDefined();
      expect(dashboard!.templating.list.map((v) => v.name)).toContain(variable);
    }
    const device = new URL(grafanaLink('https://grafana.example/sub', 'device', 'sim-1')!);
    expect(device.pathname).toBe('/sub/d/ferry-device-detail');
    expect(device.searchParams.get('var-device')).toBe('sim-1');
    expect(grafanaLink(undefined, 'gateway', 'gw-1')).toBeNull();
  });

  it('http.grafanaUrl is optional and must be an http(s) URL', () => {
    const base = { dataDir: '/tmp/x', broker: { url: 'mqtt://127.0.0.1:1883' } };
    expect(parseIngestorConfig(base).http).not.toHaveProperty('grafanaUrl');
    expect(parseIngestorConfig({ ...base, http: { grafanaUrl: 'http://localhost:3000' } }).http).toMatchObject({ grafanaUrl: 'http://localhost:3000' });
    for (const bad of ['localhost:3000', 'ftp://grafana', 'grafana']) expect(() => parseIngestorConfig({ ...base, http: { grafanaUrl: bad } }), bad).toThrow(/grafanaUrl/);
  });
});
