#!/usr/bin/env node
// Processing benchmark: readings per second through each time-series operator on its own, and
// through a typical pipeline (range -> hampel -> 1m rollup -> deadband) on whole readings, on one
// core; then the extra gateway CPU a typical edge pipeline costs (CPU ms per 10k readings through
// the gateway's group commit into its SQLite outbox, with and without the pipeline before the
// outbox, state saved in the same transaction). Progress goes to stderr; the last stdout line is
// one JSON object. Not a test.
//
//   node bench/run.mjs processing [--samples 1000000] [--devices 100]
//
// Needs the built workspace (`npx tsc -b`): it loads packages/processing/dist and apps/gateway/dist.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const DIST = fileURLToPath(new URL('../packages/processing/dist/index.js', import.meta.url));
if (!existsSync(DIST)) {
  process.stderr.write('packages/processing is not built: run `npx tsc -b` first\n');
  process.exit(2);
}
const { createOperator, createWindows, createPipeline, stepSchema, ReasonCounts } = await import(DIST);

function parseArgs(argv) {
  const opts = { samples: 1_000_000, devices: 100, gatewayReadings: 100_000 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i]?.replace(/^--/, '');
    const value = Number(argv[i + 1]);
    if (!(key in opts) || !Number.isFinite(value) || value <= 0) {
      process.stderr.write(`usage: node bench/processing.mjs [--samples N] [--devices N] [--gatewayReadings N]\n`);
      process.exit(2);
    }
    opts[key] = value;
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const T0 = 1_700_000_000_000;

/** A mains-power-like signal: slow swing, noise, a spike now and then, sampled every second. */
function signal(n, seed = 1) {
  let a = seed;
  const rand = () => {
    a = (a * 1664525 + 1013904223) >>> 0;
    return a / 2 ** 32;
  };
  const samples = new Array(n);
  let counter = 0;
  for (let i = 0; i < n; i++) {
    let value = 1500 + 400 * Math.sin(i / 600) + (rand() - 0.5) * 4;
    if (rand() < 0.001) value += 5000;
    counter += value / 3600;
    samples[i] = { ts: T0 + i * 1000, value, source: 'device', counter };
  }
  return samples;
}

function time(fn) {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

const operators = {
  range: { op: 'range', min: 0, max: 10_000 },
  hampel: { op: 'hampel', window: 7, threshold: 3 },
  median: { op: 'median', window: 5 },
  stuck: { op: 'stuck', samples: 10 },
  unit: { op: 'unit', from: 'W', to: 'kW' },
  skew: { op: 'skew', offsetMs: 1500 },
  rollup_1m: { op: 'rollup', window: '1m' },
  rate: { op: 'rate', counterBits: 32 },
  integrate: { op: 'integrate', maxGapMs: 60_000 },
  deadband: { op: 'deadband', abs: 5, heartbeatMs: 60_000 },
  ema: { op: 'ema', timeConstantMs: 30_000 },
  sma: { op: 'sma', samples: 10 },
};

const samples = signal(opts.samples);
const counterSamples = samples.map((s) => ({ ts: s.ts, value: s.counter, source: s.source }));
const results = { operators: {} };

for (const [name, config] of Object.entries(operators)) {
  const step = stepSchema.parse(config);
  const input = step.op === 'rate' ? counterSamples : samples;
  const make = () => (step.op === 'rollup' ? createWindows(step, new ReasonCounts()) : createOperator(step, new ReasonCounts()));
  // Warm-up on a fresh operator so the timed run starts from empty state with optimised code.
  const warm = make();
  for (let i = 0; i < Math.min(200_000, input.length); i++) warm.push(input[i]);
  const op = make();
  let sink = 0;
  const seconds = time(() => {
    for (let i = 0; i < input.length; i++) {
      const out = op.push(input[i]);
      sink += out.length ?? 1;
    }
  });
  if (sink < 0) process.stderr.write('');
  results.operators[name] = Math.round(input.length / seconds);
  process.stderr.write(`${name.padEnd(10)} ${results.operators[name].toLocaleString('en')} samples/s\n`);
}

// Whole readings through the configured pipeline, spread over several devices as at a gateway.
const typical = {
  pipelines: [
    {
      match: { metric: 'power' },
      steps: [
        { op: 'range', min: 0, max: 10_000 },
        { op: 'hampel', window: 7, threshold: 3, minDeviation: 1 },
        { op: 'rollup', window: '1m', aggregates: ['count', 'mean', 'min', 'max', 'p50', 'p90', 'p99'] },
        { op: 'deadband', abs: 5, heartbeatMs: 60_000 },
      ],
    },
  ],
};
const perDevice = Math.ceil(opts.samples / opts.devices);
const readings = new Array(perDevice * opts.devices);
for (let i = 0; i < perDevice; i++) {
  for (let d = 0; d < opts.devices; d++) {
    const s = samples[(i + d * 97) % samples.length];
    const seq = i * opts.devices + d + 1;
    readings[seq - 1] = { seq, deviceId: `meter-${d}`, kind: 'telemetry', ts: T0 + i * 1000, tsSource: 'device', receivedAt: T0 + i * 1000, metrics: { power: s.value } };
  }
}

function runPipeline(config) {
  const warm = createPipeline(config, { now: () => T0 });
  for (let i = 0; i < Math.min(200_000, readings.length); i++) warm.process(readings[i]);
  const pipeline = createPipeline(config, { now: () => T0 });
  let out = 0;
  const cpuStart = process.cpuUsage();
  const seconds = time(() => {
    for (let i = 0; i < readings.length; i++) out += pipeline.process(readings[i]).length;
    out += pipeline.flush(Infinity).length;
  });
  const cpu = process.cpuUsage(cpuStart);
  return { perSec: Math.round(readings.length / seconds), out, cpuUsPerReading: (cpu.user + cpu.system) / readings.length, stats: pipeline.stats() };
}

const baseline = runPipeline({ pipelines: [] });
const pipe = runPipeline(typical);
results.pipeline = pipe.perSec;
results.passThrough = baseline.perSec;
results.pipelineCpuUsPerReading = Number(pipe.cpuUsPerReading.toFixed(3));
// The extra CPU share a gateway spends on the pipeline at 1000 readings/s, over passing readings through.
results.gatewayCpuPercentAt1000PerSec = Number((((pipe.cpuUsPerReading - baseline.cpuUsPerReading) * 1000) / 1e6 * 100).toFixed(3));
results.pipelineReadingsIn = readings.length;
results.pipelineReadingsOut = pipe.stats.readings.out;
results.pipelineRollupsOut = pipe.stats.readings.rollups;

// The gateway: device readings committed in groups of 100 (as the group committer does under
// load) into a real outbox file, without processing and with a typical edge pipeline before the
// outbox (range -> hampel -> deadband with heartbeat), whose state is saved in each transaction.
const GATEWAY_DIST = fileURLToPath(new URL('../apps/gateway/dist/', import.meta.url));
if (existsSync(join(GATEWAY_DIST, 'process.js'))) {
  const { createSqliteOutbox } = await import(join(GATEWAY_DIST, 'outbox.js'));
  const { createGroupCommitter } = await import(join(GATEWAY_DIST, 'commit.js'));
  const { createEdgeProcessing } = await import(join(GATEWAY_DIST, 'process.js'));
  const edgeConfig = {
    before: 'outbox',
    pipelines: [
      {
        match: { metric: 'power' },
        steps: [
          { op: 'range', min: 0, max: 10_000, action: 'drop', flag: false },
          { op: 'hampel', window: 7, threshold: 3, minDeviation: 1, action: 'replace', flag: false },
          { op: 'deadband', abs: 5, heartbeatMs: 60_000, flag: false },
        ],
      },
    ],
  };
  const n = Math.min(opts.gatewayReadings, readings.length);
  const deviceReadings = readings.slice(0, n).map(({ seq: _seq, ...r }) => r);
  const runGateway = (withPipeline) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-edge-'));
    const outbox = createSqliteOutbox({ path: join(dir, 'outbox.db'), maxRows: 10_000_000 });
    const edge = withPipeline ? createEdgeProcessing(edgeConfig, { now: () => T0 }) : undefined;
    const committer = createGroupCommitter({
      outbox,
      lingerMs: 1_000_000,
      maxReadings: 100,
      onCommitted: () => undefined,
      onError: (err) => {
        throw err;
      },
      ...(edge ? { processing: { process: (r) => edge.process(r), takeState: () => edge.takeState(), rollback: () => undefined } } : {}),
    });
    const cpuStart = process.cpuUsage();
    const started = process.hrtime.bigint();
    for (const r of deviceReadings) committer.add([r], () => undefined);
    committer.flush();
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
    const cpu = process.cpuUsage(cpuStart);
    const stored = outbox.stats().depth;
    committer.close();
    outbox.close();
    rmSync(dir, { recursive: true, force: true });
    return { cpuMsPer10k: ((cpu.user + cpu.system) / 1000) * (10_000 / n), wallMs, stored, stats: edge?.stats() };
  };
  runGateway(true); // warm-up
  const without = runGateway(false);
  const withEdge = runGateway(true);
  results.gatewayCpuMsPer10kWithout = Number(without.cpuMsPer10k.toFixed(1));
  results.gatewayCpuMsPer10kWithPipeline = Number(withEdge.cpuMsPer10k.toFixed(1));
  results.gatewayExtraCpuMsPer10k = Number((withEdge.cpuMsPer10k - without.cpuMsPer10k).toFixed(1));
  results.gatewayReadingsIn = n;
  results.gatewayReadingsStored = withEdge.stored;
  results.gatewayBytesIn = withEdge.stats.bytesIn;
  results.gatewayBytesOut = withEdge.stats.bytesOut;
  process.stderr.write(
    `gateway    ${results.gatewayCpuMsPer10kWithout} CPU ms per 10k readings without processing, ${results.gatewayCpuMsPer10kWithPipeline} with a typical edge pipeline ` +
      `(${n} in, ${withEdge.stored} stored, ${withEdge.stats.bytesIn} -> ${withEdge.stats.bytesOut} bytes)\n`,
  );
} else {
  process.stderr.write('apps/gateway is not built: gateway CPU figures skipped (run `npx tsc -b`)\n');
}
results.samples = opts.samples;
results.devices = opts.devices;
results.node = process.version;
process.stderr.write(
  `pipeline   ${pipe.perSec.toLocaleString('en')} readings/s (${pipe.cpuUsPerReading.toFixed(2)} µs CPU each), pass-through ${baseline.perSec.toLocaleString('en')}/s; ` +
    `${readings.length} readings in, ${pipe.stats.readings.out} out after deadband, ${pipe.stats.readings.rollups} rollups\n`,
);
process.stdout.write(`${JSON.stringify(results)}\n`);
