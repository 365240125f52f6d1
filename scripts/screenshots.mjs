#!/usr/bin/env node
// `pnpm screenshots`: the pictures in docs/ops-view.md, from a real run. A real ingestor (the built
// workspace, in this process) on a real Mosquitto (@ferry/testkit), a simulated fleet of 5,000
// devices fed into its health model as its pipeline does, and one real gateway peer on the broker
// sending readings, statuses and a refused reading; each view opened in headless Chromium
// (/usr/bin/chromium) at 1280x800 (the phone at 390x844) and saved to docs/ops-view/<view>.png.
// Needs `npx tsc -b` first. Loopback only; nothing leaves the machine.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = fileURLToPath(new URL('..', import.meta.url));
// The MQTT client the ingestor itself uses (a dependency of @ferry/ingestor, not of the root).
const mqtt = createRequire(join(root, 'apps/ingestor/package.json'))('mqtt');
const { createIngestor } = await import(join(root, 'apps/ingestor/dist/index.js')).catch(() => {
  process.stderr.write('the workspace is not built: run `npx tsc -b` first\n');
  process.exit(2);
});
const { BATCH_VERSION, encodeBatch, newBatchNonce, uplinkTopics } = await import(join(root, 'packages/protocol/dist/index.js'));
const { startMosquitto } = await import(join(root, 'packages/testkit/dist/index.js'));

const OUT = join(root, 'docs', 'ops-view');
const TOKEN = 'screenshots-admin-token-0123456789';
const GATEWAY = 'gw-north';
const log = (line) => process.stderr.write(`[screenshots] ${line}\n`);
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const temps = [];
function startIngestor(broker, id) {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-screenshots-'));
  temps.push(dir);
  return createIngestor({
    ingestorId: id,
    dataDir: dir,
    broker: { url: broker.url },
    write: { lingerMs: 5 },
    logLevel: 'silent',
    http: { host: '127.0.0.1', port: 0, tokens: [{ token: TOKEN, role: 'admin', name: 'ann' }], grafanaUrl: 'http://localhost:3000' },
    health: {
      tickMs: 500,
      defaults: { timeoutMs: 60_000, minTimeoutMs: 1000, graceMs: 0 },
      rules: [
        { name: 'device-offline', kind: 'device-offline', severity: 'critical' },
        { name: 'battery-low', kind: 'metric-threshold', metric: 'battery', op: '<', value: 10, severity: 'warning' },
      ],
    },
  });
}

async function shoot(page, name, options = {}) {
  await pause(300);
  await page.screenshot({ path: join(OUT, `${name}.png`), ...options });
  log(`docs/ops-view/${name}.png`);
}

const broker = await startMosquitto();
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
mkdirSync(OUT, { recursive: true });
const open = async (ingestor, hash, viewport = { width: 1280, height: 800 }) => {
  const page = await browser.newPage({ viewport });
  await page.goto(`${ingestor.httpUrl}/?token=${TOKEN}${hash}`);
  return page;
};

