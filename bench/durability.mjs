#!/usr/bin/env node
// What a power-cut-proof PUBACK costs, and what `normal` risks: the real gateway process at
// `synchronous: full` (the default) and `normal`, at 10, 100 and 1,000 readings/s, with the Pi's
// commit linger (50 ms) and the gateway's own (5 ms) at 1,000/s.
//   cost:   bytes written to the block device per reading (/proc/<pid>/io), fsyncs per second
//           (perf's syscall tracepoints), CPU, and device PUBACK latency p50/p99;
//   risk:   readings acknowledged and then lost to a power cut (kill -9, then a disk that drops
//           what was not fsynced: @ferry/testkit's powercut-fs), as seconds of readings;
//   ceiling: the raw fdatasync latency of the same disk, measured in the same run.
// Progress goes to stderr; the last stdout line is one JSON object. Not a test: nothing asserted.
//
//   node bench/run.mjs durability [--seconds 20] [--rates 10,100,1000] [--loss-seconds 20] [--skip-loss]
//
// Needs the built workspace (`npx tsc -b`), perf (linux-perf) for the fsync counts, and for the
// loss part root, fuse3 and python3-fusepy. Measure on the real disk, not tmpfs (/var/tmp here).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, fdatasyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { startPowercutDisk } from '@ferry/testkit';

const FERRY_MAIN = fileURLToPath(new URL('../apps/ferry/dist/main.js', import.meta.url));

function parseArgs(argv) {
  const opts = { seconds: 20, rates: [10, 100, 1000], lossSeconds: 20, skipLoss: false };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '--seconds') opts.seconds = Number(argv[++i]);
    else if (flag === '--loss-seconds') opts.lossSeconds = Number(argv[++i]);
    else if (flag === '--rates') opts.rates = argv[++i].split(',').map(Number);
    else if (flag === '--skip-loss') opts.skipLoss = true;
    else throw new Error(`unknown flag ${flag}`);
  }
  return opts;
}

const log = (line) => process.stderr.write(`[bench durability] ${line}\n`);
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round = (x, digits = 1) => Number(x.toFixed(digits));

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

const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

async function startFerry(kind, config, dir, httpPort, { requireOk = true } = {}) {
  const file = join(dir, `${kind}.json`);
  writeFileSync(file, JSON.stringify(config));
  const fd = openSync(join(dir, `${kind}.log`), 'a');
  const child = spawn(process.execPath, [FERRY_MAIN, kind, '-c', file], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  children.add(child);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  exited.then(() => children.delete(child));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${kind} exited: ${readFileSync(join(dir, `${kind}.log`), 'utf8').slice(-2000)}`);
    try {
      const res = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
      await res.arrayBuffer();
      if (!requireOk || res.ok) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${kind} not healthy`);
    await pause(50);
  }
  return {
    pid: child.pid,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    },
  };
}

function sample(pid) {
  const io = Object.fromEntries(readFileSync(`/proc/${pid}/io`, 'utf8').trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]));
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { at: process.hrtime.bigint(), cpuS: (Number(stat[11]) + Number(stat[12])) / 100, writeBytes: io.write_bytes };
}

