// The configured pipeline on whole readings: matching, flags, rollup readings, stats, config errors.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isFerryError, type Reading } from '@ferry/protocol';
import { readingToPoint } from '@ferry/sinks';
import { createPipeline, rollupMeasurement, ROLLUP_MEASUREMENT_TAG, type ProcessingConfigInput } from '../src/index.js';

const clock = { now: () => 1_800_000_000_000 };
const T0 = 1_700_000_000_000 - (1_700_000_000_000 % 3_600_000);
const MIN = 60_000;

let seq = 0;
function reading(deviceId: string, ts: number, metrics: Reading['metrics'], extra: Partial<Reading> = {}): Reading {
  return { seq: ++seq, deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts, metrics, ...extra };
}

function configError(config: unknown): { fields: string[]; message: string } {
  try {
    createPipeline(config, clock);
  } catch (err) {
    if (isFerryError(err, 'FERRY_ERR_CONFIG_INVALID')) return { fields: err.details.fields as string[], message: err.message };
    throw err;
  }
  throw new Error('expected FERRY_ERR_CONFIG_INVALID');
}

describe('pipeline configuration', () => {
  it('names the field of a step that is not valid', () => {
    expect(configError({ pipelines: [{ match: { metric: 'power' }, steps: [{ op: 'range', min: 10, max: 1 }] }] }).fields).toEqual([
      'processing.pipelines.0.steps.0.max',
    ]);
    expect(configError({ pipelines: [{ match: { metric: 'power' }, steps: [{ op: 'deadband', abs: -1 }] }] }).fields).toEqual([
      'processing.pipelines.0.steps.0.abs',
    ]);
    expect(configError({ pipelines: [{ match: { metric: 't' }, steps: [{ op: 'unit', from: '°F', to: 'kPa' }] }] }).message).toMatch(
      /processing\.pipelines\.0\.steps\.0\.to: cannot convert temperature/,
    );
    expect(configError({ pipelines: [{ match: { metric: 't' }, steps: [{ op: 'rollup', window: 'one minute' }] }] }).fields).toEqual([
      'processing.pipelines.0.steps.0.window',
    ]);
    expect(configError({ pipelines: [{ match: { metric: 't' }, steps: [{ op: 'integrate' }] }] }).fields).toEqual([
      'processing.pipelines.0.steps.0.maxGapMs',
    ]);
  });

  it('refuses an unknown operator and a misspelt option', () => {
    expect(configError({ pipelines: [{ match: { metric: 'x' }, steps: [{ op: 'smooth' }] }] }).fields).toEqual(['processing.pipelines.0.steps.0.op']);
    expect(configError({ pipelines: [{ match: { metric: 'x' }, steps: [{ op: 'deadband', abs: 1, heartbeat: 5 }] }] }).message).toMatch(/heartbeat/);
  });

  it('accepts an empty section and passes every reading through untouched', () => {
    const pipeline = createPipeline({}, clock);
    const r = reading('d1', T0, { power: 5 });
    expect(pipeline.process(r)).toEqual([r]);
  });
});

