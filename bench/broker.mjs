#!/usr/bin/env node
// Broker benchmark: relay throughput (messages/s from one MQTT.js publisher through the broker to
// one MQTT.js subscriber) at QoS 0 and QoS 1, over plain TCP and TLS, for the Ferry broker (the
// built CLI as a child process, SQLite persistence) and a real Mosquitto, measured in the same run
// with the same clients and payloads. Not a test: nothing asserted.
// Progress goes to stderr; the last stdout line is one JSON object.
//
//   node bench/run.mjs broker [--messages 20000] [--payload 256] [--window 100] [--rounds 3]
//
// Fairness: the clients live in this process, so both brokers first get a warm-up relay (the
// clients' JIT and the brokers' are warm before anything counts); then each case is measured
// --rounds times, Ferry and Mosquitto alternating, and the median is reported.
//
// Needs the built workspace (`npx tsc -b`).
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { freePort, startMosquitto, waitFor } from '@ferry/testkit';

const FERRY_MAIN = fileURLToPath(new URL('../apps/ferry/dist/main.js', import.meta.url));
const CERT = fileURLToPath(new URL('../apps/broker/test/fixtures/uplink-cert.pem', import.meta.url));
const KEY = fileURLToPath(new URL('../apps/broker/test/fixtures/uplink-key.pem', import.meta.url));
const TARGET = 0.75;
const log = (msg) => process.stderr.write(`[bench broker] ${msg}\n`);

function parseArgs(argv) {
  const opts = { messages: 20_000, payload: 256, window: 100, rounds: 3 };
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i]?.replace(/^--/, '');
    if (key && key in opts) opts[key] = Number(argv[(i += 1)]);
  }
  return opts;
}

async function startFerry(dir, synchronous) {
  const [port, tlsPort] = await Promise.all([freePort(), freePort()]);
  const file = join(dir, `ferry-${synchronous}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      listen: { port },
      http: false,
      logLevel: 'warn',
      persistence: { type: 'sqlite', path: join(dir, `ferry-${synchronous}.db`), synchronous },
      tls: { port: tlsPort, cert: CERT, key: KEY },
      limits: { maxQueuedBytes: 256 * 1024 * 1024 },
    }),
  );
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const child = spawn(process.execPath, [...profile, FERRY_MAIN, 'broker', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  await waitFor(() => out.includes('"state":"ready"'), { timeoutMs: 30_000, what: 'the ferry broker' });
  return {
    plain: `mqtt://127.0.0.1:${port}`,
    tls: `mqtts://127.0.0.1:${tlsPort}`,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

async function startMosquittoWithTls() {
  const tlsPort = await freePort();
  const server = await startMosquitto({ extraConfig: `listener ${tlsPort} 127.0.0.1\ncertfile ${CERT}\nkeyfile ${KEY}\n` });
  return { plain: server.url, tls: `mqtts://127.0.0.1:${tlsPort}`, stop: () => server.stop() };
}

/** Messages/s from the first publish to the last message received (or the last before a 3 s silence at QoS 0). */
async function relay(url, qos, opts) {
  const tls = url.startsWith('mqtts:') ? { ca: readFileSync(CERT) } : {};
  const common = { protocolVersion: 4, reconnectPeriod: 0, ...tls };
  const sub = await mqtt.connectAsync(url, { ...common, clientId: `bench-sub-${process.pid}-${qos}` });
  const pub = await mqtt.connectAsync(url, { ...common, clientId: `bench-pub-${process.pid}-${qos}` });
  const topic = `bench/${qos}/${Math.random().toString(36).slice(2)}`;
  await sub.subscribeAsync(topic, { qos });
  const payload = Buffer.alloc(opts.payload, 0x61);
  let received = 0;
  let lastAt = 0;
  sub.on('message', () => {
    received += 1;
    lastAt = performance.now();
  });
  const start = performance.now();
  if (qos === 0) {
    for (let i = 0; i < opts.messages; i += 1) {
      if (!pub.publish(topic, payload, { qos: 0 })) await new Promise((r) => setImmediate(r));
      if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
    }
  } else {
    // A window of publishes in flight, like a gateway with several batches unacked.
    let sent = 0;
    const worker = async () => {
      while (sent < opts.messages) {
        sent += 1;
        await pub.publishAsync(topic, payload, { qos });
      }
    };
    await Promise.all(Array.from({ length: opts.window }, worker));
  }
  let seen = -1;
  let quietSince = performance.now();
  while (received < opts.messages) {
    await new Promise((r) => setTimeout(r, 50));
    if (received !== seen) {
      seen = received;
      quietSince = performance.now();
    } else if (performance.now() - quietSince > 3000) break;
  }
  await Promise.all([sub.endAsync(true), pub.endAsync(true)]);
  const seconds = (lastAt - start) / 1000;
  return { perSec: Math.round(received / seconds), received, lost: opts.messages - received };
}

const opts = parseArgs(process.argv.slice(2));
const dir = await mkdtemp(join(tmpdir(), 'ferry-bench-broker-'));
const result = { messages: opts.messages, payloadBytes: opts.payload, qos1Window: opts.window };
const ferry = await startFerry(dir, 'normal');
const ferryFull = await startFerry(dir, 'full');
const mosquitto = await startMosquittoWithTls();
try {
  const warmUp = { ...opts, messages: Math.min(opts.messages, 5000) };
  for (const server of [ferry, ferryFull, mosquitto]) {
    for (const transport of ['plain', 'tls']) for (const qos of [0, 1]) await relay(server[transport], qos, warmUp);
  }
  const median = (values) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)];
  for (const [transport, suffix] of [['plain', ''], ['tls', 'Tls']]) {
    for (const qos of [0, 1]) {
      const rates = { ferry: [], mosquitto: [] };
      for (let round = 0; round < opts.rounds; round += 1) {
        for (const [name, server] of [['ferry', ferry], ['mosquitto', mosquitto]]) {
          const r = await relay(server[transport], qos, opts);
          log(`${name} ${transport} QoS ${qos} round ${round + 1}: ${r.perSec} msg/s (${r.received}/${opts.messages} received)`);
          rates[name].push(r.perSec);
          if (r.lost > 0) result[`${name}Qos${qos}${suffix}Lost`] = (result[`${name}Qos${qos}${suffix}Lost`] ?? 0) + r.lost;
        }
      }
      for (const name of ['ferry', 'mosquitto']) result[`${name}Qos${qos}${suffix}PerSec`] = median(rates[name]);
    }
  }
  const full = await relay(ferryFull.plain, 1, opts);
  log(`ferry (synchronous=full) plain QoS 1: ${full.perSec} msg/s`);
  result.ferryFsyncQos1PerSec = full.perSec;
} finally {
  await Promise.all([ferry.stop(), ferryFull.stop(), mosquitto.stop()]);
  await rm(dir, { recursive: true, force: true });
}
for (const [key, suffix] of [['Qos0', ''], ['Qos1', ''], ['Qos0', 'Tls'], ['Qos1', 'Tls']]) {
  const ratio = result[`ferry${key}${suffix}PerSec`] / result[`mosquitto${key}${suffix}PerSec`];
  result[`ratio${key}${suffix}`] = Math.round(ratio * 100) / 100;
  result[`meets${key}${suffix}Target`] = ratio >= TARGET;
}
result.target = TARGET;
process.stdout.write(`${JSON.stringify(result)}\n`);
