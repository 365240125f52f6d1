// The ops view in real headless Chromium against a real ingestor (Mosquitto, the SQLite sink, the
// health model): a 5,000-device fleet paged 50 at a time in natural order, filtered and grouped;
// a device's charts with a time axis and a range picker that asks the database; alerts grouped by
// rule and gateway, acked and un-acked under the token's name, silenced and found in the history;
// dead letters listed, shown and replayed; a 390 px phone; and the API going away.
// Leaves screenshots in test-artifacts/ops-view-*.png.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import type { HealthMonitor } from '@ferry/health';
import { makeTempDir, startMosquitto, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { launchChromium } from './browser.js';
import { GatewayPeer } from './peer.js';

const ARTIFACTS = join(import.meta.dirname, '..', '..', '..', 'test-artifacts');
const ADMIN = 'ops-view-admin-token-0123456789';
const OPERATOR = 'operator-ann';

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
async function startIngestor(extra: Partial<IngestorConfigInput> = {}): Promise<Ingestor> {
  instance++;
  const dir = await makeTempDir('ops-view');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const ingestor = createIngestor(
    {
      ingestorId: `ing-ops-view-${process.pid}-${instance}`,
      dataDir: dir,
      broker: { url: broker.url },
      write: { lingerMs: 5 },
      logLevel: 'silent',
      http: { host: '127.0.0.1', port: 0, tokens: [{ token: ADMIN, role: 'admin', name: OPERATOR }] },
      health: {
        tickMs: 100,
        defaults: { timeoutMs: 60_000, minTimeoutMs: 1000, graceMs: 0 },
        rules: [{ name: 'device-offline', kind: 'device-offline', severity: 'critical' }],
      },
      ...extra,
    },
    { logger: silentLogger() },
  );
  cleanups.push(() => ingestor.close());
  await ingestor.ready();
  return ingestor;
}

/** Devices fed straight into the ingestor's health model, as its pipeline does; `agoMs` back in time. */
function seed(monitor: HealthMonitor, ids: readonly string[], gatewayId: string, agoMs = 0): void {
  const at = Date.now() - agoMs;
  ids.forEach((deviceId, i) => {
    monitor.observeReading({ deviceId, gatewayId, kind: 'telemetry', ts: at, tsSource: 'device', receivedAt: at, metrics: { battery: 5 + (i % 90), rssi: -50 - (i % 60), temperature: 20 } });
  });
}

async function open(ingestor: Ingestor, hash = '#/', viewport = { width: 1400, height: 900 }): Promise<Page> {
  const page = await browser.newPage({ viewport });
  cleanups.push(() => page.close());
  await page.goto(`${ingestor.httpUrl}/?token=${ADMIN}${hash}`);
  return page;
}

/** The little of the DOM these tests read inside the page (the test code is compiled without the DOM types). */
interface Doc {
  document: { documentElement: { scrollWidth: number }; body: { classList: { contains(c: string): boolean } } };
}

const firstIds = (page: Page, n: number): Promise<string[]> => page.locator('#devices tbody tr[data-device]').evaluateAll((rows, k) => rows.slice(0, k).map((r) => (r as unknown as { dataset: { device: string } }).dataset.device), n);

describe('ops view', () => {
  it('pages a 5,000-device fleet 50 at a time in natural order, filters by state, gateway and text, groups by gateway', async () => {
    const ingestor = await startIngestor();
    const monitor = ingestor.health!;
    const ids = Array.from({ length: 5000 }, (_, i) => `sim-${i + 1}`);
    // gw-1..gw-4 report now; gw-9's 300 devices fell silent ten minutes ago.
    for (let g = 0; g < 4; g++) seed(monitor, ids.slice(g * 1175, (g + 1) * 1175), `gw-${g + 1}`);
    seed(monitor, ids.slice(4700), 'gw-9', 10 * 60_000);
    const page = await open(ingestor);
    const deviceAnswers: number[] = [];
    page.on('response', (res) => {
      if (res.url().includes('/api/devices?')) void res.body().then((b) => deviceAnswers.push(b.length), () => undefined);
    });

    await page.locator('#count [data-shown]', { hasText: '50 of 5000' }).waitFor({ timeout: 30_000 });
    expect(await page.locator('#devices tbody tr[data-device]').count()).toBe(50);
    // Sorted by id: natural order, the direction shown on the header.
    await page.locator('#devices th[data-sort="id"]').click();
    await waitFor(async () => (await firstIds(page, 3)).join() === 'sim-1,sim-2,sim-3', { timeoutMs: 20_000, what: 'ids in natural order' });
    expect(await page.locator('#devices th[data-sort="id"]').getAttribute('aria-sort')).toBe('ascending');
    await page.locator('#next').click();
    await waitFor(async () => (await firstIds(page, 1))[0] === 'sim-51', { timeoutMs: 20_000, what: 'the second page' });
    expect(await page.locator('#count').innerText()).toContain('51–100');
    await page.locator('#devices th[data-sort="id"]').click();
    await waitFor(async () => (await firstIds(page, 2)).join() === 'sim-5000,sim-4999', { timeoutMs: 20_000, what: 'descending ids from the first page' });
    expect(await page.locator('#devices th[data-sort="id"]').getAttribute('aria-sort')).toBe('descending');

    // The silent gateway's devices: by state, then by gateway.
    await page.locator('#devices tbody tr[data-device="sim-4701"].offline').or(page.locator('[data-card="offline"] b', { hasText: '300' })).first().waitFor({ timeout: 30_000 });
    await page.locator('#state').selectOption('offline');
    await page.locator('#count [data-shown]', { hasText: '50 of 300' }).waitFor({ timeout: 20_000 });
    expect(await page.locator('#devices tbody tr[data-device]:not(.offline)').count()).toBe(0);
    await page.locator('#state').selectOption('');
    await page.locator('#gateway').selectOption('gw-2');
    await page.locator('#count [data-shown]', { hasText: '50 of 1175' }).waitFor({ timeout: 20_000 });
    await page.locator('#gateway').selectOption('');
    await page.locator('#search').fill('sim-4999');
    await page.locator('#count [data-shown]', { hasText: '1 of 1' }).waitFor({ timeout: 20_000 });
    await page.locator('#search').fill('no-such-device');
    await page.locator('#devices tbody tr.empty', { hasText: 'No device matches' }).waitFor({ timeout: 20_000 });
    await page.locator('#search').fill('');
    await page.locator('#group').check();
    await page.locator('#devices tr.group-row[data-group="gw-1"]').waitFor({ timeout: 20_000 });

    // The summary cards add up, and the silent gateway's 300 alerts are one group.
    const card = async (name: string): Promise<number> => Number(await page.locator(`[data-card="${name}"] b`).innerText());
    const states = ['online', 'suspect', 'offline', 'flapping', 'unreachable', 'unknown'];
    let sum = 0;
    for (const s of states) sum += await card(s);
    expect(sum).toBe(await card('devices'));
    const group = page.locator('#alerts li.group[data-group-rule="device-offline"][data-group-gateway="gw-9"]');
    await group.waitFor({ timeout: 30_000 });
    await waitFor(async () => (await group.getAttribute('data-count')) === '300', { timeoutMs: 30_000, what: 'one group of 300' });
    expect(await page.locator('#alerts li.group').count()).toBe(1);
    expect(await group.locator('li.alert').count()).toBeLessThanOrEqual(5);
    expect(await group.locator('.group-head .sev.critical').count()).toBe(1);
    // Page-sized answers: 50 devices, not the fleet.
    expect(Math.max(...deviceAnswers)).toBeLessThan(60_000);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'ops-view-fleet.png') });
  });

  it("charts a device's readings on a time axis with units, asks the database on a range change, marks a dead device, draws a single reading", async () => {
    const ingestor = await startIngestor();
    const gw = await GatewayPeer.connect(broker.url, `gw-ops-chart-${process.pid}`);
    cleanups.push(() => gw.close());
    const now = Date.now();
    const readings: Reading[] = Array.from({ length: 30 }, (_, i) => ({ seq: i + 1, deviceId: 'pump-1', kind: 'telemetry', ts: now - (30 - i) * 10_000, tsSource: 'device', receivedAt: now, deviceSeq: i + 1, metrics: { temperature: 20 + i / 100, battery: 81 } }));
    // One reading only, from a device that then went quiet.
    readings.push({ seq: 31, deviceId: 'lonely-1', kind: 'telemetry', ts: now - 5 * 60_000, tsSource: 'device', receivedAt: now, deviceSeq: 1, metrics: { temperature: 7 } });
    await gw.send(1, readings);
    await waitFor(() => ingestor.stats().written >= 31, { timeoutMs: 20_000, what: 'the readings written' });

    const page = await open(ingestor, '#/device/pump-1');
    const chart = page.locator('#charts[data-source="database"] [data-chart="temperature"][data-points="30"]');
    await chart.locator('canvas').first().waitFor({ timeout: 20_000 });
    // A time axis over the hour picked.
    const span = await chart.evaluate((el) => Number((el as unknown as { dataset: { xMax: string } }).dataset.xMax) - Number((el as unknown as { dataset: { xMin: string } }).dataset.xMin));
    expect(span).toBeCloseTo(3600, 0);
    expect(await chart.getAttribute('data-unit')).toBe('°C');
    // Hover: the legend shows the time and the value with its unit.
    const box = (await chart.locator('.u-over').boundingBox())!;
    await page.mouse.move(box.x + box.width - 4, box.y + box.height / 2);
    await waitFor(async () => /°C/.test(await chart.locator('.u-legend').innerText()), { timeoutMs: 10_000, what: 'a hover value with its unit' });
    expect(await page.locator('[data-last-reading]').count()).toBe(0);

    // A longer range is a new query.
    const asked = page.waitForRequest((req) => req.url().includes('/api/devices/pump-1/series?range=24h'));
    await page.locator('button[data-range="24h"]').click();
    await asked;
    await page.locator('#charts[data-shown-range="24h"] [data-chart="temperature"] canvas').first().waitFor({ timeout: 20_000 });
    expect(await page.locator('button[data-range="24h"]').getAttribute('aria-pressed')).toBe('true');
    await page.screenshot({ path: join(ARTIFACTS, 'ops-view-device.png'), fullPage: true });

    // One reading is a point on the chart, not an empty box; the device says how long it has been quiet.
    ingestor.health!.observeReading({ deviceId: 'dead-1', gatewayId: gw.gatewayId, kind: 'telemetry', ts: now - 20 * 60_000, tsSource: 'device', receivedAt: now - 20 * 60_000, metrics: {} });
    await page.evaluate(() => ((globalThis as unknown as { location: { hash: string } }).location.hash = '#/device/lonely-1'));
    await page.locator('[data-chart="temperature"][data-points="1"] canvas').first().waitFor({ timeout: 20_000 });
    await page.evaluate(() => ((globalThis as unknown as { location: { hash: string } }).location.hash = '#/device/dead-1'));
    await page.locator('[data-last-reading]', { hasText: /last reading \d+ min ago/ }).waitFor({ timeout: 20_000 });
    await page.locator('[data-empty-chart]').waitFor({ timeout: 20_000 });
  });

  it('acks and un-acks with the operator name and a comment, silences and expires, and shows the history', async () => {
    const ingestor = await startIngestor();
    const monitor = ingestor.health!;
    seed(monitor, ['a-1', 'a-2', 'a-3'], 'gw-a', 10 * 60_000);
    const page = await open(ingestor, '#/alerts');
    const group = page.locator('#alert-groups li.group[data-group-gateway="gw-a"][data-count="3"]');
    await group.waitFor({ timeout: 30_000 });
    await page.locator('#history tbody tr.empty', { hasText: 'No resolved alerts yet' }).waitFor();
    await page.locator('#silences tbody tr.empty', { hasText: 'No active silences' }).waitFor();

    const a1 = page.locator('#alert-groups li.alert[data-subject="a-1"]');
    const id = await a1.getAttribute('data-alert');
    await a1.locator('input.comment').fill('crew on site');
    await a1.locator('button[data-ack]').click();
    await a1.locator(`.tag.acked[data-acked-by="${OPERATOR}"]`, { hasText: 'crew on site' }).waitFor({ timeout: 20_000 });
    await a1.locator('button[data-unack]').click();
    await a1.locator('button[data-ack]').waitFor({ timeout: 20_000 });
    expect(await a1.locator('.tag.acked').count()).toBe(0);
    await a1.locator('button[data-ack]').click();
    await a1.locator('.tag.acked').waitFor({ timeout: 20_000 });

    await page.locator('#silence-form [name="subject"]').fill('a-2');
    await page.locator('#silence-form [name="comment"]').fill('battery swap');
    await page.locator('#silence-form button[type="submit"]').click();
    const silence = page.locator('#silences tbody tr[data-silence]');
    await silence.waitFor({ timeout: 20_000 });
    expect(await silence.innerText()).toContain(OPERATOR);
    await page.locator('#alert-groups li.alert.silenced[data-subject="a-2"] .tag.silenced').waitFor({ timeout: 20_000 });
    await silence.locator('button[data-expire]').click();
    await page.locator('#silences tbody tr.empty').waitFor({ timeout: 20_000 });
    await page.locator('#alert-groups li.alert[data-subject="a-2"]:not(.silenced)').waitFor({ timeout: 20_000 });

    // a-1 and a-2 report again: their alerts resolve into the history, saying who acted.
    seed(monitor, ['a-1', 'a-2'], 'gw-a');
    const row = page.locator(`#history tr[data-history="${id}"]`);
    await row.waitFor({ timeout: 30_000 });
    expect(await row.locator('[data-acks]').innerText()).toBe(`acked by ${OPERATOR}: crew on site; un-acked by ${OPERATOR}; acked by ${OPERATOR}`);
    await page.locator('#history tr[data-history] [data-silencers]', { hasText: OPERATOR }).waitFor({ timeout: 20_000 });
    await page.locator('#alert-groups li.group[data-count="1"]').waitFor({ timeout: 20_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'ops-view-alerts.png'), fullPage: true });
  });

  it('lists, filters, shows and replays dead letters; fits a 390 px phone; greys out with a banner when the API goes away', async () => {
    const ingestor = await startIngestor();
    const gw = await GatewayPeer.connect(broker.url, `gw-ops-dl-${process.pid}`);
    cleanups.push(() => gw.close());
    const now = Date.now();
    const good: Reading = { seq: 1, deviceId: 'meter-1', kind: 'telemetry', ts: now - 1000, tsSource: 'device', receivedAt: now, deviceSeq: 1, metrics: { power: 3 } };
    // Two hours ahead of the ingestor's clock: refused as skewed, into the dead letters.
    const skewed: Reading = { seq: 2, deviceId: 'meter-2', kind: 'telemetry', ts: now + 2 * 3_600_000, tsSource: 'device', receivedAt: now, deviceSeq: 1, metrics: { power: 4 } };
    await gw.send(1, [good, skewed]);
    await waitFor(() => ingestor.deadLetters.list({}).length >= 1, { timeoutMs: 20_000, what: 'a dead letter' });

    const page = await open(ingestor, '#/deadletters');
    const row = page.locator('#deadletters tbody tr[data-letter]');
    await row.first().waitFor({ timeout: 20_000 });
    expect(await row.count()).toBe(1);
    await page.locator('#dl-code').selectOption('FERRY_ERR_TIMESTAMP_SKEW');
    await page.locator('#dl-device').fill('meter-1');
    await page.locator('#deadletters tbody tr.empty', { hasText: 'No dead letter matches' }).waitFor({ timeout: 20_000 });
    await page.locator('#dl-device').fill('meter-2');
    await page.locator('#dl-gateway').fill(gw.gatewayId);
    await row.first().click();
    await page.locator('#dl-detail [data-payload]', { hasText: '"meter-2"' }).waitFor({ timeout: 20_000 });
    const replay = page.waitForResponse((res) => res.url().includes('/replay'));
    await page.locator('#dl-detail button[data-replay]').click();
    expect((await replay).status()).toBe(422);
    // Still too far ahead: refused again, and the page says so.
    await page.locator('#dl-outcome[data-outcome="rejected"]', { hasText: 'FERRY_ERR_TIMESTAMP_SKEW' }).waitFor({ timeout: 20_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'ops-view-deadletters.png'), fullPage: true });

    // A phone: the search and the key columns on screen, nothing cut off to the side.
    const phone = await open(ingestor, '#/', { width: 390, height: 844 });
    await phone.locator('#devices tbody tr[data-device="meter-1"]').waitFor({ timeout: 20_000 });
    const search = (await phone.locator('#search').boundingBox())!;
    expect(search.x).toBeGreaterThanOrEqual(0);
    expect(search.x + search.width).toBeLessThanOrEqual(390);
    expect(await phone.evaluate(() => (globalThis as unknown as Doc).document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    for (const col of [1, 2, 4]) {
      const cellBox = (await phone.locator(`#devices tbody tr[data-device="meter-1"] td:nth-child(${col})`).boundingBox())!;
      expect(cellBox.x).toBeGreaterThanOrEqual(0);
      expect(cellBox.x + cellBox.width).toBeLessThanOrEqual(390);
    }
    await phone.screenshot({ path: join(ARTIFACTS, 'ops-view-phone.png'), fullPage: true });

    // The API goes away: a banner with the age of the data, everything greyed.
    await ingestor.close();
    await phone.locator('#banner', { hasText: /Connection lost: data as of/ }).waitFor({ timeout: 20_000 });
    expect(await phone.evaluate(() => (globalThis as unknown as Doc).document.body.classList.contains('disconnected'))).toBe(true);
    const filter = await phone.locator('main').evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { filter: string } }).getComputedStyle(el).filter);
    expect(filter).toContain('grayscale');
    await phone.screenshot({ path: join(ARTIFACTS, 'ops-view-lost.png'), fullPage: true });
  });
});