/** fsync + fdatasync calls of `pid` over `seconds`, from perf's syscall tracepoints; null without perf. */
function countFsyncs(pid, seconds) {
  return new Promise((resolve) => {
    const perf = spawn('perf', ['stat', '-x', ',', '-e', 'syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync', '-p', String(pid), '--', 'sleep', String(seconds)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    perf.stderr.on('data', (c) => (err += c));
    perf.on('error', () => resolve(null));
    perf.on('exit', () => {
      let total = 0;
      let seen = false;
      for (const line of err.split('\n')) {
        const [value, , event] = line.split(',');
        if (event?.startsWith('syscalls:') && /^\d+$/.test(value)) {
          total += Number(value);
          seen = true;
        }
      }
      resolve(seen ? total : null);
    });
  });
}

/** Devices publishing QoS 1 at `rate` in all, each PUBACK timed; returns the load's handle. */
async function startLoad(url, rate) {
  const devices = Math.max(1, Math.round(rate / 10));
  const intervalMs = (1000 * devices) / rate;
  const latencies = [];
  let recording = false;
  let acked = 0;
  const clients = await Promise.all(Array.from({ length: devices }, (_, d) => mqtt.connectAsync(url, { protocolVersion: 4, clientId: `dur-${d}`, reconnectPeriod: 0 })));
  const timers = clients.map((client, d) => {
    let n = 0;
    return setInterval(() => {
      const started = process.hrtime.bigint();
      const seq = n++;
      client.publish(`devices/dur-${d}/telemetry`, JSON.stringify({ ts: Date.now(), seq, metrics: { v: seq } }), { qos: 1 }, (err) => {
        if (err) return;
        acked += 1;
        if (recording) latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
      });
    }, intervalMs);
  });
  return {
    get acked() {
      return acked;
    },
    record(on) {
      recording = on;
    },
    latencies,
    async stop() {
      for (const t of timers) clearInterval(t);
      await Promise.all(clients.map((c) => c.endAsync(true)));
    },
  };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function stack(base, gatewayDataDir, outbox, { uplink = true } = {}) {
  const [brokerPort, brokerHttp, ingestorHttp, devicePort, gatewayHttp] = await Promise.all([1, 2, 3, 4, 5].map(() => freePort()));
  mkdirSync(base, { recursive: true });
  const procs = {};
  if (uplink) {
    procs.broker = await startFerry('broker', { listen: { host: '127.0.0.1', port: brokerPort }, http: { host: '127.0.0.1', port: brokerHttp }, logLevel: 'warn' }, base, brokerHttp);
    procs.ingestor = await startFerry(
      'ingestor',
      { dataDir: join(base, 'ingestor'), broker: { url: `mqtt://127.0.0.1:${brokerPort}` }, http: { host: '127.0.0.1', port: ingestorHttp }, logLevel: 'warn' },
      base,
      ingestorHttp,
    );
  }
  const gatewayConfig = {
    gatewayId: 'durability',
    dataDir: gatewayDataDir,
    devices: { listen: { host: '127.0.0.1', port: devicePort } },
    uplink: { url: `mqtt://127.0.0.1:${brokerPort}` },
    outbox,
    http: { host: '127.0.0.1', port: gatewayHttp },
    logLevel: 'warn',
  };
  procs.gateway = await startFerry('gateway', gatewayConfig, base, gatewayHttp);
  return {
    procs,
    deviceUrl: `mqtt://127.0.0.1:${devicePort}`,
    async stop() {
      for (const p of [procs.gateway, procs.ingestor, procs.broker]) await p?.stop();
    },
  };
}

async function costRun(root, { synchronous, rate, commitLingerMs, seconds }) {
  const base = mkdtempSync(join(root, 'cost-'));
  const s = await stack(base, join(base, 'gateway'), { synchronous, commitLingerMs });
  try {
    const load = await startLoad(s.deviceUrl, rate);
    await pause(3000);
    load.record(true);
    const s0 = sample(s.procs.gateway.pid);
    const acked0 = load.acked;
    const fsyncs = await countFsyncs(s.procs.gateway.pid, seconds);
    const s1 = sample(s.procs.gateway.pid);
    const readings = load.acked - acked0;
    load.record(false);
    await load.stop();
    const wall = Number(s1.at - s0.at) / 1e9;
    const sorted = [...load.latencies].sort((a, b) => a - b);
    return {
      synchronous,
      commitLingerMs,
      targetRate: rate,
      readingsPerSecond: round(readings / wall, 0),
      diskBytesPerReading: round((s1.writeBytes - s0.writeBytes) / Math.max(1, readings), 0),
      fsyncsPerSecond: fsyncs === null ? null : round(fsyncs / wall, 1),
      cpuCores: round((s1.cpuS - s0.cpuS) / wall, 3),
      pubackP50Ms: round(percentile(sorted, 50) ?? NaN, 2),
      pubackP99Ms: round(percentile(sorted, 99) ?? NaN, 2),
    };
  } finally {
    await s.stop();
    rmSync(base, { recursive: true, force: true });
  }
}

/** Readings acknowledged at `rate` for `seconds` with the uplink down, then kill -9 and a power cut: how many the disk kept. */
async function lossRun(root, { synchronous, rate, commitLingerMs, seconds }) {
  const disk = await startPowercutDisk();
  const base = mkdtempSync(join(root, 'loss-'));
  try {
    const dataDir = join(disk.path, 'gateway');
    const s = await stack(base, dataDir, { synchronous, commitLingerMs }, { uplink: false });
    const load = await startLoad(s.deviceUrl, rate);
    await pause(seconds * 1000);
    await s.procs.gateway.kill();
    const acked = load.acked;
    await load.stop();
    await disk.powerCut();
    let kept = 0;
    try {
      const db = new Database(join(dataDir, 'outbox.db'));
      kept = db.prepare('SELECT count(*) AS n FROM outbox').get().n;
      db.close();
    } catch (err) {
      log(`outbox unreadable after the cut (${err.message}): everything counts as lost`);
    }
    const lost = Math.max(0, acked - kept);
    return { synchronous, commitLingerMs, targetRate: rate, acked, kept, lost, lostSeconds: round(lost / rate, 1) };
  } finally {
    await disk.close();
    rmSync(base, { recursive: true, force: true });
  }
}

/** The disk's own fdatasync latency: the floor under a `full` PUBACK. */
function rawFsync(root) {
  const file = join(root, 'raw-fsync');
  const fd = openSync(file, 'w');
  const times = [];
  try {
    for (let i = 0; i < 200; i += 1) {
      writeSync(fd, Buffer.alloc(4096, i));
      const t = process.hrtime.bigint();
      fdatasyncSync(fd);
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
  times.sort((a, b) => a - b);
  return { p50Ms: round(percentile(times, 50), 3), p99Ms: round(percentile(times, 99), 3) };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  // /proc/<pid>/io counts nothing on tmpfs: the real disk.
  const root = mkdtempSync('/var/tmp/ferry-durability-');
  try {
    const ceiling = rawFsync(root);
    log(`raw fdatasync on this disk: p50 ${ceiling.p50Ms} ms, p99 ${ceiling.p99Ms} ms`);
    const cost = [];
    const cases = [];
    for (const rate of opts.rates) for (const synchronous of ['full', 'normal']) cases.push({ synchronous, rate, commitLingerMs: 50 });
    if (opts.rates.includes(1000)) for (const synchronous of ['full', 'normal']) cases.push({ synchronous, rate: 1000, commitLingerMs: 5 });
    for (const c of cases) {
      const row = await costRun(root, { ...c, seconds: opts.seconds });
      log(JSON.stringify(row));
      cost.push(row);
    }
    const loss = [];
    if (!opts.skipLoss) {
      for (const rate of opts.rates) {
        for (const synchronous of ['full', 'normal']) {
          const row = await lossRun(root, { synchronous, rate, commitLingerMs: 50, seconds: opts.lossSeconds });
          log(JSON.stringify(row));
          loss.push(row);
        }
      }
    }
    console.log(JSON.stringify({ bench: 'durability', date: new Date().toISOString(), ceiling: { rawFdatasync: ceiling }, cost, loss }));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err) => {
  log(err.stack ?? String(err));
  process.exit(1);
});
