#!/usr/bin/env node
// Gateway benchmark: ingest, drain and memory of the real gateway process, each beside a ceiling
// measured in the same run on the same machine (a bare aedes QoS 1 relay, raw batched SQLite).
// Progress goes to stderr; the last stdout line is one JSON object. Not a test: nothing asserted.
//
//   node bench/run.mjs gateway [--ingest 100000] [--clients 20] [--window 50]
//                              [--backlog 1000000] [--drain-seconds 20] [--held-publish 20000]
//                              [--idle-seconds 20] [--phases idle,burst,relay,sqlite,backlog] [--keep]
//
// Needs the built workspace (`npx tsc -b`): the gateway, ingestor and broker run as children of
// `node apps/ferry/dist/main.js`, so their RSS is their own and the load generator gets its own core.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';

const FERRY_MAIN = fileURLToPath(new URL('../apps/ferry/dist/main.js', import.meta.url));
const SELF = fileURLToPath(import.meta.url);
const BARE_GATEWAY = fileURLToPath(new URL('./lib/bare-gateway.mjs', import.meta.url));

/** idle: RSS at rest; burst: the ingest, with both flag sets; relay: bare aedes; sqlite: raw ceilings; backlog: held + drain. */
const PHASES = ['idle', 'burst', 'relay', 'sqlite', 'backlog'];

function parseArgs(argv) {
  const opts = {
    ingest: 100_000,
    clients: 20,
    window: 50,
    backlog: 1_000_000,
    drainSeconds: 20,
    heldPublish: 20_000,
    idleSeconds: 20,
    phases: new Set(PHASES),
    keep: false,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const next = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${flag} needs a positive number`);
      return v;
    };
    if (flag === '--ingest') opts.ingest = next();
    else if (flag === '--clients') opts.clients = next();
    else if (flag === '--window') opts.window = next();
    else if (flag === '--backlog') opts.backlog = next();
    else if (flag === '--drain-seconds') opts.drainSeconds = next();
    else if (flag === '--held-publish') opts.heldPublish = next();
    else if (flag === '--idle-seconds') opts.idleSeconds = next();
    else if (flag === '--phases') {
      opts.phases = new Set((argv[++i] ?? '').split(','));
      const unknown = [...opts.phases].filter((p) => !PHASES.includes(p));
      if (unknown.length > 0 || opts.phases.size === 0) throw new Error(`--phases takes some of ${PHASES.join(',')}`);
    }
    else if (flag === '--keep') opts.keep = true;
    else throw new Error(`unknown flag ${flag}`);
  }
  return opts;
}

function loadText() {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

function log(line) {
  process.stderr.write(`[bench gateway] ${line}\n`);
}

function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** CPU time (user + system, ms) of each process, from /proc/<pid>/stat. */
function cpuOf(pids) {
  const out = {};
  for (const [name, pid] of Object.entries(pids)) {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after "pid (comm) "; clock ticks of 10 ms.
    out[name] = (Number(fields[11]) + Number(fields[12])) * 10;
  }
  return out;
}

async function waitUntil(probe, what, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await pause(50);
  }
}

// ---------------------------------------------------------------- children
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function spawnChild(args, logFile, env = process.env) {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(process.execPath, args, { stdio: ['ignore', fd, fd], env });
    children.add(child);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    exited.then(() => children.delete(child));
    return {
      child,
      pid: child.pid,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(t);
      },
    };
  } finally {
    closeSync(fd);
  }
}

/** The node flags between `node` and the script in the Pi unit's ExecStart. */
const GATEWAY_NODE_FLAGS = (() => {
  const unit = readFileSync(new URL('../deploy/pi/ferry-gateway.service', import.meta.url), 'utf8');
  const execStart = /^ExecStart=\S+\s+(.*?)\s*\S*ferry\.mjs /m.exec(unit);
  if (!execStart) throw new Error('deploy/pi/ferry-gateway.service: no ExecStart with ferry.mjs');
  return execStart[1];
})();

/** The unit's Environment= settings (NAME=value), which the gateway runs with on a Pi. */
const GATEWAY_ENV = (() => {
  const unit = readFileSync(new URL('../deploy/pi/ferry-gateway.service', import.meta.url), 'utf8');
  return Object.fromEntries([...unit.matchAll(/^Environment=(\w+)=(.*)$/gm)].map((m) => [m[1], m[2].trim()]));
})();

/**
 * The gateway runs with the V8 flags and environment the Pi install gives it (deploy/pi), unless
 * BENCH_GATEWAY_NODE_FLAGS says otherwise (then with neither the unit's flags nor its environment);
 * `nodeDefaults` runs it as a plain `node` would, with neither.
 */
function gatewayLaunch(nodeDefaults) {
  if (nodeDefaults) return { nodeFlags: [], env: process.env };
  const given = process.env.BENCH_GATEWAY_NODE_FLAGS;
  return {
    nodeFlags: (given ?? GATEWAY_NODE_FLAGS).split(' ').filter(Boolean),
    env: given === undefined ? { ...process.env, ...GATEWAY_ENV } : process.env,
  };
}

async function startFerry(kind, config, dir, name, httpPort, { requireOk = true, nodeDefaults = false } = {}) {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  const { nodeFlags, env } = kind === 'gateway' ? gatewayLaunch(nodeDefaults) : { nodeFlags: [], env: process.env };
  // BENCH_CPU_PROF=<dir> writes a CPU profile of every Ferry child into <dir>/<name>.
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${join(process.env.BENCH_CPU_PROF, name)}`] : [];
  const proc = spawnChild([...nodeFlags, ...profile, FERRY_MAIN, kind, '-c', file], join(dir, `${name}.log`), env);
  await waitUntil(async () => {
    if (proc.child.exitCode !== null) throw new Error(`${name} exited; see ${join(dir, `${name}.log`)}`);
    const res = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
    await res.arrayBuffer();
    return !requireOk || res.ok;
  }, `${name} /healthz`).catch((err) => {
    throw new Error(`${err.message}\n${tail(join(dir, `${name}.log`))}`);
  });
  return proc;
}

