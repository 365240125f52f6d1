#!/usr/bin/env node
// Ingestor benchmark: end-to-end readings/s from gateway batches published to a real Mosquitto to
// points VictoriaMetrics confirmed (the ingestor acks a batch only after that), beside a raw
// line-protocol POST of the same points to the same VictoriaMetrics, measured in the same run.
// Also: the ingestor process's CPU per 10,000 readings (/proc/<pid>/stat), Mosquitto's and
// VictoriaMetrics' CPU per 10,000 in each measurement, the time to decode and validate one
// 5,000-reading batch on this thread, the least any ingestor must spend (parse the batches and
// write their line protocol, on this thread), and the CPU the machine has left per 10,000 readings
// for the ingestor and Mosquitto at the target (half the raw rate), after
// VictoriaMetrics' own share. The split: the ingestor's garbage-collector pauses (perf_hooks, in
// the child through bench/lib/gc-observer.mjs) and each stage's CPU, and the whole pipeline's, in
// process on this thread (bench/lib/ingestor-stages.mjs). The floor: the same batches through a bare
// MQTT-to-line-protocol relay in its own process (bench/lib/bare-ingestor.mjs: parse, line
// protocol, POST, ack, nothing else), `bareIngestorCpuMsPer10k`, beside the ingestor's
// `cpuMsPer10k` and its target (issue #19: at most 120). Not a test: nothing asserted.
// Progress goes to stderr; the last stdout line is one JSON object.
//
//   node bench/run.mjs ingestor [--readings 100000] [--batch 1000] [--gateways 4] [--keep]
//
// Needs the built workspace (`npx tsc -b`): the ingestor runs as a child of
// `node apps/ferry/dist/main.js`, so its CPU is its own and the publisher has its own core.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { BATCH_VERSION, checkReadingLimits, decodeAck, decodeBatch, defaultLimits, encodeBatch, newBatchNonce, readingSchema, uplinkTopics } from '@ferry/protocol';
import { encodePoints, readingToPoint } from '@ferry/sinks';
import { startMosquitto, startVictoriaMetrics } from '@ferry/testkit';
import { measureStages } from './lib/ingestor-stages.mjs';

const FERRY_MAIN = fileURLToPath(new URL('../apps/ferry/dist/main.js', import.meta.url));
const GC_OBSERVER = new URL('./lib/gc-observer.mjs', import.meta.url).href;
/** A round whose acks stop coming fails after this, rather than waiting for ever. */
const ROUND_TIMEOUT_MS = 300_000;
const BARE_INGESTOR = fileURLToPath(new URL('./lib/bare-ingestor.mjs', import.meta.url));
const log = (msg) => process.stderr.write(`[bench ingestor] ${msg}\n`);

