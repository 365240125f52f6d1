// The ingestor's stages one by one, on the bench's thread, over the same batch envelopes the
// end-to-end run publishes (bench/ingestor.mjs): CPU ms per 10,000 readings of each stage with
// the ingestor's own code (apps/ingestor/dist), and of the whole pipeline in process (real SQLite
// dedupe stores in a temp dir, a sink that encodes the line protocol and answers at once, acks
// encoded): everything but the MQTT client, the HTTP POST and the health model. CPU time
// (process.cpuUsage), so a busy machine slows it less than wall time, and fsync waits do not count.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultLimits, encodeAck } from '@ferry/protocol';
import { encodePoints } from '@ferry/sinks';
import { systemClock } from '../../apps/ingestor/node_modules/@ferry/runtime/dist/index.js';
import { decodeBatchMessage } from '../../apps/ingestor/dist/decode.js';
import { validateReading } from '../../apps/ingestor/dist/validate.js';
import { applySkewPolicy, limitsWithoutSkew } from '../../apps/ingestor/dist/skew.js';
import { contentHash } from '../../apps/ingestor/dist/content-hash.js';
import { judge, openDedupeStore } from '../../apps/ingestor/dist/dedupe.js';
import { deviceIdentity, judgeDevice, openDeviceDedupeStore } from '../../apps/ingestor/dist/device-dedupe.js';
import { mapReading } from '../../apps/ingestor/dist/map.js';
import { BatchTracker } from '../../apps/ingestor/dist/ack.js';
import { Accounting } from '../../apps/ingestor/dist/accounting.js';
import { createPipeline } from '../../apps/ingestor/dist/pipeline.js';

const MAX_BATCH_BYTES = 16 * 1024 * 1024;
const MAPPING = { measurement: 'telemetry', statusMeasurement: 'device_status', deviceTag: 'device', gatewayTag: 'gateway', staticTags: {} };
const CHUNK = 5000;

function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const silent = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {}, child() { return silent; } };

async function stores(dir, round) {
  return {
    dedupe: openDedupeStore({ path: join(dir, `dedupe-${round}.db`), windowPerGateway: 1_000_000 }),
    device: openDeviceDedupeStore({ path: join(dir, `device-${round}.db`), windowMs: 3_600_000, maxEntries: 1_000_000 }),
  };
}

/** One pass, stage by stage over all envelopes (each stage timed over the whole set). */
async function stagePass(envelopes, dir, round) {
  const t = {};
  const time = (name, fn) => {
    const started = cpuMs();
    const out = fn();
    t[name] = (t[name] ?? 0) + cpuMs() - started;
    return out;
  };
  const limits = limitsWithoutSkew(defaultLimits);
  const now = Date.now();
  const decoded = time('decode', () => envelopes.map((e) => decodeBatchMessage(e.gatewayId, e.payload, MAX_BATCH_BYTES)));
  const validated = time('validate', () =>
    decoded.map((d) => {
      const ctx = { topicGatewayId: d.gatewayId, envelopeGatewayId: d.header.gatewayId, limits, now };
      return d.readings.map((raw) => {
        const v = validateReading(raw, ctx);
        if (!v.ok) throw new Error(`bench reading refused: ${v.rejection.reason}`);
        const skew = applySkewPolicy(v.reading, defaultLimits, 'deadletter', now);
        if (!skew.ok) throw new Error(`bench reading refused: ${skew.rejection.reason}`);
        return skew.reading;
      });
    }),
  );
  const { dedupe, device } = await stores(dir, round);
  try {
    const judged = time('dedupe', () =>
      decoded.map((d, b) =>
        d.readings.map((raw, i) => {
          const reading = validated[b][i];
          const hash = contentHash(raw);
          if (judge(dedupe.lookup(d.gatewayId, reading.seq), hash, raw).kind !== 'new') throw new Error('not new');
          const identity = deviceIdentity(reading, 'gateway', d.gatewayId);
          if (identity && judgeDevice(device.lookup(identity), identity).kind !== 'new') throw new Error('device: not new');
          return { hash, identity };
        }),
      ),
    );
    const points = time('map', () => decoded.map((d, b) => validated[b].map((reading) => mapReading(reading, d.gatewayId, MAPPING))));
    // The writer's chunks: encode them as the HTTP sinks do (no request sent).
    const flat = points.flat();
    time('write', () => {
      for (let i = 0; i < flat.length; i += CHUNK) {
        const batch = encodePoints(flat.slice(i, i + CHUNK));
        if (batch.rejected.length > 0) throw new Error('bench point refused');
        batch.lines.map((l) => l.line).join('\n');
      }
    });
    // What the confirmation records, per chunk of the writer, as the pipeline does.
    const chunks = [];
    decoded.forEach((d, b) =>
      judged[b].forEach((j, i) => {
        if (chunks.length === 0 || chunks.at(-1).entries.length >= CHUNK) chunks.push({ entries: [], identities: [] });
        const chunk = chunks.at(-1);
        chunk.entries.push({ gatewayId: d.gatewayId, seq: validated[b][i].seq, hash: j.hash, outcome: 'written' });
        if (j.identity) chunk.identities.push(j.identity);
      }),
    );
    time('record', () => {
      for (const chunk of chunks) {
        dedupe.record(chunk.entries);
        device.record(chunk.identities, now);
      }
    });
    time('ack', () => {
      const accounting = new Accounting();
      decoded.forEach((d, b) => {
        const tracker = new BatchTracker(d.gatewayId, d.header.batchId, d.readings.length, d.header.nonce);
        accounting.received(d.gatewayId, d.readings.length);
        for (const r of validated[b]) {
          tracker.settle(r.seq, { kind: 'written' });
          accounting.settle(d.gatewayId, 'written');
        }
        encodeAck(tracker.toAck(now));
      });
    });
  } finally {
    dedupe.close();
    device.close();
  }
  return t;
}

