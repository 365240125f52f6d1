// Saved series state: a pipeline restored from what another saved mid-stream continues exactly as
// the first would have (what the gateway relies on across a restart).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Reading } from '@ferry/protocol';
import { createPipeline, type ProcessingConfigInput } from '../src/index.js';

const clock = { now: () => 1_800_000_000_000 };
const T0 = 1_700_000_000_000 - (1_700_000_000_000 % 3_600_000);

const config: ProcessingConfigInput = {
  pipelines: [
    { match: { metric: 'db' }, steps: [{ op: 'deadband', abs: 0.5, heartbeatMs: 20_000 }] },
    { match: { metric: 'roll' }, steps: [{ op: 'rollup', window: '10s', keepRaw: false, allowedLatenessMs: 5_000 }] },
    { match: { metric: 'ctr' }, steps: [{ op: 'rate', counterBits: 32 }] },
    { match: { metric: 'pw' }, steps: [{ op: 'integrate', maxGapMs: 30_000 }] },
    { match: { metric: 'sm' }, steps: [{ op: 'hampel', window: 5 }, { op: 'median', window: 3 }, { op: 'ema', alpha: 0.3 }, { op: 'sma', samples: 4 }] },
    { match: { metric: 'st' }, steps: [{ op: 'stuck', samples: 3 }, { op: 'sma', durationMs: 5_000 }] },
  ],
};

function reading(seq: number, ts: number, value: number): Reading {
  return {
    seq,
    deviceId: 'd1',
    kind: 'telemetry',
    ts,
    tsSource: 'device',
    receivedAt: ts,
    metrics: { db: value, roll: value, ctr: Math.abs(Math.round(value * 1000)), pw: value, sm: value, st: Math.round(value) },
    tags: { site: 'a' },
  };
}

describe('pipeline state', () => {
  it('continues after a restore exactly as it would have without the restart', () => {
    const sample = fc.record({ dt: fc.integer({ min: -2_000, max: 6_000 }), value: fc.double({ min: -50, max: 50, noNaN: true }) });
    fc.assert(
      fc.property(fc.array(sample, { minLength: 2, maxLength: 80 }), fc.nat(), (samples, cut) => {
        let ts = T0;
        const readings = samples.map((s, i) => reading(i + 1, (ts += s.dt), s.value));
        const split = cut % readings.length;
        const straight = createPipeline(config, clock);
        const expected = readings.map((r) => straight.process(r));

        const first = createPipeline(config, clock, { trackState: true });
        const before = readings.slice(0, split).map((r) => first.process(r));
        const saved = first.takeChangedState();
        const second = createPipeline(config, clock, { trackState: true });
        const result = second.restoreState(saved);
        expect(result.discarded).toBe(0);
        const after = readings.slice(split).map((r) => second.process(r));
        expect(JSON.parse(JSON.stringify([...before, ...after]))).toEqual(JSON.parse(JSON.stringify(expected)));
      }),
      { numRuns: 200 },
    );
  });

  it('hands out only the series changed since the last call', () => {
    const pipeline = createPipeline(config, clock, { trackState: true });
    pipeline.process(reading(1, T0, 1));
    expect(pipeline.takeChangedState().map((s) => s.metric).sort()).toEqual(['ctr', 'db', 'pw', 'roll', 'sm', 'st']);
    expect(pipeline.takeChangedState()).toEqual([]);
    pipeline.process({ ...reading(2, T0 + 1000, 2), metrics: { db: 3, other: 1 } });
    expect(pipeline.takeChangedState().map((s) => s.metric)).toEqual(['db']);
  });

  it('discards state saved by a pipeline configured differently, starting that series afresh', () => {
    const a = createPipeline({ pipelines: [{ match: { metric: 'db' }, steps: [{ op: 'deadband', abs: 0.5 }] }] }, clock, { trackState: true });
    a.process(reading(1, T0, 1));
    const saved = a.takeChangedState();
    const b = createPipeline({ pipelines: [{ match: { metric: 'db' }, steps: [{ op: 'deadband', abs: 5 }] }] }, clock, { trackState: true });
    expect(b.restoreState(saved)).toEqual({ restored: 0, discarded: 1 });
    expect(b.restoreState([{ deviceId: 'd1', metric: 'db', state: '{not json' }])).toEqual({ restored: 0, discarded: 1 });
    // Fresh: the first value after the restart is sent.
    expect(b.process({ ...reading(2, T0 + 1, 1.1), metrics: { db: 1.1 } })).toHaveLength(1);
  });

  it('forgets every series on resetState', () => {
    const pipeline = createPipeline(config, clock, { trackState: true });
    pipeline.process({ ...reading(1, T0, 1), metrics: { db: 1 } });
    expect(pipeline.process({ ...reading(2, T0 + 1, 1.1), metrics: { db: 1.1 } })).toHaveLength(0);
    pipeline.resetState();
    expect(pipeline.stats().series).toBe(0);
    expect(pipeline.process({ ...reading(3, T0 + 2, 1.1), metrics: { db: 1.1 } })).toHaveLength(1);
  });
});