function parseArgs(argv) {
  const opts = { readings: 100_000, batch: 1000, gateways: 4, keep: false };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const next = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${flag} needs a positive integer`);
      return v;
    };
    if (flag === '--readings') opts.readings = next();
    else if (flag === '--batch') opts.batch = next();
    else if (flag === '--gateways') opts.gateways = next();
    else if (flag === '--keep') opts.keep = true;
    else throw new Error(`unknown flag ${flag}`);
  }
  return opts;
}

const T0 = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;

function makeReading(gateway, seq) {
  return {
    seq,
    deviceId: `dev-${gateway}-${seq % 50}`,
    kind: 'telemetry',
    ts: T0 + seq * 10,
    tsSource: 'device',
    receivedAt: T0 + seq * 10 + 3,
    metrics: { temperature: 20 + (seq % 100) / 10 },
  };
}

/** SIGTERM, and wait for the exit. */
async function stopChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** CPU ms (user + system) of a process so far, from /proc. */
function cpuMsOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name; in clock ticks (100/s on Linux).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** decode + validate of one 5,000-reading batch, median of 7 runs, ms. */
function measureDecodeValidate() {
  const items = Array.from({ length: 5000 }, (_, i) => ({ ...makeReading('m', i), metrics: { temperature: 21.5, humidity: 40 + (i % 20), ok: true }, tags: { room: 'lab' } }));
  const payload = encodeBatch({ v: BATCH_VERSION, gatewayId: 'm', batchId: 1, sentAt: T0, nonce: newBatchNonce() }, items);
  const runs = [];
  for (let r = 0; r < 7; r++) {
    const started = performance.now();
    const decoded = decodeBatch(payload, 16 * 1024 * 1024);
    if (!decoded.ok) throw new Error('decode failed');
    for (const raw of decoded.readings) {
      const parsed = readingSchema.safeParse(raw);
      if (!parsed.success || checkReadingLimits(parsed.data, defaultLimits, Date.now())) throw new Error('validation failed');
    }
    runs.push(performance.now() - started);
  }
  runs.sort((a, b) => a - b);
  return { ms: runs[3], bytes: payload.length };
}

/**
 * The least any ingestor must do per reading, on this thread: parse the batch envelope and turn
 * its readings into line protocol (no validation, dedupe, state, acks or I/O). ms per 10,000
 * readings, median of 7 runs over the same envelopes the end-to-end run publishes.
 */
function measureParseFormat(envelopes, total) {
  const mapping = { measurement: 'telemetry', statusMeasurement: 'status', deviceTag: 'device', gatewayTag: 'gateway', staticTags: {} };
  const runs = [];
  let lines = 0;
  for (let r = 0; r < 7; r++) {
    const started = performance.now();
    lines = 0;
    for (const e of envelopes) {
      const decoded = decodeBatch(e.payload, 16 * 1024 * 1024);
      if (!decoded.ok) throw new Error('decode failed');
      const points = decoded.readings.map((raw) => readingToPoint(raw, decoded.header.gatewayId, mapping));
      lines += encodePoints(points).lines.map((l) => l.line).join('\n').length > 0 ? points.length : 0;
    }
    runs.push(performance.now() - started);
  }
  if (lines !== total) throw new Error(`parse+format made ${lines} lines of ${total}`);
  runs.sort((a, b) => a - b);
  return (runs[3] / total) * 10_000;
}

/** The child's garbage-collector pause totals so far (bench/lib/gc-observer.mjs answers SIGUSR2). */
async function gcOf(child, file) {
  let before = 0;
  try {
    before = JSON.parse(readFileSync(file, 'utf8')).asked;
  } catch {
    // not written yet
  }
  child.kill('SIGUSR2');
  const by = Date.now() + 5000;
  for (;;) {
    try {
      const totals = JSON.parse(readFileSync(file, 'utf8'));
      if (totals.asked > before) return totals;
    } catch {
      // not written yet, or half written
    }
    if (Date.now() > by) throw new Error('the ingestor did not report its GC totals');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function countInVm(vm, metric) {
  await vm.flush();
  const series = await vm.exportSeries(`{__name__="${metric}"}`, { start: T0 - 60_000, end: Date.now() + 3_600_000 });
  return series.reduce((n, s) => n + s.values.length, 0);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const perGateway = Math.ceil(opts.readings / opts.gateways / opts.batch) * opts.batch;
  const total = perGateway * opts.gateways;
  const gateways = Array.from({ length: opts.gateways }, (_, i) => `bench-gw-${i}`);
  log(`${total} readings, ${opts.gateways} gateways, ${opts.batch} per batch; ${cpus().length} cores`);

  const decodeValidate = measureDecodeValidate();
  log(`decode+validate of a 5,000-reading batch (${decodeValidate.bytes} bytes): ${decodeValidate.ms.toFixed(1)} ms`);

  const dir = await mkdtemp(join(tmpdir(), 'ferry-bench-ingestor-'));
  const [vm, mosquitto] = await Promise.all([startVictoriaMetrics(), startMosquitto()]);
  let child;
  let bareChild;
  let publisher;
  try {
    const configFile = join(dir, 'ingestor.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        ingestorId: 'bench',
        dataDir: join(dir, 'data'),
        broker: { url: mosquitto.url },
        sink: { type: 'influxdb2', url: vm.url, token: 'bench', org: 'ferry', bucket: 'ferry' },
        http: false,
        logLevel: 'warn',
      }),
    );
    const gcFile = join(dir, 'gc.json');
    child = spawn(
      process.execPath,
      [...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []), ...(process.env.BENCH_INGESTOR_NODE_FLAGS ?? '').split(' ').filter(Boolean), '--import', GC_OBSERVER, FERRY_MAIN, 'ingestor', '--config', configFile, '--log-level', 'info'],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, BENCH_GC_FILE: gcFile } },
    );
    let childLog = '';
    child.stderr.on('data', (c) => (childLog += c.toString()));
    const readyBy = Date.now() + 30_000;
    while (!childLog.includes('ingestor ready')) {
      if (Date.now() > readyBy || child.exitCode !== null) throw new Error(`ingestor did not start:\n${childLog}`);
      await new Promise((r) => setTimeout(r, 50));
    }

    publisher = await mqtt.connectAsync(mosquitto.url, { protocolVersion: 4, clientId: 'bench-publisher', clean: true });
    /** The acks of one round of publishes: it ends once every reading was acked. */
    let round;
    const newRound = () => {
      let resolve;
      const done = new Promise((r) => (resolve = r));
      round = { acked: new Set(), readings: 0, resolve, done };
      return done;
    };
    publisher.on('message', (_topic, payload) => {
      const ack = decodeAck(payload);
      if (!ack || !round) return;
      const key = `${ack.gatewayId}/${ack.batchId}`;
      if (round.acked.has(key)) return;
      round.acked.add(key);
      round.readings += ack.accepted + ack.duplicates;
      if (round.readings >= total) round.resolve();
    });
    await publisher.subscribeAsync(gateways.map((g) => uplinkTopics.ack(g)), { qos: 1 });

    // Envelopes built before the clock starts: the gateway's work is not the ingestor's.
    const envelopes = [];
    for (let b = 0; b < perGateway / opts.batch; b++) {
      for (const g of gateways) {
        const items = Array.from({ length: opts.batch }, (_, i) => makeReading(g, b * opts.batch + i));
        envelopes.push({ topic: uplinkTopics.batch(g), gatewayId: g, payload: encodeBatch({ v: BATCH_VERSION, gatewayId: g, batchId: b + 1, sentAt: Date.now(), nonce: newBatchNonce() }, items) });
      }
    }
    /** Publishes every envelope and waits for every reading's ack: the seconds it took and the CPU ms each pid spent. */
    const timedRound = async (pids) => {
      const done = newRound();
      const before = pids.map(cpuMsOf);
      const started = performance.now();
      await Promise.all(envelopes.map((e) => publisher.publishAsync(e.topic, e.payload, { qos: 1 })));
      let timer;
      const stalled = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${round.readings} of ${total} readings acked after ${ROUND_TIMEOUT_MS / 1000} s`)), ROUND_TIMEOUT_MS);
      });
      await Promise.race([done, stalled]).finally(() => clearTimeout(timer));
      return { seconds: (performance.now() - started) / 1000, cpuMs: pids.map((pid, i) => cpuMsOf(pid) - before[i]) };
    };

    const gcBefore = await gcOf(child, gcFile);
    const {
      seconds: e2eSeconds,
      cpuMs: [cpuMs, vmCpuE2eMs, mosquittoCpuMs],
    } = await timedRound([child.pid, vm.pid, mosquitto.pid]);
    const gcAfter = await gcOf(child, gcFile);
    const gcMs = gcAfter.ms - gcBefore.ms;
    const confirmed = await countInVm(vm, 'telemetry_temperature');
    log(`end to end: ${total} readings in ${e2eSeconds.toFixed(2)} s; ${confirmed} points in VictoriaMetrics; ingestor CPU ${cpuMs.toFixed(0)} ms`);

    // The floor: the same batches through bench/lib/bare-ingestor.mjs (parse, line protocol, POST,
    // ack; nothing else), with the ingestor stopped so that each batch goes to one of them.
    await stopChild(child);
    bareChild = spawn(process.execPath, [BARE_INGESTOR, mosquitto.url, vm.url, 'bare', ...gateways], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve, reject) => {
      bareChild.stdout.once('data', resolve);
      bareChild.once('exit', (code) => reject(new Error(`bare ingestor exited with ${code}`)));
    });
    const {
      seconds: bareSeconds,
      cpuMs: [bareCpuMs],
    } = await timedRound([bareChild.pid]);
    const bareConfirmed = await countInVm(vm, 'bare_temperature');
    log(`bare ingestor: ${total} readings in ${bareSeconds.toFixed(2)} s; ${bareConfirmed} points in VictoriaMetrics; its CPU ${bareCpuMs.toFixed(0)} ms`);

    // The same points, raw: line protocol POSTed to the same VictoriaMetrics, 5,000 lines a request
    // and two requests in flight, as the ingestor's writer does. Another measurement, so they add.
    const points = [];
    for (let b = 0; b < perGateway / opts.batch; b++) {
      for (const g of gateways) {
        for (let i = 0; i < opts.batch; i++) points.push(readingToPoint(makeReading(g, b * opts.batch + i), g, { measurement: 'raw', statusMeasurement: 'raw_status', deviceTag: 'device', gatewayTag: 'gateway', staticTags: {} }));
      }
    }
    // Five rounds, each under its own measurement (raw, raw1, ...): one round of 100,000 points
    // takes VictoriaMetrics well under a second, too short to time on its own.
    const ROUNDS = 5;
    const roundBodies = Array.from({ length: ROUNDS }, (_, round) => {
      const measured = round === 0 ? points : points.map((p) => ({ ...p, measurement: `raw${round}` }));
      const out = [];
      for (let i = 0; i < measured.length; i += 5000) out.push(encodePoints(measured.slice(i, i + 5000)).lines.map((l) => l.line).join("\n"));
      return out;
    });
    const vmCpuRawBefore = cpuMsOf(vm.pid);
    const rawStarted = performance.now();
    for (const bodies of roundBodies) {
      let nextBody = 0;
      const post = async () => {
        while (nextBody < bodies.length) {
          const body = bodies[nextBody++];
          const res = await fetch(`${vm.url}/api/v2/write?org=ferry&bucket=ferry&precision=ns`, { method: 'POST', body, headers: { 'content-type': 'text/plain; charset=utf-8' } });
          if (res.status !== 204) throw new Error(`raw POST answered ${res.status}: ${await res.text()}`);
        }
      };
      await Promise.all([post(), post()]);
    }
    const rawSeconds = (performance.now() - rawStarted) / 1000;
    const vmCpuRawMs = cpuMsOf(vm.pid) - vmCpuRawBefore;
    const rawConfirmed = await countInVm(vm, 'raw_temperature');
    log(`raw POST: ${ROUNDS} x ${points.length} points in ${rawSeconds.toFixed(2)} s; ${rawConfirmed} in VictoriaMetrics; VictoriaMetrics CPU ${vmCpuRawMs.toFixed(0)} ms`);
    const parseFormatMsPer10k = measureParseFormat(envelopes, total);
    log(`parse + line protocol alone, one thread: ${parseFormatMsPer10k.toFixed(1)} ms per 10,000 readings`);
    const stages = await measureStages(envelopes, total);
    log(`stages in process, CPU ms per 10,000: ${JSON.stringify(stages.stages)}; whole pipeline in process ${stages.pipelineInProcess}`);

    const endToEndPerSec = Math.round(total / e2eSeconds);
    const rawPostPerSec = Math.round((ROUNDS * points.length) / rawSeconds);
    const ratio = Number((endToEndPerSec / rawPostPerSec).toFixed(3));
    // At the target (half the raw rate), VictoriaMetrics itself needs rate x its CPU per point; what
    // is left of the machine's cores, per reading, is all the ingestor and Mosquitto may spend.
    const vmCpuMsPer10kRaw = (vmCpuRawMs / (ROUNDS * points.length)) * 10_000;
    const targetRate = rawPostPerSec / 2;
    const budgetMsPer10k = ((cpus().length * 1000 - (targetRate / 10_000) * vmCpuMsPer10kRaw) / targetRate) * 10_000;
    const result = {
      benchmark: 'ingestor',
      readings: total,
      batchSize: opts.batch,
      gateways: opts.gateways,
      endToEndPerSec,
      rawPostPerSec,
      ratio,
      target: ratio >= 0.5,
      cpuMsPer10k: Number(((cpuMs / total) * 10_000).toFixed(1)),
      bareIngestorCpuMsPer10k: Number(((bareCpuMs / total) * 10_000).toFixed(1)),
      bareIngestorPerSec: Math.round(total / bareSeconds),
      bareConfirmedInVm: bareConfirmed,
      gcPauseMsPer10k: Number(((gcMs / total) * 10_000).toFixed(1)),
      gcPausesByKindMsPer10k: Object.fromEntries(Object.entries(gcAfter.byKind).map(([k, v]) => [k, Number((((v - (gcBefore.byKind[k] ?? 0)) / total) * 10_000).toFixed(1))])),
      stagesCpuMsPer10k: stages.stages,
      pipelineInProcessCpuMsPer10k: stages.pipelineInProcess,
      mosquittoCpuMsPer10k: Number(((mosquittoCpuMs / total) * 10_000).toFixed(1)),
      vmCpuMsPer10kEndToEnd: Number(((vmCpuE2eMs / total) * 10_000).toFixed(1)),
      vmCpuMsPer10kRaw: Number(vmCpuMsPer10kRaw.toFixed(1)),
      parseFormatMsPer10k: Number(parseFormatMsPer10k.toFixed(1)),
      cpuBudgetMsPer10kAtTarget: Number(budgetMsPer10k.toFixed(1)),
      confirmedInVm: confirmed,
      rawConfirmedInVm: rawConfirmed,
      rawRounds: ROUNDS,
      decodeValidateMsPer5k: Number(decodeValidate.ms.toFixed(2)),
      targets: { cpuMsPer10kAtMost120: (cpuMs / total) * 10_000 <= 120 },
      cores: cpus().length,
      loadAverage: loadavg().map((l) => Number(l.toFixed(2))),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await publisher?.endAsync().catch(() => undefined);
    await stopChild(child);
    await stopChild(bareChild);
    await Promise.all([vm.stop(), mosquitto.stop()]);
    if (!opts.keep) await rm(dir, { recursive: true, force: true });
    else log(`kept ${dir}`);
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
