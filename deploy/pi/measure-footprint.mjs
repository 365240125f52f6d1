#!/usr/bin/env node
// Measures the gateway's footprint the way docs/raspberry-pi.md reports it: a real gateway child
// process fed by the simulator, read from /proc/<pid>: resident memory (VmRSS), CPU time
// (utime+stime) and bytes sent to the block device (write_bytes in /proc/<pid>/io) over a
// steady window, divided by the readings the gateway committed in that window.
// A local broker and ingestor (SQLite sink) take the batches so acks flow as in production.
//
//   node deploy/pi/measure-footprint.mjs [--ferry PATH/bin/ferry.mjs] [--rate 1000] [--seconds 30]
//        [--synchronous normal|full] [--commit-linger-ms N (default: the gateway's)] [--data-dir DIR (on the SD card, not tmpfs)]
//        [--node-flags "..."  (default: the flags of ExecStart in ferry-gateway.service, next to this file)]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const FERRY = args.get('ferry') ?? join(dirname(fileURLToPath(import.meta.url)), '../../apps/ferry/bin/ferry.mjs');
const RATE = Number(args.get('rate') ?? 1000);
const SECONDS = Number(args.get('seconds') ?? 30);
const WARMUP_S = 10;
const SYNCHRONOUS = args.get('synchronous') ?? 'full';
const COMMIT_LINGER_MS = args.has('commit-linger-ms') ? Number(args.get('commit-linger-ms')) : undefined;
// The gateway runs with the node flags the systemd unit gives it.
const unitFlags = /^ExecStart=\S+\s+(.*?)\s*\S*ferry\.mjs /m.exec(readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'ferry-gateway.service'), 'utf8'))?.[1] ?? '';
const GATEWAY_NODE_FLAGS = (args.get('node-flags') ?? unitFlags).split(' ').filter(Boolean);
// ... and its Environment= settings (MALLOC_ARENA_MAX), unless other flags were asked for.
const unitEnv = Object.fromEntries(
  [...readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'ferry-gateway.service'), 'utf8').matchAll(/^Environment=(\w+)=(.*)$/gm)].map((m) => [m[1], m[2].trim()]),
);
const GATEWAY_ENV = args.has('node-flags') ? process.env : { ...process.env, ...unitEnv };
// /proc/<pid>/io write_bytes is 0 on tmpfs: measure on a real disk.
const base = args.get('data-dir') ?? mkdtempSync(join('/var/tmp', 'ferry-footprint-'));
mkdirSync(base, { recursive: true });

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const children = [];
function start(name, config, extra = []) {
  const file = join(base, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  const nodeFlags = name === 'gateway' ? GATEWAY_NODE_FLAGS : [];
  const child = spawn(process.execPath, [...nodeFlags, FERRY, name === 'simulate' ? 'simulate' : name, ...(name === 'simulate' ? [] : ['-c', file]), ...extra], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: name === 'gateway' ? GATEWAY_ENV : process.env,
  });
  children.push(child);
  return child;
}
async function healthy(port) {
  for (let i = 0; i < 300; i += 1) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return;
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error(`nothing healthy on ${port}`);
}
async function metric(port, name) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}
const TICKS = 100; // USER_HZ on Linux
function sample(pid) {
  const io = Object.fromEntries(readFileSync(`/proc/${pid}/io`, 'utf8').trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]));
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    at: process.hrtime.bigint(),
    cpu: (Number(stat[11]) + Number(stat[12])) / TICKS,
    writeBytes: io.write_bytes,
    wchar: io.wchar,
    rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)[1]),
    hwmKiB: Number(/VmHWM:\s+(\d+)/.exec(status)[1]),
  };
}

try {
  const [brokerPort, brokerHttp, ingestorHttp, devicePort, gatewayHttp] = await Promise.all([1, 2, 3, 4, 5].map(() => freePort()));
  start('broker', { listen: { host: '127.0.0.1', port: brokerPort }, http: { host: '127.0.0.1', port: brokerHttp }, logLevel: 'warn' });
  await healthy(brokerHttp);
  start('ingestor', { dataDir: join(base, 'ingestor'), broker: { url: `mqtt://127.0.0.1:${brokerPort}` }, http: { host: '127.0.0.1', port: ingestorHttp }, logLevel: 'warn' });
  await healthy(ingestorHttp);
  const gateway = start('gateway', {
    gatewayId: 'footprint',
    dataDir: join(base, 'gateway'),
    devices: { listen: { host: '127.0.0.1', port: devicePort } },
    uplink: { url: `mqtt://127.0.0.1:${brokerPort}` },
    outbox: { synchronous: SYNCHRONOUS, ...(COMMIT_LINGER_MS !== undefined ? { commitLingerMs: COMMIT_LINGER_MS } : {}) },
    http: { host: '127.0.0.1', port: gatewayHttp },
    logLevel: 'warn',
  });
  await healthy(gatewayHttp);
  const devices = Math.max(1, Math.round(RATE / 10));
  start('simulate', {}, ['--url', `mqtt://127.0.0.1:${devicePort}`, '--devices', String(devices), '--interval-ms', '100', '--dropout-probability', '0', '--log-level', 'warn']);
  await sleep(WARMUP_S * 1000);
  const c0 = await metric(gatewayHttp, 'ferry_gateway_committed_total');
  const s0 = sample(gateway.pid);
  await sleep(SECONDS * 1000);
  const c1 = await metric(gatewayHttp, 'ferry_gateway_committed_total');
  const s1 = sample(gateway.pid);
  const acked = await metric(gatewayHttp, 'ferry_gateway_acked_readings_total');
  const depth = await metric(gatewayHttp, 'ferry_gateway_outbox_depth');
  const wall = Number(s1.at - s0.at) / 1e9;
  const readings = c1 - c0;
  const perSecond = readings / wall;
  const cpuShare = (s1.cpu - s0.cpu) / wall;
  console.log(
    JSON.stringify(
      {
        synchronous: SYNCHRONOUS,
        commitLingerMs: COMMIT_LINGER_MS ?? 'default',
        targetRate: RATE,
        devices,
        windowSeconds: Number(wall.toFixed(1)),
        readingsPerSecond: Number(perSecond.toFixed(0)),
        cpuCoresAtThisRate: Number(cpuShare.toFixed(3)),
        cpuCoresPer1000ReadingsPerSecond: Number(((cpuShare * 1000) / perSecond).toFixed(3)),
        rssMiB: Number((s1.rssKiB / 1024).toFixed(1)),
        peakRssMiB: Number((s1.hwmKiB / 1024).toFixed(1)),
        diskBytesPerReading: Number(((s1.writeBytes - s0.writeBytes) / readings).toFixed(1)),
        writeSyscallBytesPerReading: Number(((s1.wchar - s0.wchar) / readings).toFixed(1)),
        ackedTotal: acked,
        outboxDepthAtEnd: depth,
      },
      null,
      2,
    ),
  );
} finally {
  for (const child of children.reverse()) child.kill('SIGTERM');
  await sleep(2000);
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  if (!args.has('data-dir')) rmSync(base, { recursive: true, force: true });
}