try {
  // An empty fleet first: what a new install shows.
  const empty = startIngestor(broker, `ing-shots-empty-${process.pid}`);
  await empty.ready();
  const first = await open(empty, '#/');
  await first.locator('#devices tbody tr.empty').waitFor();
  await shoot(first, 'empty');
  await first.close();
  await empty.close();

  const ingestor = startIngestor(broker, `ing-shots-${process.pid}`);
  await ingestor.ready();
  const client = await mqtt.connectAsync(broker.url, { clientId: `screenshots-${process.pid}`, clean: true });
  // Its statuses every 500 ms for 40 s: the backlog builds while the uplink is slow, drops at the bound, then it drains.
  let n = 0;
  let dropped = 0;
  const status = () => {
    n++;
    const depth = n < 40 ? n * 150 : Math.max(0, 6000 - (n - 40) * 200);
    if (n > 30 && n < 45) dropped += 25;
    return client.publishAsync(uplinkTopics.status(GATEWAY), Buffer.from(JSON.stringify({ v: 1, gatewayId: GATEWAY, state: 'online', ts: Date.now(), statusIntervalMs: 500, uplink: 'connected', version: '1.4.0', outbox: { depth, bytes: depth * 180, oldestTs: Date.now() - depth * 20 }, dropped: { outbox_full: dropped }, disk: { totalBytes: 31e9, freeBytes: 22e9, outboxBytes: depth * 180, maxBytes: 11e9, reserveHeld: true, full: false } })), { qos: 1 });
  };
  log('a gateway reporting for 40 s (and on, every 500 ms, until the end)');
  const reporting = setInterval(() => void status().catch(() => undefined), 500).unref();
  await pause(40_000);

  const monitor = ingestor.health;
  const now = Date.now();
  // 5,000 simulated devices on eight gateways; gw-7's 300 fell silent ten minutes ago.
  for (let i = 0; i < 5000; i++) {
    const gatewayId = i >= 4700 ? 'gw-7' : `gw-${(i % 6) + 1}`;
    const at = i >= 4700 ? now - 10 * 60_000 : now - (i % 40) * 1000;
    monitor.observeReading({ deviceId: `sim-${i + 1}`, gatewayId, kind: 'telemetry', ts: at, tsSource: 'device', receivedAt: at, metrics: { battery: 4 + (i % 95), rssi: -48 - (i % 55), temperature: 18 + (i % 9) } });
  }

  // The real gateway peer: readings of two pumps over the last ten minutes, one two hours ahead (refused).
  const readings = [];
  for (let i = 0; i < 60; i++) {
    const ts = now - (60 - i) * 10_000;
    readings.push({ seq: i + 1, deviceId: 'pump-1', kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts, deviceSeq: i + 1, metrics: { temperature: 41 + Math.sin(i / 6) * 2.5, pressure: 1012 + i / 10, battery: 87 } });
  }
  readings.push({ seq: 61, deviceId: 'pump-2', kind: 'telemetry', ts: now - 1000, tsSource: 'device', receivedAt: now, deviceSeq: 1, metrics: { temperature: 39 } });
  readings.push({ seq: 62, deviceId: 'pump-3', kind: 'telemetry', ts: now + 2 * 3_600_000, tsSource: 'device', receivedAt: now, deviceSeq: 1, metrics: { temperature: 40 } });
  await client.publishAsync(uplinkTopics.batch(GATEWAY), encodeBatch({ v: BATCH_VERSION, gatewayId: GATEWAY, batchId: 1, sentAt: now, nonce: newBatchNonce() }, readings), { qos: 1 });

  const page = await open(ingestor, '#/');
  await page.locator('#count [data-shown]', { hasText: / of 50\d\d/ }).waitFor({ timeout: 60_000 });
  await page.locator('#alerts li.group').first().waitFor({ timeout: 60_000 });
  await shoot(page, 'fleet');

  await page.evaluate(() => (location.hash = '#/device/pump-1'));
  await page.locator('#charts [data-chart="temperature"] canvas').first().waitFor({ timeout: 30_000 });
  await page.locator('button[data-range="15m"]').click();
  await page.locator('#charts[data-shown-range="15m"] canvas').first().waitFor({ timeout: 30_000 });
  await shoot(page, 'device');

  await page.evaluate((id) => (location.hash = `#/gateway/${id}`), GATEWAY);
  await page.locator('button[data-gw-range="15m"]').click();
  await page.locator('#gw-chart[data-shown-range="15m"] canvas').first().waitFor({ timeout: 30_000 });
  await page.locator('#gw-deadletters tbody tr[data-gw-letter]').first().waitFor({ timeout: 30_000 });
  await shoot(page, 'gateway');

  // Alerts: one acknowledged with a comment, one gateway's silenced.
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  const groups = await (await fetch(`${ingestor.httpUrl}/api/alerts/groups?perGroup=1`, { headers })).json();
  const firstAlert = groups.groups[0]?.alerts[0];
  if (firstAlert) await fetch(`${ingestor.httpUrl}/api/alerts/${firstAlert.id}/ack`, { method: 'POST', headers, body: JSON.stringify({ comment: 'crew on the way' }) });
  await fetch(`${ingestor.httpUrl}/api/silences`, { method: 'POST', headers, body: JSON.stringify({ subject: 'sim-47*', durationMs: 3_600_000, comment: 'battery swap' }) });
  await page.evaluate(() => (location.hash = '#/alerts'));
  await page.locator('#silences tbody tr[data-silence]').waitFor({ timeout: 30_000 });
  await shoot(page, 'alerts');

  await page.evaluate(() => (location.hash = '#/deadletters'));
  await page.locator('#deadletters tbody tr[data-letter]').first().click();
  await page.locator('#dl-detail [data-payload]').waitFor({ timeout: 30_000 });
  await shoot(page, 'deadletters');

  const phone = await open(ingestor, '#/', { width: 390, height: 844 });
  await phone.locator('#count [data-shown]', { hasText: / of 50\d\d/ }).waitFor({ timeout: 60_000 });
  await shoot(phone, 'phone');

  await page.evaluate(() => (location.hash = '#/'));
  await page.locator('#count [data-shown]', { hasText: / of 50\d\d/ }).waitFor({ timeout: 60_000 });
  clearInterval(reporting);
  await client.endAsync();
  await ingestor.close();
  await page.locator('#banner', { hasText: 'Connection lost' }).waitFor({ timeout: 30_000 });
  await shoot(page, 'connection-lost');
} finally {
  await browser.close();
  await broker.stop();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
}