function tail(file) {
  try {
    return readFileSync(file, 'utf8').slice(-3000);
  } catch {
    return '';
  }
}

function rssOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { rssMB: kb('VmRSS') / 1024, hwmMB: kb('VmHWM') / 1024, anonMB: kb('RssAnon') / 1024, fileMB: kb('RssFile') / 1024 };
}

/**
 * Peak memory of a Ferry process while it runs: VmRSS and its anonymous part from /proc every
 * 100 ms, and the V8 heap (total, from its /metrics) every 500 ms.
 */
function sampleMemory(pid, httpPort) {
  const peak = { rssMB: 0, anonMB: 0, heapMB: 0 };
  const sample = () => {
    try {
      const r = rssOf(pid);
      peak.rssMB = Math.max(peak.rssMB, r.rssMB);
      peak.anonMB = Math.max(peak.anonMB, r.anonMB);
    } catch {
      // exited
    }
  };
  const sampleHeap = () =>
    metrics(httpPort).then(
      (m) => (peak.heapMB = Math.max(peak.heapMB, metric(m, 'nodejs_heap_size_total_bytes') / 1048576)),
      () => undefined,
    );
  sample();
  void sampleHeap();
  const timers = [setInterval(sample, 100), setInterval(() => void sampleHeap(), 500)];
  return { peak, stop: () => timers.forEach(clearInterval) };
}

function metric(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    sum += Number(rest.slice(rest.lastIndexOf(' ') + 1)) || 0;
  }
  return sum;
}

