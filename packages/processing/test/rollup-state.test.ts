// TumblingWindows.saveState()/loadState() as the ingestor uses them: a series whose windows are
// saved through JSON and loaded into a fresh instance at any point emits exactly what an
// uninterrupted one does.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AGGREGATES, ReasonCounts, TumblingWindows } from '../src/index.js';
import type { RollupOptions, WindowAggregate } from '../src/index.js';

const samples = fc.array(
  fc.record({ dt: fc.integer({ min: -20_000, max: 15_000 }), value: fc.integer({ min: -1000, max: 1000 }).map((v) => v / 8) }),
  { maxLength: 120 },
);

describe('TumblingWindows saved and loaded through JSON', () => {
  it('a series loaded from its state saved as JSON at any sample emits what an uninterrupted series emits', () => {
    fc.assert(
      fc.property(samples, fc.nat(), fc.integer({ min: 0, max: 30_000 }), fc.boolean(), (steps, cutAt, allowedLatenessMs, percentiles) => {
        const opts: RollupOptions = {
          windowMs: 10_000,
          allowedLatenessMs,
          aggregates: percentiles ? [...AGGREGATES] : ['count', 'sum', 'min', 'max', 'first', 'last'],
          maxValuesPerWindow: 7,
        };
        let ts = 1_700_000_000_000;
        const stream = steps.map((s) => ({ ts: (ts += s.dt), value: s.value }));
        const cut = steps.length === 0 ? 0 : cutAt % (steps.length + 1);

        const whole = new TumblingWindows(opts, new ReasonCounts());
        const expected: WindowAggregate[] = stream.flatMap((s) => [...whole.push(s)]);
        expected.push(...whole.advance(ts + 100_000));

        let part = new TumblingWindows(opts, new ReasonCounts());
        const got: WindowAggregate[] = stream.slice(0, cut).flatMap((s) => [...part.push(s)]);
        const saved: unknown = JSON.parse(JSON.stringify(part.saveState()));
        part = new TumblingWindows(opts, new ReasonCounts());
        part.loadState(saved);
        got.push(...stream.slice(cut).flatMap((s) => [...part.push(s)]));
        got.push(...part.advance(ts + 100_000));
        expect(got).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

});