/** The whole pipeline in process: createPipeline with real stores, a sink that encodes and answers at once. */
async function pipelinePass(envelopes, dir, round) {
  const { dedupe, device } = await stores(dir, `p${round}`);
  let acked = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  const total = envelopes.length;
  const sink = {
    description: 'bench',
    async write(points) {
      const batch = encodePoints(points);
      batch.lines.map((l) => l.line).join('\n');
      return { written: batch.lines.length, rejected: batch.rejected };
    },
    ping: async () => true,
    close: async () => undefined,
  };
  const pipeline = createPipeline({
    limits: defaultLimits,
    mapping: MAPPING,
    maxBatchBytes: MAX_BATCH_BYTES,
    queue: { maxBatches: 100_000, maxReadings: 100_000_000 },
    write: { maxPoints: CHUNK, lingerMs: 50, maxInFlight: 2, retry: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0 } },
    sink,
    dedupe,
    deviceDedupe: device,
    deadLetters: {
      add() {
        throw new Error('bench: a dead letter');
      },
      addMany() {
        throw new Error('bench: a dead letter');
      },
    },
    accounting: new Accounting(),
    clock: systemClock,
    logger: silent,
    sendAck(ack) {
      encodeAck(ack);
      if (++acked === total) done();
    },
  });
  const started = cpuMs();
  for (const e of envelopes) {
    if (pipeline.accept(e.topic, e.payload) !== 'accepted') throw new Error('bench batch not accepted');
  }
  await finished;
  const ms = cpuMs() - started;
  await pipeline.stop(1000);
  dedupe.close();
  device.close();
  return ms;
}

/**
 * Median over `rounds` of each stage's CPU ms per 10,000 readings, and of the whole pipeline in process.
 * `envelopes`: { topic, gatewayId, payload }.
 */
export async function measureStages(envelopes, total, rounds = 5) {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-bench-stages-'));
  try {
    const passes = [];
    const whole = [];
    for (let r = 0; r < rounds; r++) {
      passes.push(await stagePass(envelopes, dir, r));
      whole.push(await pipelinePass(envelopes, dir, r));
    }
    const per10k = (ms) => Number(((ms / total) * 10_000).toFixed(1));
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const stages = {};
    for (const name of Object.keys(passes[0])) stages[name] = per10k(median(passes.map((p) => p[name])));
    stages.sum = Number(Object.values(stages).reduce((a, b) => a + b, 0).toFixed(1));
    return { stages, pipelineInProcess: per10k(median(whole)) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
