#!/usr/bin/env node
// The ops view's cost in real Chromium (playwright-core, /usr/bin/chromium) against a real
// ingestor (in-process, Mosquitto from @ferry/testkit, the embedded SQLite sink) with a simulated
// fleet of --devices devices (5,000) on --gateways gateways, fed into its health model as its
// pipeline does:
//   firstRenderMs:  navigation to the first complete fleet view (the page's own mark,
//                   body.dataset.firstRenderMs), median of --loads page loads;
//   perPoll:        Chromium's own accounting (CDP Performance.getMetrics) over --seconds of
//                   2 s polls: script, layout + style, and all main-thread task time per poll;
//   bytesPerPoll:   JSON bytes the page fetched per poll (bodies, uncompressed);
//   apiDevicesPageMs: one page of /api/devices (sort by liveness, 50) answered by the ingestor, median.
// The same figures at --small devices (50) in the same run are the floor: the page asks for page-sized
// answers, so its cost should not grow with the fleet; `unpagedDevicesBytes` is what one poll would
// fetch if the page still asked for the whole list. Not a test: nothing asserted.
//
//   node bench/run.mjs dashboard [--devices 5000] [--gateways 10] [--small 50] [--seconds 20] [--loads 5]
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import { chromium } from 'playwright-core';
import { uplinkTopics } from '@ferry/protocol';
import { startMosquitto } from '@ferry/testkit';
import { createIngestor } from '@ferry/ingestor';

const TOKEN = 'bench-dashboard-admin-token-0123456789';

function parseArgs(argv) {
  const opts = { devices: 5000, gateways: 10, small: 50, seconds: 20, loads: 5 };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const key = flag.replace(/^--/, '');
    if (!(key in opts)) throw new Error(`unknown flag ${flag}`);
    opts[key] = Number(argv[++i]);
  }
  return opts;
}

const log = (line) => process.stderr.write(`[bench dashboard] ${line}\n`);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? null : s[Math.floor(s.length / 2)];
};
const round = (x, d = 2) => (x === null ? null : Number(x.toFixed(d)));