describe('pipeline on readings', () => {
  const config: ProcessingConfigInput = {
    pipelines: [
      { match: { metric: 'temp', device: 'us-*' }, steps: [{ op: 'unit', from: '°F', to: '°C' }] },
      {
        match: { metric: 'power' },
        steps: [
          { op: 'range', min: 0, max: 10_000, flag: true },
          { op: 'deadband', abs: 5 },
        ],
      },
      { match: { metric: 'energy_*' }, steps: [{ op: 'rate', counterBits: 32, as: 'energy_rate', flag: true }] },
    ],
  };

  it('processes the matching metrics and passes the others untouched', () => {
    const pipeline = createPipeline(config, clock);
    const [out] = pipeline.process(reading('us-1', T0, { temp: 212, power: 100, label: 'on', hum: 40 }));
    expect(out!.metrics).toEqual({ temp: 100, power: 100, label: 'on', hum: 40 });
    const [eu] = pipeline.process(reading('eu-1', T0, { temp: 21 }));
    expect(eu!.metrics).toEqual({ temp: 21 });
  });

  it('flags a removed value on the reading and drops a reading left without metrics', () => {
    const pipeline = createPipeline(config, clock);
    const [out] = pipeline.process(reading('d1', T0, { power: -5, hum: 40 }));
    expect(out!.metrics).toEqual({ hum: 40 });
    expect(out!.flags).toEqual(['power:range_below_min']);
    expect(pipeline.process(reading('d1', T0 + 1000, { power: 20_000 }))).toEqual([]);
    expect(pipeline.stats()).toMatchObject({
      readings: { in: 2, out: 1, emptied: 1 },
      ops: { range: { in: 2, below_min: 1, above_max: 1 } },
    });
  });

  it('renames a rate output and flags a counter wrap', () => {
    const pipeline = createPipeline(config, clock);
    expect(pipeline.process(reading('d1', T0, { energy_total: 2 ** 32 - 100 }))).toEqual([]);
    const [out] = pipeline.process(reading('d1', T0 + 1000, { energy_total: 100 }));
    expect(out!.metrics).toEqual({ energy_rate: 200 });
    expect(out!.flags).toEqual(['energy_total:rate_wrap']);
    expect(pipeline.stats().ops.rate).toEqual({ in: 2, first: 1, wrap: 1 });
  });

  it('keeps a metric named __proto__ as a metric', () => {
    const pipeline = createPipeline(config, clock);
    const metrics = JSON.parse('{"power": 100, "__proto__": 7}') as Reading['metrics'];
    const [out] = pipeline.process(reading('d1', T0, metrics));
    expect(Object.entries(out!.metrics)).toEqual([
      ['power', 100],
      ['__proto__', 7],
    ]);
  });

  it('leaves status readings alone', () => {
    const pipeline = createPipeline(config, clock);
    const status = reading('d1', T0, { power: -1 }, { kind: 'status' });
    expect(pipeline.process(status)).toEqual([status]);
  });

  it('puts a skew-corrected metric in a reading at the corrected time', () => {
    const pipeline = createPipeline({ pipelines: [{ match: { metric: 'temp', device: 'late-clock' }, steps: [{ op: 'skew', offsetMs: 2000 }] }] }, clock);
    const out = pipeline.process(reading('late-clock', T0, { temp: 20, hum: 50 }));
    expect(out.map((r) => [r.ts, r.metrics])).toEqual([
      [T0, { hum: 50 }],
      [T0 - 2000, { temp: 20 }],
    ]);
  });
});

