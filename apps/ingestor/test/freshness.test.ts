// How current a gateway's figures are, on an injected clock: the pure rule, the health API's
// gateway rows, GET /api/gateways, and the summary's broker and database links before the first
// connection. No broker, no timers: the ops routes answer through fastify's inject.
import { afterEach, describe, expect, it } from 'vitest';
import { ENVELOPE_VERSION, uplinkTopics } from '@ferry/protocol';
import type { GatewayStatus } from '@ferry/protocol';
import { HealthMonitor } from '@ferry/health';
import { createOpsServer, createRegistry, ManualClock } from '@ferry/runtime';
import type { OpsServer } from '@ferry/runtime';
import { DEFAULT_GATEWAY_STATUS_INTERVAL_MS, freshness, gatewaysWithFreshness, staleAfter } from '../src/freshness.js';
import { addHealthRoutes } from '../src/ops-api.js';
import type { IngestorLinks } from '../src/ops-api.js';
import { GatewayStatuses } from '../src/statuses.js';

const servers: OpsServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

function status(gatewayId: string, ts: number, extra: Partial<GatewayStatus> = {}): GatewayStatus {
  return { v: ENVELOPE_VERSION, gatewayId, state: 'online', ts, uplink: 'connected', outbox: { depth: 2, bytes: 200, oldestTs: ts - 1000 }, ...extra };
}

interface GatewayRow {
  gatewayId: string;
  outboxDepth?: number;
  reportedAt: number | null;
  ageMs: number | null;
  stale: boolean;
  statusIntervalMs: number;
}

function healthApi(clock: ManualClock, links: () => IngestorLinks): { monitor: HealthMonitor; ops: OpsServer } {
  const monitor = new HealthMonitor({ clock, rules: [], defaults: { graceMs: 0 } });
  const ops = createOpsServer({ port: 0, registry: createRegistry(), health: () => ({ ok: true }) });
  servers.push(ops);
  addHealthRoutes(ops.app, { monitor, tokens: [], now: () => clock.now(), links: () => Promise.resolve(links()) });
  return { monitor, ops };
}

async function get<T>(ops: OpsServer, url: string): Promise<T> {
  const res = await ops.app.inject({ method: 'GET', url, remoteAddress: '127.0.0.1' });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<T>();
}

describe('gateway freshness', () => {
  it('is current within the status interval and its grace, stale after, with its age', () => {
    const at = 1_000_000;
    expect(freshness(at, 1000, at + 500)).toEqual({ reportedAt: at, ageMs: 500, stale: false, statusIntervalMs: 1000, staleAfterMs: staleAfter(1000) });
    expect(freshness(at, 1000, at + staleAfter(1000)).stale).toBe(false);
    expect(freshness(at, 1000, at + staleAfter(1000) + 1)).toMatchObject({ ageMs: staleAfter(1000) + 1, stale: true });
    // A status that does not say its interval is aged by the gateway's default.
    expect(freshness(at, undefined, at + DEFAULT_GATEWAY_STATUS_INTERVAL_MS)).toMatchObject({ stale: false, statusIntervalMs: DEFAULT_GATEWAY_STATUS_INTERVAL_MS });
    expect(freshness(at, undefined, at + 38_000)).toMatchObject({ ageMs: 38_000, stale: true });
    // Never reported: nothing current to show.
    expect(freshness(undefined, 1000, at)).toMatchObject({ reportedAt: null, ageMs: null, stale: true });
  });

  it('the health API shows a gateway row as stale, with when it reported, once the gateway stops reporting', async () => {
    const clock = new ManualClock(Date.now());
    const { monitor, ops } = healthApi(clock, () => ({ broker: true, sink: true }));
    monitor.observeGatewayStatus({ ...status('gw-quiet', clock.now()), statusIntervalMs: 2000 }, clock.now());
    monitor.observeGatewayStatus(status('gw-default', clock.now()), clock.now());
    const reportedAt = clock.now();

    clock.advance(1500);
    let rows = (await get<{ gateways: GatewayRow[] }>(ops, '/api/gateways/health')).gateways;
    expect(rows.map((r) => [r.gatewayId, r.stale, r.ageMs])).toEqual([
      ['gw-default', false, 1500],
      ['gw-quiet', false, 1500],
    ]);

    // The last status said 2 s: 38 s later its backlog of 2 is history, not the present.
    clock.advance(36_500);
    rows = (await get<{ gateways: GatewayRow[] }>(ops, '/api/gateways/health')).gateways;
    const quiet = rows.find((r) => r.gatewayId === 'gw-quiet');
    expect(quiet).toMatchObject({ outboxDepth: 2, reportedAt, ageMs: 38_000, stale: true, statusIntervalMs: 2000 });
    expect(rows.find((r) => r.gatewayId === 'gw-default')).toMatchObject({ ageMs: 38_000, stale: true, statusIntervalMs: DEFAULT_GATEWAY_STATUS_INTERVAL_MS });

    // A new status makes it current again.
    monitor.observeGatewayStatus({ ...status('gw-quiet', clock.now()), statusIntervalMs: 2000 }, clock.now());
    rows = (await get<{ gateways: GatewayRow[] }>(ops, '/api/gateways/health')).gateways;
    expect(rows.find((r) => r.gatewayId === 'gw-quiet')).toMatchObject({ reportedAt: clock.now(), ageMs: 0, stale: false });
  });

  it('GET /api/gateways gives each latest status with reportedAt, ageMs and stale', () => {
    const clock = new ManualClock(Date.now());
    const statuses = new GatewayStatuses();
    const encode = (s: object): Buffer => Buffer.from(JSON.stringify(s));
    statuses.apply(uplinkTopics.status('gw-a'), encode({ ...status('gw-a', clock.now()), statusIntervalMs: 500 }), clock.now());
    statuses.apply(uplinkTopics.status('gw-b'), encode(status('gw-b', clock.now())), clock.now());
    clock.advance(5_000);
    const view = gatewaysWithFreshness(statuses.snapshot(), clock.now());
    expect(view['gw-a']).toMatchObject({ receivedAt: clock.now() - 5_000, reportedAt: clock.now() - 5_000, ageMs: 5_000, stale: true, statusIntervalMs: 500 });
    expect(view['gw-b']).toMatchObject({ ageMs: 5_000, stale: false, statusIntervalMs: DEFAULT_GATEWAY_STATUS_INTERVAL_MS });
    expect(view['gw-a']?.status.outbox?.depth).toBe(2);
  });

  it('the summary shows the broker and the database down until they are reached, and alerts held meanwhile', async () => {
    const clock = new ManualClock(Date.now());
    let links: IngestorLinks = { broker: false, sink: false };
    const { ops } = healthApi(clock, () => links);
    // The model starts out assuming both up; the summary answers with what /healthz sees.
    expect(await get<{ links: IngestorLinks; held: boolean }>(ops, '/api/summary')).toMatchObject({ links: { broker: false, sink: false }, held: true });
    links = { broker: true, sink: false };
    expect(await get<{ links: IngestorLinks; held: boolean }>(ops, '/api/summary')).toMatchObject({ links: { broker: true, sink: false }, held: true });
    links = { broker: true, sink: true };
    expect(await get<{ links: IngestorLinks; held: boolean }>(ops, '/api/summary')).toMatchObject({ links: { broker: true, sink: true }, held: false });
  });
});
