// The gateway page in real headless Chromium against a real ingestor (Mosquitto, the SQLite sink):
// reached from the fleet's gateway table, a chart of backlog and drops on a time axis from the
// gateway's statuses, its devices and dead letters, stale marking once its statuses stop, and the
// Grafana links; and an empty fleet, where every panel says why it is empty.
// Leaves screenshots in test-artifacts/ops-view-gateway.png and ops-view-empty.png.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { uplinkTopics } from '@ferry/protocol';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { makeTempDir, startMosquitto, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { launchChromium } from './browser.js';
import { GatewayPeer } from './peer.js';

const ARTIFACTS = join(import.meta.dirname, '..', '..', '..', 'test-artifacts');
const ADMIN = 'gateway-page-admin-token-0123456789';
// Never contacted: the page only shows links to it.
const GRAFANA = 'http://localhost:3000';

let broker: ServerHandle;
let browser: Browser;
const cleanups: (() => Promise<void> | void)[] = [];
beforeAll(async () => {
  broker = await startMosquitto();
  // A missing Chromium fails here: never a skip.
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await broker?.stop();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

let instance = 0;
async function startIngestor(http: Partial<Exclude<IngestorConfigInput['http'], false>> = {}): Promise<Ingestor> {
  instance++;
  const dir = await makeTempDir('gateway-page');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const ingestor = createIngestor(
    {
      ingestorId: `ing-gw-page-${process.pid}-${instance}`,
      dataDir: dir,
      broker: { url: broker.url },
      write: { lingerMs: 5 },
      logLevel: 'silent',
      http: { host: '127.0.0.1', port: 0, tokens: [{ token: ADMIN, role: 'admin', name: 'ann' }], ...http },
      health: { tickMs: 100, defaults: { timeoutMs: 60_000, minTimeoutMs: 1000, graceMs: 0 } },
    },
    { logger: silentLogger() },
  );
  cleanups.push(() => ingestor.close());
  await ingestor.ready();
  return ingestor;
}

async function open(ingestor: Ingestor, hash: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  cleanups.push(() => page.close());
  await page.goto(`${ingestor.httpUrl}/?token=${ADMIN}${hash}`);
  return page;
}

describe('gateway page', () => {
  it('charts backlog and drops on a time axis, lists its devices and dead letters, links to Grafana, and marks the figures stale when statuses stop', async () => {
    const ingestor = await startIngestor({ grafanaUrl: GRAFANA });
    const gw = await GatewayPeer.connect(broker.url, `gw-page-${process.pid}`);
    cleanups.push(() => gw.close());
    const now = Date.now();
    const readings: Reading[] = [
      { seq: 1, deviceId: 'tank-1', kind: 'telemetry', ts: now - 2000, tsSource: 'device', receivedAt: now, deviceSeq: 1, metrics: { level: 3 } },
      { seq: 2, deviceId: 'tank-2', kind: 'telemetry', ts: now - 1000, tsSource: 'device', receivedAt: now, deviceSeq: 1, metrics: { level: 4 } },
      // Two hours ahead of the ingestor's clock: a dead letter of this gateway.
      { seq: 3, deviceId: 'tank-3', kind: 'telemetry', ts: now + 2 * 3_600_000, tsSource: 'device', receivedAt: now, deviceSeq: 1, metrics: { level: 5 } },
    ];
    await gw.send(1, readings);
    await waitFor(() => ingestor.deadLetters.list({ gatewayId: gw.gatewayId }).length >= 1, { timeoutMs: 20_000, what: 'a dead letter' });

    // Statuses every 300 ms (as they say), a growing backlog and drops at the bound.
    let n = 0;
    const publish = (): Promise<void> => {
      n++;
      const status = { v: 1, gatewayId: gw.gatewayId, state: 'online', ts: Date.now(), statusIntervalMs: 300, uplink: 'connected', version: '3.0.0', outbox: { depth: 10 * n, bytes: 100 * n, oldestTs: Date.now() - 1000 }, dropped: { outbox_full: n > 5 ? n - 5 : 0 } };
      return gw.publishRaw(uplinkTopics.status(gw.gatewayId), Buffer.from(JSON.stringify(status)));
    };
    await publish();
    const timer = setInterval(() => void publish().catch(() => undefined), 300);
    cleanups.push(() => clearInterval(timer));

    // From the fleet's gateway table to the gateway's page.
    const page = await open(ingestor, '#/');
    await page.locator(`#gateways tr[data-gateway="${gw.gatewayId}"] a`).click();
    await page.waitForURL(`**#/gateway/${gw.gatewayId}`);
    const chart = page.locator('#gw-chart[data-chart="gateway"]');
    await chart.locator('canvas').first().waitFor({ timeout: 20_000 });
    await waitFor(async () => Number(await chart.getAttribute('data-points')) >= 3, { timeoutMs: 30_000, what: 'three statuses charted' });
    // A time axis over the hour picked, the axis in seconds.
    const span = await chart.evaluate((el) => Number((el as unknown as { dataset: { xMax: string } }).dataset.xMax) - Number((el as unknown as { dataset: { xMin: string } }).dataset.xMin));
    expect(span).toBeCloseTo(3600, 0);
    expect(await chart.locator('.u-legend').innerText()).toMatch(/backlog[\s\S]*dropped/);
    // The longer range is another query.
    const asked = page.waitForRequest((req) => req.url().includes(`/api/gateways/${gw.gatewayId}/history?range=24h`));
    await page.locator('button[data-gw-range="24h"]').click();
    await asked;
    await page.locator('#gw-chart[data-shown-range="24h"] canvas').first().waitFor({ timeout: 20_000 });

    // Its devices and its dead letters.
    await page.locator('#gw-devices tbody tr[data-device="tank-1"]').waitFor({ timeout: 20_000 });
    expect(await page.locator('#gw-devices tbody tr[data-device]').count()).toBe(2);
    await page.locator('#gw-deadletters tbody tr[data-gw-letter]', { hasText: 'FERRY_ERR_TIMESTAMP_SKEW' }).waitFor({ timeout: 20_000 });
    expect(await page.locator('#gateway-view').getAttribute('data-stale')).toBe('false');
    expect(await page.locator('#gateway-view [data-grafana]').getAttribute('href')).toBe(`${GRAFANA}/d/ferry-gateway-backlog?var-gateway=${gw.gatewayId}`);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'ops-view-gateway.png'), fullPage: true });

    // Statuses stop: the page says stale, with the age, the figures as the last known.
    clearInterval(timer);
    await page.locator('#gateway-view[data-stale="true"] [data-stale-badge]').waitFor({ timeout: 20_000 });
    expect(await page.locator('#gw-head [data-reported]').innerText()).toMatch(/reported \d+ s ago · figures are the last known/);

    // A device links back to its gateway's page, and to its own Grafana dashboard.
    await page.locator('#gw-devices tbody tr[data-device="tank-1"]').click();
    await page.locator('#device [data-grafana]').waitFor({ timeout: 20_000 });
    expect(await page.locator('#device [data-grafana]').getAttribute('href')).toBe(`${GRAFANA}/d/ferry-device-detail?var-device=tank-1`);
    await page.locator('#device [data-gateway-link]').click();
    await page.locator('#gw-devices tbody tr[data-device="tank-2"]').waitFor({ timeout: 20_000 });
  });

  it('an empty fleet says why every panel is empty, offers no Grafana link without http.grafanaUrl, and names an unknown gateway', async () => {
    const ingestor = await startIngestor();
    const page = await open(ingestor, '#/');
    await page.locator('#devices tbody tr.empty', { hasText: 'No device has reported yet' }).waitFor({ timeout: 20_000 });
    await page.locator('#gateways tbody tr.empty', { hasText: 'No gateway has reported a status yet' }).waitFor();
    await page.locator('#alerts li.empty', { hasText: 'No active alerts' }).waitFor();
    expect(await page.locator('#count [data-shown]').innerText()).toBe('0 of 0');
    expect(await page.locator('[data-card="devices"] b').innerText()).toBe('0');
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'ops-view-empty.png') });
    await page.evaluate(() => ((globalThis as unknown as { location: { hash: string } }).location.hash = '#/deadletters'));
    await page.locator('#deadletters tbody tr.empty', { hasText: 'No dead letters' }).waitFor({ timeout: 20_000 });
    await page.evaluate(() => ((globalThis as unknown as { location: { hash: string } }).location.hash = '#/gateway/gw-nowhere'));
    await page.locator('[data-unknown-gateway]').waitFor({ timeout: 20_000 });
    expect(await page.locator('#banner').isHidden()).toBe(true);

    // A gateway known, without a Grafana URL: its page has no Grafana link.
    const gw = await GatewayPeer.connect(broker.url, `gw-page-bare-${process.pid}`);
    cleanups.push(() => gw.close());
    await gw.publishRaw(uplinkTopics.status(gw.gatewayId), Buffer.from(JSON.stringify({ v: 1, gatewayId: gw.gatewayId, state: 'online', ts: Date.now(), outbox: { depth: 0, bytes: 0, oldestTs: null } })));
    await page.evaluate((id) => ((globalThis as unknown as { location: { hash: string } }).location.hash = `#/gateway/${id}`), gw.gatewayId);
    await page.locator('#gw-chart canvas').first().waitFor({ timeout: 20_000 });
    await page.locator('#gw-devices tbody tr.empty', { hasText: 'No device reports through this gateway' }).waitFor();
    expect(await page.locator('#gateway-view [data-grafana]').count()).toBe(0);
  });
});
