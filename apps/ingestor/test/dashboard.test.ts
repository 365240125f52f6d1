// The dashboard in real headless Chromium: a device that stops reporting turns red and its alert
// shows, without a reload; a device's page charts its raw readings for an hour and its rollup for a day; a
// gateway that stops reporting is shown stale with its age; the broker and database indicators
// follow the real connections from the first moment.
// Leaves screenshots in test-artifacts/dashboard.png and dashboard-device.png.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { uplinkTopics } from '@ferry/protocol';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { makeTempDir, startMosquitto, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import { launchChromium } from './browser.js';
import { GatewayPeer } from './peer.js';

const ARTIFACTS = join(import.meta.dirname, '..', '..', '..', 'test-artifacts');

let broker: ServerHandle;
let browser: Browser;
const cleanups: (() => Promise<void> | void)[] = [];
beforeAll(async () => {
  broker = await startMosquitto();
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await broker?.stop();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

let seq = 0;
const deviceSeqs = new Map<string, number>();
function reading(deviceId: string, value: number): Reading {
  const now = Date.now();
  seq++;
  const deviceSeq = (deviceSeqs.get(deviceId) ?? 0) + 1;
  deviceSeqs.set(deviceId, deviceSeq);
  return { seq, deviceId, kind: 'telemetry', ts: now - 20, tsSource: 'device', receivedAt: now, deviceSeq, metrics: { temperature: value, battery: 80 - (seq % 7), rssi: -60 - (seq % 9) } };
}

describe('dashboard', () => {
  it('a device that stops reporting turns red and its alert shows, without a reload; a device page charts its raw readings, and its rollup over a day', async () => {
    const dir = await makeTempDir('dashboard');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const ingestor = createIngestor(
      {
        ingestorId: `ing-dash-${process.pid}`,
        dataDir: dir,
        broker: { url: broker.url },
        write: { lingerMs: 5 },
        logLevel: 'silent',
        // One-second windows, so the rollup chart fills while the test runs.
        processing: { rollups: [{ match: { metric: 'temperature' }, windows: ['1s'], allowedLatenessMs: 0 }] },
        health: {
          tickMs: 100,
          defaults: { timeoutMs: 4000, minTimeoutMs: 1000, suspectFraction: 0.9, graceMs: 0, learnAfter: 1000 },
          rules: [{ name: 'device-offline', kind: 'device-offline', severity: 'critical' }],
        },
      },
      { logger: silentLogger() },
    );
    cleanups.push(() => ingestor.close());
    await ingestor.ready();
    const gw = await GatewayPeer.connect(broker.url, `gw-dash-${process.pid}`);
    cleanups.push(() => gw.close());
    await gw.publishRaw(uplinkTopics.status(gw.gatewayId), Buffer.from(JSON.stringify({ v: 1, gatewayId: gw.gatewayId, state: 'online', ts: Date.now(), version: '2.1.0', outbox: { depth: 12, bytes: 900, oldestTs: Date.now() - 45_000 } })), true);
    const devices = ['boiler-1', 'pump-1', 'pump-2', 'valve-3'];
    const reporting = new Set(devices);
    let batchId = 0;
    // The fleet reports every 300 ms, as long as the test runs.
    let sending = Promise.resolve();
    const timer = setInterval(() => {
      sending = sending.then(() => gw.send(++batchId, [...reporting].map((d, j) => reading(d, 20 + j + Math.sin(batchId / 3))))).catch(() => undefined);
    }, 300);
    cleanups.push(async () => {
      clearInterval(timer);
      await sending;
    });

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    cleanups.push(() => page.close());
    await page.goto(ingestor.httpUrl ?? '');
    await page.locator('tr[data-device="pump-2"] .state.online').waitFor({ timeout: 20_000 });
    const loadedAt = await page.evaluate(() => performance.timeOrigin);

    // pump-2 falls silent.
    reporting.delete('pump-2');
    await page.locator('tr[data-device="pump-2"].offline').waitFor({ timeout: 30_000 });
    await page.locator('#alerts li[data-subject="pump-2"]').waitFor({ timeout: 20_000 });
    expect(await page.evaluate(() => performance.timeOrigin)).toBe(loadedAt); // no reload
    const colour = await page.locator('tr[data-device="pump-2"] .state').evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(el).backgroundColor);
    expect(colour).toBe('rgb(218, 54, 51)');
    expect(await page.locator('#alerts li[data-subject="pump-2"]').innerText()).toContain('device-offline');
    expect(await page.locator('[data-card="offline"] b').innerText()).toBe('1');
    expect(await page.locator('#gateways tbody tr').innerText()).toContain('12');
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

    // The device page: a chart of its raw readings over the last hour, from the database.
    await page.locator('tr[data-device="pump-1"]').click();
    await page.locator('#charts[data-source="database"] [data-chart="temperature"] canvas').first().waitFor({ timeout: 20_000 });
    // The raw charts are of raw points only: no rollup field shows up as a metric of its own.
    expect(await page.locator('[data-chart="temperature_mean"]').count()).toBe(0);
    // A day is read from the 1 s rollup (the telemetry_1s points): mean with min and max per window.
    await page.locator('button[data-range="24h"]').click();
    await page.locator('#charts[data-source="rollup"] [data-chart="temperature"] canvas').first().waitFor({ timeout: 20_000 });
    expect(await page.locator('#chart-source').innerText()).toContain('1s rollups');
    await waitFor(async () => Number((await page.locator('[data-chart="temperature"]').getAttribute('data-points')) ?? 0) >= 3, { timeoutMs: 20_000, what: 'a rollup line of three windows or more' });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-device.png'), fullPage: true });
  });

  it('a gateway that stops reporting shows as stale with the age of its last report, its backlog as last known', async () => {
    const dir = await makeTempDir('dashboard-stale');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const ingestor = createIngestor(
      { ingestorId: `ing-dash-stale-${process.pid}`, dataDir: dir, broker: { url: broker.url }, logLevel: 'silent', health: { tickMs: 100 } },
      { logger: silentLogger() },
    );
    cleanups.push(() => ingestor.close());
    await ingestor.ready();
    const gw = await GatewayPeer.connect(broker.url, `gw-dash-stale-${process.pid}`);
    cleanups.push(() => gw.close());
    // A gateway reporting every 300 ms, as its statuses say, with a backlog of 2.
    const report = (): Promise<void> =>
      gw.publishRaw(uplinkTopics.status(gw.gatewayId), Buffer.from(JSON.stringify({ v: 1, gatewayId: gw.gatewayId, state: 'online', ts: Date.now(), statusIntervalMs: 300, uplink: 'connected', outbox: { depth: 2, bytes: 100, oldestTs: Date.now() } })), true);
    await report();
    let reporting = true;
    let publishing = Promise.resolve();
    const timer = setInterval(() => {
      if (reporting) publishing = publishing.then(report).catch(() => undefined);
    }, 300);
    cleanups.push(async () => {
      clearInterval(timer);
      await publishing;
    });

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    cleanups.push(() => page.close());
    await page.goto(ingestor.httpUrl ?? '');
    const row = page.locator(`#gateways tr[data-gateway="${gw.gatewayId}"]`);
    await row.locator('td[data-reported]').filter({ hasText: /^reported \d+ s ago$/ }).waitFor({ timeout: 20_000 });
    expect(await row.getAttribute('data-stale')).toBe('false');
    expect(await row.locator('.stale-badge').count()).toBe(0);

    // The gateway falls silent (its broker connection is gone, say): the row must not stay "current".
    reporting = false;
    await page.locator(`#gateways tr[data-gateway="${gw.gatewayId}"][data-stale="true"]`).waitFor({ timeout: 20_000 });
    expect(await row.locator('.stale-badge').innerText()).toBe('stale');
    expect(await row.locator('td[data-reported]').innerText()).toMatch(/^reported \d+ s ago$/);
    expect(await row.locator('td[data-backlog]').getAttribute('class')).toBe('last-known');
    expect(await row.locator('td[data-backlog]').innerText()).toBe('2');
    // The API row says the same, with the numbers.
    const api = (await (await fetch(`${ingestor.httpUrl}/api/gateways/health`)).json()) as { gateways: { gatewayId: string; stale: boolean; ageMs: number; reportedAt: number }[] };
    const entry = api.gateways.find((g) => g.gatewayId === gw.gatewayId);
    expect(entry?.stale).toBe(true);
    expect(entry?.ageMs).toBeGreaterThan(300);

    // It reports again: current again.
    reporting = true;
    await page.locator(`#gateways tr[data-gateway="${gw.gatewayId}"][data-stale="false"]`).waitFor({ timeout: 20_000 });
  });

  it('an ingestor that has not reached its broker shows broker and database down, as /healthz does, and closes at once', async () => {
    const dir = await makeTempDir('dashboard-links');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // A loopback port nobody listens on; and an InfluxDB that is not there either.
    const { createServer } = await import('node:net');
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const ingestor = createIngestor(
      {
        ingestorId: `ing-dash-links-${process.pid}`,
        dataDir: dir,
        broker: { url: `mqtt://127.0.0.1:${port}`, readyTimeoutMs: 120_000 },
        sink: { type: 'influxdb2', url: `http://127.0.0.1:${port}`, token: 't', org: 'o', bucket: 'b' },
        logLevel: 'silent',
      },
      { logger: silentLogger() },
    );
    const starting = ingestor.ready();
    starting.catch(() => undefined);
    let closed = false;
    cleanups.push(async () => {
      if (!closed) await ingestor.close();
    });
    const url = await waitFor(() => ingestor.httpUrl, { timeoutMs: 20_000, what: 'the ops server listening' });
    expect((await fetch(`${url}/healthz`)).status).toBe(503);

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    cleanups.push(() => page.close());
    await page.goto(url);
    await page.locator('#links span.bad', { hasText: 'broker down' }).waitFor({ timeout: 20_000 });
    await page.locator('#links span.bad', { hasText: 'database down' }).waitFor({ timeout: 20_000 });
    expect(await page.locator('#links span.ok').count()).toBe(0);
    expect(await page.locator('#links').innerText()).toContain('alerts held');

    // close() during the start-up wait ends it: ready() rejects and close() resolves, long before the 120 s timeout.
    await ingestor.close();
    closed = true;
    await expect(starting).rejects.toThrow(/FERRY_ERR_NOT_READY/);
  });
});