describe('rollups from the pipeline', () => {
  const config: ProcessingConfigInput = {
    pipelines: [
      {
        match: { metric: '*' },
        steps: [{ op: 'rollup', window: '1m', allowedLatenessMs: 30_000, aggregates: ['count', 'mean', 'max'], keepRaw: false }],
      },
    ],
  };

  it('emits one rollup reading per device and window, merging the metrics, on its own measurement', () => {
    const pipeline = createPipeline(config, clock);
    pipeline.process(reading('d1', T0 + 1000, { a: 1, b: 10 }, { tags: { site: 'north' } }));
    pipeline.process(reading('d1', T0 + 2000, { a: 3, b: 20 }, { tags: { site: 'north' } }));
    const out = pipeline.process(reading('d1', T0 + MIN, { a: 5, b: 30 }, { tags: { site: 'north' } }));
    expect(out).toEqual([
      {
        seq: 0,
        deviceId: 'd1',
        kind: 'telemetry',
        ts: T0,
        tsSource: 'gateway',
        receivedAt: clock.now(),
        metrics: { a_count: 2, a_mean: 2, a_max: 3, b_count: 2, b_mean: 15, b_max: 20 },
        tags: { site: 'north', [ROLLUP_MEASUREMENT_TAG]: 'rollup_1m' },
        flags: ['rollup'],
      },
    ]);
    expect(rollupMeasurement(out[0]!)).toBe('rollup_1m');
    expect(pipeline.stats().readings).toMatchObject({ in: 3, emptied: 3, rollups: 1 });
  });

  it('re-emits a corrected window with the same database key, so the write overwrites', () => {
    const pipeline = createPipeline(config, clock);
    pipeline.process(reading('d1', T0 + 1000, { a: 1 }));
    const [first] = pipeline.process(reading('d1', T0 + MIN + 10_000, { a: 2 }));
    const [corrected] = pipeline.process(reading('d1', T0 + 30_000, { a: 7 }));
    expect(corrected!.metrics).toEqual({ a_count: 2, a_mean: 4, a_max: 7 });
    expect(corrected!.flags).toEqual(['rollup', 'rollup_corrected']);
    const key = (r: Reading) => {
      const p = readingToPoint(r, 'gw');
      return [p.measurement, p.tags, p.timestampNs];
    };
    expect(key(corrected!)).toEqual(key(first!));
    // Past the lateness: counted, not applied.
    pipeline.process(reading('d1', T0 + 2 * MIN, { a: 0 }));
    expect(pipeline.process(reading('d1', T0 + 50_000, { a: 100 }))).toEqual([]);
    expect(pipeline.stats().ops.rollup).toMatchObject({ windows: 2, corrected: 1, dropped_late: 1 });
  });

  it('flushes open windows at the clock time, or everything at infinity', () => {
    let now = T0 + 59_000;
    const pipeline = createPipeline(config, { now: () => now });
    pipeline.process(reading('d1', T0 + 1000, { a: 1 }));
    pipeline.process(reading('d2', T0 + MIN + 1000, { a: 2 }));
    expect(pipeline.flush()).toEqual([]);
    now = T0 + MIN;
    expect(pipeline.flush().map((r) => [r.deviceId, r.ts])).toEqual([['d1', T0]]);
    expect(pipeline.flush(Infinity).map((r) => [r.deviceId, r.ts])).toEqual([['d2', T0 + MIN]]);
    expect(pipeline.flush(Infinity)).toEqual([]);
  });
});

describe('deadband at the edge', () => {
  it('sends fewer readings, and holding the last one sent stays within the band at every input time', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ dt: fc.integer({ min: 1, max: 30_000 }), step: fc.double({ min: -2, max: 2, noNaN: true }) }), { minLength: 20, maxLength: 300 }),
        fc.double({ min: 0.1, max: 3, noNaN: true }),
        (rows, abs) => {
          const pipeline = createPipeline({ pipelines: [{ match: { metric: 'power' }, steps: [{ op: 'deadband', abs, heartbeatMs: 300_000 }] }] }, clock);
          let ts = T0;
          let v = 100;
          const input = rows.map((r) => reading('meter', (ts += r.dt), { power: (v += r.step) }));
          const sent = input.flatMap((r) => pipeline.process(r));
          expect(sent.length).toBeLessThanOrEqual(input.length);
          let i = 0;
          let held: number | undefined;
          for (const r of input) {
            while (i < sent.length && sent[i]!.ts <= r.ts) held = sent[i++]!.metrics.power as number;
            expect(Math.abs((r.metrics.power as number) - held!)).toBeLessThanOrEqual(abs);
          }
          expect(pipeline.stats().ops.deadband!.suppressed ?? 0).toBe(input.length - sent.length);
        },
      ),
    );
  });

  it('a slowly moving series sends far fewer readings', () => {
    const pipeline = createPipeline({ pipelines: [{ match: { metric: 'temp' }, steps: [{ op: 'deadband', abs: 0.5, heartbeatMs: 600_000 }] }] }, clock);
    const input = Array.from({ length: 1000 }, (_, i) => reading('t1', T0 + i * 10_000, { temp: 20 + Math.sin(i / 100) * 2 }));
    const sent = input.flatMap((r) => pipeline.process(r));
    expect(sent.length).toBeLessThan(input.length / 5);
  });
});