async function metrics(httpPort) {
  return (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
}

// ---------------------------------------------------------------- load
function payloadOf(device, n, baseTs) {
  return JSON.stringify({
    ts: baseTs + n,
    seq: n,
    metrics: { temperature: 20 + (n % 100) / 10, humidity: 40 + (n % 37), battery: 3.1, rssi: -60 - (n % 20) },
  });
}

/**
 * `clients` MQTT.js publishers, `window` QoS 1 publishes in flight each, `total` in all.
 * Resolves when every publish was PUBACKed (and `until` holds, e.g. a subscriber got them all).
 */
async function publishLoad({ url, clients, window, total, prefix, until }) {
  const per = Math.ceil(total / clients);
  const baseTs = Date.now() - 3_600_000;
  const conns = await Promise.all(
    Array.from({ length: clients }, (_, c) =>
      mqtt.connectAsync(url, { protocolVersion: 4, clientId: `${prefix}-${c}-${process.pid}`, clean: true, reconnectPeriod: 0 }),
    ),
  );
  const started = performance.now();
  await Promise.all(
    conns.map(
      (client, c) =>
        new Promise((resolve, reject) => {
          const device = `${prefix}-${c}`;
          const topic = `devices/${device}/telemetry`;
          const count = Math.min(per, total - c * per);
          let next = 0;
          let acked = 0;
          let inFlight = 0;
          if (count <= 0) {
            resolve();
            return;
          }
          const pump = () => {
            while (inFlight < window && next < count) {
              const n = next++;
              inFlight += 1;
              client.publish(topic, payloadOf(device, n, baseTs), { qos: 1 }, (err) => {
                inFlight -= 1;
                if (err) {
                  reject(err);
                  return;
                }
                acked += 1;
                if (acked === count) resolve();
                else pump();
              });
            }
          };
          pump();
        }),
    ),
  );
  if (until) await waitUntil(until, 'the load to be delivered', 300_000);
  const elapsedMs = performance.now() - started;
  await Promise.all(conns.map((c) => c.endAsync()));
  return { elapsedMs, perSec: (total / elapsedMs) * 1000 };
}

// ---------------------------------------------------------------- phases
function gatewayConfig(dir, devicePort, httpPort, uplinkUrl) {
  return {
    gatewayId: 'gw-bench',
    dataDir: join(dir, 'gateway'),
    devices: { listen: { host: '127.0.0.1', port: devicePort } },
    uplink: { url: uplinkUrl, reconnectMinMs: 100, reconnectMaxMs: 500 },
    http: { host: '127.0.0.1', port: httpPort },
    logLevel: 'warn',
  };
}

/**
 * The burst: `--ingest` QoS 1 publishes, `--clients` x `--window` in flight (1,000 by default), into
 * a gateway whose uplink points at a port nobody listens on, so this is receive -> validate ->
 * commit -> PUBACK alone. Its peak RSS is `burstPeakRssMB`.
 */
async function ingestPhase(opts, dir, { nodeDefaults = false } = {}) {
  const [devicePort, httpPort, deadPort] = [await freePort(), await freePort(), await freePort()];
  const name = nodeDefaults ? 'gateway-ingest-node-defaults' : 'gateway-ingest';
  const gw = await startFerry('gateway', gatewayConfig(dir, devicePort, httpPort, `mqtt://127.0.0.1:${deadPort}`), dir, name, httpPort, { nodeDefaults });
  const memory = sampleMemory(gw.pid, httpPort);
  try {
    const flags = nodeDefaults ? "Node's default flags" : 'the Pi unit\'s flags';
    log(`burst (${flags}): ${opts.ingest} QoS 1 publishes, ${opts.clients} clients x ${opts.window} in flight`);
    const cpuBefore = cpuOf({ gateway: gw.pid }).gateway;
    const r = await publishLoad({ url: `mqtt://127.0.0.1:${devicePort}`, clients: opts.clients, window: opts.window, total: opts.ingest, prefix: 'ingest' });
    // The gateway's CPU time per 10,000 publishes: what the flags cost, far less moved by the load than the rate.
    const cpuMsPer10k = ((cpuOf({ gateway: gw.pid }).gateway - cpuBefore) / opts.ingest) * 10_000;
    const committed = metric(await metrics(httpPort), 'ferry_gateway_committed_total');
    const { rssMB, hwmMB } = rssOf(gw.pid);
    const { peak } = memory;
    // VmHWM catches a peak between two samples.
    const peakRssMB = Math.max(peak.rssMB, hwmMB);
    log(
      `burst (${flags}): ${r.perSec.toFixed(0)}/s (${committed} committed), gateway RSS ${rssMB.toFixed(1)} MB after, ` +
        `peak ${peakRssMB.toFixed(1)} MB (anonymous ${peak.anonMB.toFixed(1)}, V8 heap ${peak.heapMB.toFixed(1)}), ${cpuMsPer10k.toFixed(0)} ms CPU per 10,000; load average ${loadText()}`,
    );
    return { ingestPerSec: r.perSec, ingestRssMB: rssMB, committed, peakRssMB, peakAnonMB: peak.anonMB, peakHeapMB: peak.heapMB, cpuMsPer10k };
  } finally {
    memory.stop();
    await gw.stop();
  }
}

/**
 * The gateway at rest: uplink connected to a real `ferry broker`, no backlog, no device. RSS is
 * sampled every 500 ms for `--idle-seconds` after the uplink connects; `idleRssMB` is the highest
 * sample of the last quarter (once start-up garbage is collected), `idleRssStartMB` the first.
 */
async function idlePhase(opts, dir) {
  const [brokerPort, brokerHttp, devicePort, gatewayHttp] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const broker = await startFerry(
    'broker',
    { listen: { host: '127.0.0.1', port: brokerPort }, http: { host: '127.0.0.1', port: brokerHttp }, logLevel: 'warn' },
    dir,
    'broker-idle',
    brokerHttp,
  );
  let gw;
  let bare;
  try {
    gw = await startFerry('gateway', gatewayConfig(dir, devicePort, gatewayHttp, `mqtt://127.0.0.1:${brokerPort}`), dir, 'gateway-idle', gatewayHttp);
    await waitUntil(async () => metric(await metrics(gatewayHttp), 'ferry_gateway_uplink_connected') === 1, 'the idle gateway\'s uplink');
    const { first, idle } = await idleSamples(gw.pid, opts.idleSeconds);
    const heapMB = metric(await metrics(gatewayHttp), 'nodejs_heap_size_total_bytes') / 1048576;
    log(
      `idle: RSS ${first.rssMB.toFixed(1)} MB when the uplink connected, ${idle.rssMB.toFixed(1)} MB after ${opts.idleSeconds} s ` +
        `(anonymous ${idle.anonMB.toFixed(1)}, file ${idle.fileMB.toFixed(1)}, V8 heap ${heapMB.toFixed(1)}); load average ${loadText()}`,
    );
    await gw.stop();
    gw = undefined;
    // The floor, with the same flags and environment and the same uplink broker.
    const { nodeFlags, env } = gatewayLaunch(false);
    const bareLog = join(dir, 'bare-gateway.log');
    bare = spawnChild([...nodeFlags, BARE_GATEWAY, String(devicePort), `mqtt://127.0.0.1:${brokerPort}`, join(dir, 'bare-outbox.db'), String(gatewayHttp)], bareLog, env);
    await waitUntil(() => {
      if (bare.child.exitCode !== null) throw new Error(`the bare gateway exited\n${tail(bareLog)}`);
      return /^ready$/m.test(tail(bareLog));
    }, 'the bare gateway');
    const bareIdle = await idleSamples(bare.pid, opts.idleSeconds);
    log(`bare gateway (aedes, MQTT.js uplink, SQLite, pino, prom-client; no Ferry code): RSS ${bareIdle.idle.rssMB.toFixed(1)} MB after ${opts.idleSeconds} s (anonymous ${bareIdle.idle.anonMB.toFixed(1)}, file ${bareIdle.idle.fileMB.toFixed(1)})`);
    return {
      idleRssMB: idle.rssMB,
      idleRssStartMB: first.rssMB,
      idleAnonMB: idle.anonMB,
      idleFileMB: idle.fileMB,
      idleHeapMB: heapMB,
      bareIdleRssMB: bareIdle.idle.rssMB,
      bareIdleAnonMB: bareIdle.idle.anonMB,
    };
  } finally {
    await gw?.stop();
    await bare?.stop();
    await broker.stop();
  }
}

/** RSS sampled every 500 ms for `seconds`: the first sample, and the highest of the last quarter (once start-up garbage is collected). */
async function idleSamples(pid, seconds) {
  const samples = [];
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    samples.push(rssOf(pid));
    await pause(500);
  }
  const settled = samples.slice(Math.floor((samples.length * 3) / 4));
  return { first: samples[0], idle: settled.reduce((a, b) => (b.rssMB > a.rssMB ? b : a)) };
}