/** An ingestor with `devices` devices on `gateways` gateways: a tenth silent for ten minutes (offline, alerting). */
async function fleet(broker, devices, gateways) {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-dashboard-'));
  const ingestor = createIngestor({
    ingestorId: `ing-bench-dashboard-${process.pid}-${devices}`,
    dataDir: dir,
    broker: { url: broker.url },
    logLevel: 'silent',
    http: { host: '127.0.0.1', port: 0, tokens: [{ token: TOKEN, role: 'admin', name: 'bench' }] },
    health: { tickMs: 1000, defaults: { timeoutMs: 60_000, minTimeoutMs: 1000, graceMs: 0 } },
  });
  await ingestor.ready();
  const monitor = ingestor.health;
  const now = Date.now();
  for (let i = 0; i < devices; i++) {
    const at = i % 10 === 9 ? now - 10 * 60_000 : now - (i % 30) * 1000;
    monitor.observeReading({ deviceId: `sim-${i + 1}`, gatewayId: `gw-${(i % gateways) + 1}`, kind: 'telemetry', ts: at, tsSource: 'device', receivedAt: at, metrics: { battery: 5 + (i % 90), rssi: -50 - (i % 60), temperature: 20 + (i % 7) } });
  }
  // Each gateway's status, as a gateway publishes it (not retained: nothing left on the broker).
  const client = await mqtt.connectAsync(broker.url, { clientId: `bench-dashboard-${process.pid}-${devices}`, clean: true });
  const publishStatuses = () =>
    Promise.all(
      Array.from({ length: gateways }, (_, g) =>
        client.publishAsync(uplinkTopics.status(`gw-${g + 1}`), Buffer.from(JSON.stringify({ v: 1, gatewayId: `gw-${g + 1}`, state: 'online', ts: Date.now(), statusIntervalMs: 10_000, uplink: 'connected', outbox: { depth: g * 10, bytes: g * 1000, oldestTs: Date.now() - 1000 } })), { qos: 1 }),
      ),
    );
  await publishStatuses();
  const timer = setInterval(() => void publishStatuses().catch(() => undefined), 10_000);
  return {
    ingestor,
    async close() {
      clearInterval(timer);
      await client.endAsync();
      await ingestor.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function measure(browser, ingestor, devices, opts) {
  const url = `${ingestor.httpUrl}/?token=${TOKEN}#/`;
  const shown = `of ${devices}`;
  // First render, a fresh page each time.
  const loads = [];
  for (let i = 0; i < opts.loads; i++) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(url);
    await page.locator('#count [data-shown]', { hasText: shown }).waitFor({ timeout: 60_000 });
    await page.locator('body[data-first-render-ms]').waitFor({ timeout: 60_000 });
    loads.push(Number(await page.locator('body').getAttribute('data-first-render-ms')));
    await page.close();
  }
  log(`${devices} devices: first render ${loads.join(', ')} ms`);

  // Steady polling: Chromium's own counters over the window, per poll.
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url);
  await page.locator('#count [data-shown]', { hasText: shown }).waitFor({ timeout: 60_000 });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  let polls = 0;
  let bytes = 0;
  let counting = false;
  page.on('response', (res) => {
    if (!counting || !res.url().includes('/api/')) return;
    if (res.url().includes('/api/summary')) polls++;
    void res.body().then((b) => (bytes += b.length), () => undefined);
  });
  const before = await metrics();
  counting = true;
  await new Promise((resolve) => setTimeout(resolve, opts.seconds * 1000));
  counting = false;
  const after = await metrics();
  await page.close();
  const per = (name) => (polls === 0 ? null : ((after[name] - before[name]) * 1000) / polls);

  // The server's share: one page of devices, as the page asks for it.
  const apiTimes = [];
  const headers = { authorization: `Bearer ${TOKEN}` };
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    await (await fetch(`${ingestor.httpUrl}/api/devices?sort=liveness&order=desc&limit=50&offset=0`, { headers })).arrayBuffer();
    apiTimes.push(performance.now() - t0);
  }
  const unpaged = (await (await fetch(`${ingestor.httpUrl}/api/devices?limit=10000`, { headers })).arrayBuffer()).byteLength;
  return {
    devices,
    firstRenderMs: median(loads),
    firstRenderRunsMs: loads,
    polls,
    perPoll: { scriptMs: round(per('ScriptDuration')), layoutAndStyleMs: round(per('LayoutDuration') + per('RecalcStyleDuration')), taskMs: round(per('TaskDuration')) },
    bytesPerPoll: polls === 0 ? null : Math.round(bytes / polls),
    apiDevicesPageMs: round(median(apiTimes)),
    unpagedDevicesBytes: unpaged,
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const loadBefore = loadavg().map((x) => Number(x.toFixed(2)));
  log(`starting Mosquitto and Chromium (load average ${loadBefore.join(' ')})`);
  const broker = await startMosquitto();
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const results = {};
  try {
    for (const [name, devices] of [['large', opts.devices], ['small', opts.small]]) {
      log(`fleet of ${devices} devices on ${opts.gateways} gateways`);
      const f = await fleet(broker, devices, opts.gateways);
      try {
        results[name] = await measure(browser, f.ingestor, devices, opts);
      } finally {
        await f.close();
      }
      log(`${devices} devices: ${JSON.stringify(results[name].perPoll)} per poll, ${results[name].bytesPerPoll} B per poll`);
    }
  } finally {
    await browser.close();
    await broker.stop();
  }
  const large = results.large;
  const small = results.small;
  const out = {
    bench: 'dashboard',
    ...results,
    // How much more a poll costs at the large fleet than at the small one (1: no growth).
    scriptPerPollVsSmall: small.perPoll.scriptMs ? round(large.perPoll.scriptMs / small.perPoll.scriptMs) : null,
    bytesPerPollVsSmall: small.bytesPerPoll ? round(large.bytesPerPoll / small.bytesPerPoll) : null,
    machine: { cpus: cpus().length, loadAverageBefore: loadBefore, loadAverage: loadavg().map((x) => Number(x.toFixed(2))) },
    options: opts,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
