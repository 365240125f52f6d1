// The dashboard in real headless Chromium: a device that stops reporting turns red and its alert
// shows, without a reload; a device's page charts its raw and rolled-up series side by side.
// Leaves screenshots in test-artifacts/dashboard.png and dashboard-device.png.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chromium } from 'playwright-core';
import type { Browser } from 'playwright-core';
import { uplinkTopics } from '@ferry/protocol';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { makeTempDir, startMosquitto, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import { GatewayPeer } from './peer.js';

const ARTIFACTS = join(import.meta.dirname, '..', '..', '..', 'test-artifacts');

let broker: ServerHandle;
let browser: Browser;
const cleanups: (() => Promise<void> | void)[] = [];
beforeAll(async () => {
  broker = await startMosquitto();
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
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
  it('a device that stops reporting turns red and its alert shows, without a reload; a device page charts raw and rolled-up series side by side', async () => {
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

    // The device page: a chart of its recent readings and its health history.
    await page.locator('tr[data-device="pump-1"]').click();
    await page.locator('[data-chart="temperature"] path').waitFor({ timeout: 20_000 });
    // Beside it, the 1 s rollup of the same metric (the telemetry_1s points): mean over a min-max band.
    await page.locator('[data-pair="temperature"] [data-rollup="temperature"][data-window="1s"] path.mean').waitFor({ timeout: 20_000 });
    await waitFor(async () => ((await page.locator('[data-rollup="temperature"] path.mean').getAttribute('d')) ?? '').split('L').length >= 3, { timeoutMs: 20_000, what: 'a rollup line of three windows or more' });
    expect(await page.locator('[data-pair="temperature"] [data-chart="temperature"] path').count()).toBe(1);
    // The raw charts are of raw points only: no rollup field shows up as a metric of its own.
    expect(await page.locator('[data-chart="temperature_mean"]').count()).toBe(0);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-device.png'), fullPage: true });
  });
});