async function aedesPhase(opts, dir) {
  const port = await freePort();
  const server = spawnChild([SELF, '--serve-aedes', String(port)], join(dir, 'aedes.log'));
  try {
    await waitUntil(
      () =>
        new Promise((resolve) => {
          const s = connect(port, '127.0.0.1', () => {
            s.destroy();
            resolve(true);
          });
          s.once('error', () => resolve(false));
        }),
      'aedes to listen',
    );
    const url = `mqtt://127.0.0.1:${port}`;
    const sub = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `relay-sub-${process.pid}`, clean: true, reconnectPeriod: 0 });
    let received = 0;
    sub.on('message', () => {
      received += 1;
    });
    await sub.subscribeAsync('devices/#', { qos: 1 });
    log(`aedes relay: the same ${opts.ingest} QoS 1 publishes to one QoS 1 subscriber`);
    const r = await publishLoad({ url, clients: opts.clients, window: opts.window, total: opts.ingest, prefix: 'relay', until: () => received >= opts.ingest });
    await sub.endAsync();
    log(`aedes relay: ${r.perSec.toFixed(0)}/s`);
    return { aedesQos1RelayPerSec: r.perSec };
  } finally {
    await server.stop();
  }
}

function sqlitePhase(opts, dir) {
  const rows = opts.ingest;
  const db = new Database(join(dir, 'raw.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(`CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, ts INTEGER NOT NULL,
           received_at INTEGER NOT NULL, bytes INTEGER NOT NULL, payload TEXT NOT NULL)`);
  const insert = db.prepare('INSERT INTO outbox (device_id, ts, received_at, bytes, payload) VALUES (?, ?, ?, ?, ?)');
  const now = Date.now();
  const reading = (n) => ({
    deviceId: `raw-${n % 20}`,
    kind: 'telemetry',
    ts: now + n,
    tsSource: 'device',
    receivedAt: now + n,
    deviceSeq: n,
    metrics: { temperature: 20 + (n % 100) / 10, humidity: 40 + (n % 37), battery: 3.1, rssi: -60 - (n % 20) },
  });
  const insertMany = db.transaction((batch) => {
    for (const r of batch) {
      const payload = JSON.stringify(r);
      insert.run(r.deviceId, r.ts, r.receivedAt, Buffer.byteLength(payload), payload);
    }
  });
  // Same group size as the gateway's commitMaxReadings default.
  const GROUP = 1000;
  let t = performance.now();
  for (let i = 0; i < rows; i += GROUP) {
    const batch = [];
    for (let n = i; n < Math.min(rows, i + GROUP); n += 1) batch.push(reading(n));
    insertMany(batch);
  }
  const insertPerSec = (rows / (performance.now() - t)) * 1000;
  const read = db.prepare('SELECT seq, bytes, payload FROM outbox ORDER BY seq LIMIT ?');
  const del = db.prepare('DELETE FROM outbox WHERE seq = ?');
  const delMany = db.transaction((seqs) => {
    for (const s of seqs) del.run(s);
  });
  t = performance.now();
  let done = 0;
  for (;;) {
    const got = read.all(GROUP);
    if (got.length === 0) break;
    for (const row of got) JSON.parse(row.payload);
    delMany(got.map((r) => r.seq));
    done += got.length;
  }
  const readDeletePerSec = (done / (performance.now() - t)) * 1000;
  db.close();
  log(`raw sqlite: insert ${insertPerSec.toFixed(0)}/s, read+delete ${readDeletePerSec.toFixed(0)}/s (${rows} rows, groups of ${GROUP})`);
  return { sqliteInsertPerSec: insertPerSec, sqliteReadDeletePerSec: readDeletePerSec };
}

async function prefill(opts, dir) {
  const { createSqliteOutbox } = await import('@ferry/gateway');
  const outbox = createSqliteOutbox({ path: join(dir, 'gateway', 'outbox.db') });
  const now = Date.now();
  const CHUNK = 5000;
  const t = performance.now();
  for (let i = 0; i < opts.backlog; i += CHUNK) {
    const chunk = [];
    for (let n = i; n < Math.min(opts.backlog, i + CHUNK); n += 1) {
      const ts = now - (opts.backlog - n);
      chunk.push({
        deviceId: `backlog-${n % 50}`,
        kind: 'telemetry',
        ts,
        tsSource: 'device',
        receivedAt: ts,
        deviceSeq: n,
        metrics: { temperature: 20 + (n % 100) / 10, humidity: 40 + (n % 37), battery: 3.1, rssi: -60 - (n % 20) },
      });
    }
    outbox.append(chunk);
  }
  const depth = outbox.stats().depth;
  outbox.close();
  log(`backlog: ${depth} readings written into the outbox in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  return depth;
}

async function heldPhase(opts, dir) {
  const [devicePort, httpPort, deadPort] = [await freePort(), await freePort(), await freePort()];
  const gw = await startFerry('gateway', gatewayConfig(dir, devicePort, httpPort, `mqtt://127.0.0.1:${deadPort}`), dir, 'gateway-held', httpPort);
  const memory = sampleMemory(gw.pid, httpPort);
  try {
    log(`held: gateway up on the backlog, RSS ${memory.peak.rssMB.toFixed(1)} MB; publishing ${opts.heldPublish} more with the uplink down`);
    const r = await publishLoad({
      url: `mqtt://127.0.0.1:${devicePort}`,
      clients: opts.clients,
      window: opts.window,
      total: opts.heldPublish,
      prefix: 'held',
    });
    const depth = metric(await metrics(httpPort), 'ferry_gateway_outbox_depth');
    const { hwmMB } = rssOf(gw.pid);
    const { peak } = memory;
    log(`held: depth ${depth}, ingest onto the backlog ${r.perSec.toFixed(0)}/s, peak RSS ${peak.rssMB.toFixed(1)} MB (anonymous ${peak.anonMB.toFixed(1)}, V8 heap ${peak.heapMB.toFixed(1)}, VmHWM ${hwmMB.toFixed(1)})`);
    return { rssHeldMB: peak.rssMB, rssHeldAnonMB: peak.anonMB, heapHeldMB: peak.heapMB, heldDepth: depth, ingestWithBacklogPerSec: r.perSec };
  } finally {
    memory.stop();
    await gw.stop();
  }
}

async function drainPhase(opts, dir) {
  const [brokerPort, brokerHttp, ingestorHttp, devicePort, gatewayHttp] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const brokerUrl = `mqtt://127.0.0.1:${brokerPort}`;
  const broker = await startFerry(
    'broker',
    { listen: { host: '127.0.0.1', port: brokerPort }, http: { host: '127.0.0.1', port: brokerHttp }, logLevel: 'warn' },
    dir,
    'broker',
    brokerHttp,
  );
  const ingestor = await startFerry(
    'ingestor',
    { dataDir: join(dir, 'ingestor'), broker: { url: brokerUrl }, http: { host: '127.0.0.1', port: ingestorHttp }, logLevel: 'warn' },
    dir,
    'ingestor',
    ingestorHttp,
  );
  let gw;
  let memory;
  try {
    gw = await startFerry('gateway', gatewayConfig(dir, devicePort, gatewayHttp, brokerUrl), dir, 'gateway-drain', gatewayHttp);
    memory = sampleMemory(gw.pid, gatewayHttp);
    const startDepth = metric(await metrics(gatewayHttp), 'ferry_gateway_outbox_depth');
    const procs = { gateway: gw.pid, broker: broker.pid, ingestor: ingestor.pid };
    let cpuAtFirst;
    log(`drain: ${startDepth} readings into a real ingestor (embedded SQLite sink), for at most ${opts.drainSeconds} s`);
    let first;
    let last;
    let ackedAtFirst = 0;
    let acked = 0;
    let depth = startDepth;
    const deadline = Date.now() + 120_000;
    for (;;) {
      const m = await metrics(gatewayHttp);
      const a = metric(m, 'ferry_gateway_acked_readings_total');
      depth = metric(m, 'ferry_gateway_outbox_depth');
      const now = performance.now();
      if (first === undefined && a > 0) {
        first = now;
        ackedAtFirst = a;
        cpuAtFirst = cpuOf(procs);
      }
      if (first !== undefined) {
        last = now;
        acked = a;
        if (depth === 0 || now - first >= opts.drainSeconds * 1000) break;
      } else if (Date.now() > deadline) {
        throw new Error('the drain never started');
      }
      await pause(100);
    }
    const seconds = (last - first) / 1000;
    const cpuEnd = cpuOf(procs);
    // Share of one core each process used during the drain: which of them binds it.
    const cpuShare = Object.fromEntries(Object.keys(procs).map((k) => [k, round((cpuEnd[k] - cpuAtFirst[k]) / 1000 / seconds)]));
    log(`drain: CPU (share of one core) ${JSON.stringify(cpuShare)}`);
    const gm = await metrics(gatewayHttp);
    const im = await metrics(ingestorHttp);
    log(
      `drain: gateway batches sent ${metric(gm, 'ferry_gateway_batches_sent_total')}, resends ${metric(gm, 'ferry_gateway_resends_total')}; ` +
        `ingestor batches ${metric(im, 'ferry_ingestor_batches_total')}, writes ${metric(im, 'ferry_ingestor_write_duration_seconds_count')} ` +
        `taking ${metric(im, 'ferry_ingestor_write_duration_seconds_sum').toFixed(1)} s in all`,
    );
    const drainPerSec = seconds > 0 ? (acked - ackedAtFirst) / seconds : 0;
    const { peak } = memory;
    log(`drain: ${acked} acked in ${seconds.toFixed(1)} s after the first ack: ${drainPerSec.toFixed(0)}/s; depth left ${depth}; peak RSS ${peak.rssMB.toFixed(1)} MB (anonymous ${peak.anonMB.toFixed(1)}, V8 heap ${peak.heapMB.toFixed(1)})`);
    return { drainPerSec, drainedReadings: acked, drainSeconds: seconds, rssDrainMB: peak.rssMB, rssDrainAnonMB: peak.anonMB, heapDrainMB: peak.heapMB, drainCpuShare: cpuShare };
  } finally {
    memory?.stop();
    await gw?.stop();
    await ingestor.stop();
    await broker.stop();
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` (or \`npm run build\`) first`);
  const dir = await mkdtemp(join(tmpdir(), 'ferry-bench-gateway-'));
  log(`work dir ${dir}; load average ${loadText()}; ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}`);
  const on = (phase) => opts.phases.has(phase);
  const loads = [];
  const noteLoad = () => loads.push(loadavg()[0]);
  try {
    const idle = on('idle') ? await idlePhase(opts, join(dir, 'idle')) : undefined;
    if (idle) noteLoad();
    const ingest = on('burst') ? await ingestPhase(opts, join(dir, 'ingest')) : undefined;
    if (ingest) noteLoad();
    const ingestDefaults = on('burst') ? await ingestPhase(opts, join(dir, 'ingest-node-defaults'), { nodeDefaults: true }) : undefined;
    if (ingestDefaults) noteLoad();
    const relay = on('relay') ? await aedesPhase(opts, dir) : undefined;
    if (relay) noteLoad();
    const raw = on('sqlite') ? sqlitePhase(opts, dir) : undefined;
    let backlog;
    let held;
    let drain;
    if (on('backlog')) {
      const backlogDir = join(dir, 'backlog');
      backlog = await prefill(opts, backlogDir);
      held = await heldPhase(opts, backlogDir);
      drain = await drainPhase(opts, backlogDir);
      noteLoad();
    }
    const rssMB = held && drain ? Math.max(held.rssHeldMB, drain.rssDrainMB) : undefined;
    const ratio = (a, b) => (a !== undefined && b !== undefined ? round(a / b) : undefined);
    const result = {
      bench: 'gateway',
      date: new Date().toISOString(),
      machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
      sizes: { ingest: opts.ingest, clients: opts.clients, window: opts.window, backlog, drainSeconds: opts.drainSeconds, idleSeconds: opts.idleSeconds },
      gatewayNodeFlags: gatewayLaunch(false).nodeFlags.join(' '),
      idleRssMB: idle && round(idle.idleRssMB),
      idleRssStartMB: idle && round(idle.idleRssStartMB),
      idleAnonMB: idle && round(idle.idleAnonMB),
      idleHeapMB: idle && round(idle.idleHeapMB),
      bareIdleRssMB: idle && round(idle.bareIdleRssMB),
      bareIdleAnonMB: idle && round(idle.bareIdleAnonMB),
      burstPeakRssMB: ingest && round(ingest.peakRssMB),
      burstPeakRssMBNodeDefaults: ingestDefaults && round(ingestDefaults.peakRssMB),
      burstPeakHeapMB: ingest && round(ingest.peakHeapMB),
      burstPeakHeapMBNodeDefaults: ingestDefaults && round(ingestDefaults.peakHeapMB),
      ingestPerSec: ingest && Math.round(ingest.ingestPerSec),
      ingestPerSecNodeDefaults: ingestDefaults && Math.round(ingestDefaults.ingestPerSec),
      burstCpuMsPer10k: ingest && Math.round(ingest.cpuMsPer10k),
      burstCpuMsPer10kNodeDefaults: ingestDefaults && Math.round(ingestDefaults.cpuMsPer10k),
      aedesQos1RelayPerSec: relay && Math.round(relay.aedesQos1RelayPerSec),
      ingestVsAedesRelay: ratio(ingest?.ingestPerSec, relay?.aedesQos1RelayPerSec),
      ingestNodeDefaultsVsAedesRelay: ratio(ingestDefaults?.ingestPerSec, relay?.aedesQos1RelayPerSec),
      sqliteInsertPerSec: raw && Math.round(raw.sqliteInsertPerSec),
      ingestVsSqliteInsert: ratio(ingest?.ingestPerSec, raw?.sqliteInsertPerSec),
      sqliteReadDeletePerSec: raw && Math.round(raw.sqliteReadDeletePerSec),
      drainPerSec: drain && Math.round(drain.drainPerSec),
      drainVsSqliteReadDelete: ratio(drain?.drainPerSec, raw?.sqliteReadDeletePerSec),
      drainedReadings: drain?.drainedReadings,
      drainCpuShare: drain?.drainCpuShare,
      ingestWithBacklogPerSec: held && Math.round(held.ingestWithBacklogPerSec),
      rssMB: rssMB !== undefined ? round(rssMB) : undefined,
      rssHeldMB: held && round(held.rssHeldMB),
      rssDrainMB: drain && round(drain.rssDrainMB),
      rssAnonMB: held && drain ? round(Math.max(held.rssHeldAnonMB, drain.rssDrainAnonMB)) : undefined,
      heapTotalMB: held && drain ? round(Math.max(held.heapHeldMB, drain.heapDrainMB)) : undefined,
      rssIngestMB: ingest && round(ingest.ingestRssMB),
      loadAverage: loadavg().map(round),
      // The 1-minute load average after each phase run (idle, burst x2, relay, backlog): above the
      // core count, a figure is not Ferry's alone.
      loadAfterPhases: loads.map(round),
      targets: {
        idleRssAtMost60MB: idle ? idle.idleRssMB <= 60 : undefined,
        burstPeakRssAtMost100MB: ingest ? ingest.peakRssMB <= 100 : undefined,
        burstPeakRssAtMost100MBNodeDefaults: ingestDefaults ? ingestDefaults.peakRssMB <= 100 : undefined,
        ingestAtLeastHalfAedesRelay: ingest && relay ? ingest.ingestPerSec >= 0.5 * relay.aedesQos1RelayPerSec : undefined,
        drainAtLeast20kPerSec: drain ? drain.drainPerSec >= 20_000 : undefined,
        rssUnder100MBWith1MBacklog: rssMB !== undefined ? rssMB < 100 && backlog >= 1_000_000 : undefined,
      },
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    for (const c of children) c.kill('SIGKILL');
    if (opts.keep) log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

function round(x) {
  return Math.round(x * 100) / 100;
}

// ---------------------------------------------------------------- aedes child mode
if (process.argv[2] === '--serve-aedes') {
  const port = Number(process.argv[3]);
  const { Aedes } = await import('aedes');
  const broker = await Aedes.createBroker();
  const server = createServer(broker.handle);
  server.listen(port, '127.0.0.1');
  process.on('SIGTERM', () => {
    server.close();
    broker.close(() => process.exit(0));
  });
} else {
  await main();
}
