// Every operator against a simple batch reference implementation, on random series.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CounterRate,
  Deadband,
  ExponentialMovingAverage,
  HampelFilter,
  Integrator,
  isRemoved,
  MedianFilter,
  RangeCheck,
  ReasonCounts,
  SimpleMovingAverage,
  SkewCorrection,
  StuckDetector,
  TumblingWindows,
  UNITS,
  UnitNormaliser,
  type Sample,
  type SeriesOperator,
  type StepResult,
  type WindowAggregate,
} from '../src/index.js';
import {
  close,
  nearestRank,
  referenceDeadband,
  referenceEma,
  referenceEnergy,
  referenceHampel,
  referenceMedianFilter,
  referenceRate,
  referenceSmaDuration,
  referenceSmaSamples,
  referenceStuck,
  referenceWindows,
  type Point,
} from './reference.js';

const value = fc.double({ min: -1000, max: 1000, noNaN: true, noDefaultInfinity: true });
/** Time-ordered points with irregular, strictly increasing timestamps. */
const series = (values: fc.Arbitrary<number> = value, maxStep = 5000, maxLength = 200) =>
  fc
    .array(fc.record({ dt: fc.integer({ min: 1, max: maxStep }), value: values }), { maxLength })
    .map((rows) => {
      let ts = 1_700_000_000_000;
      return rows.map((r) => ({ ts: (ts += r.dt), value: r.value }));
    });
/** Small integers repeat often, which is what stuck detection and deadband need to be exercised. */
const repetitive = fc.integer({ min: 0, max: 3 }).map((v) => v * 1.5);

function run(op: SeriesOperator, points: readonly Point[]): StepResult[] {
  return points.map((p) => op.push({ ts: p.ts, value: p.value }));
}

const kept = (r: StepResult): Sample | undefined => (isRemoved(r) ? undefined : r);

/** -0 as 0: two medians of the same values may differ only in the sign of a zero. */
function zeroSigned(v: unknown): unknown {
  return typeof v === 'number' ? v + 0 : v;
}

describe('cleaning operators match their references', () => {
  it('range drops, clamps or flags exactly the values outside [min, max]', () => {
    fc.assert(
      fc.property(series(), value, value, fc.constantFrom('drop', 'clamp', 'flag'), (points, a, b, action) => {
        const [min, max] = a <= b ? [a, b] : [b, a];
        const counts = new ReasonCounts();
        const out = run(new RangeCheck({ min, max, action, flag: false }, counts), points);
        points.forEach((p, i) => {
          const r = out[i]!;
          const outside = p.value < min || p.value > max;
          if (!outside) expect(r).toEqual({ ts: p.ts, value: p.value });
          else if (action === 'drop') expect(isRemoved(r)).toBe(true);
          else if (action === 'clamp') expect(kept(r)?.value).toBe(p.value < min ? min : max);
          else expect(kept(r)?.flags).toEqual([p.value < min ? 'range_below_min' : 'range_above_max']);
        });
        expect(counts.get('below_min')).toBe(points.filter((p) => p.value < min).length);
        expect(counts.get('above_max')).toBe(points.filter((p) => p.value > max).length);
      }),
    );
  });

  it('hampel judges each value against the median and MAD of the previous window', () => {
    fc.assert(
      fc.property(
        series(fc.oneof(value, repetitive)),
        fc.integer({ min: 3, max: 9 }),
        fc.double({ min: 0.5, max: 5, noNaN: true }),
        fc.constantFrom(0, 0.5),
        (points, window, threshold, minDeviation) => {
          const counts = new ReasonCounts();
          const out = run(new HampelFilter({ window, threshold, minDeviation, action: 'replace', flag: true }, counts), points);
          const ref = referenceHampel(points.map((p) => p.value), window, threshold, minDeviation);
          ref.forEach((r, i) => {
            const s = kept(out[i]!)!;
            if (r.outlier) {
              // A median of -0 and 0 may come out as either: the same value (x + 0 turns -0 into 0).
              expect(zeroSigned(s.value)).toBe(zeroSigned(r.median));
              expect(s.flags).toEqual(['hampel_outlier_replaced']);
            } else expect(s.value).toBe(points[i]!.value);
          });
          expect(counts.get('outlier')).toBe(ref.filter((r) => r.outlier).length);
        },
      ),
    );
  });

  it('the median filter emits the median of the trailing window', () => {
    fc.assert(
      fc.property(series(), fc.integer({ min: 1, max: 9 }), (points, window) => {
        const counts = new ReasonCounts();
        const out = run(new MedianFilter({ window, flag: false }, counts), points).map((r) => kept(r)!.value);
        const ref = referenceMedianFilter(points.map((p) => p.value), window);
        // A median equal to the value (-0 and 0 are) leaves the reading as it came: compare the values, not the zero's sign.
        expect(out.map(zeroSigned)).toEqual(ref.map(zeroSigned));
        expect(counts.get('changed')).toBe(ref.filter((v, i) => v !== points[i]!.value).length);
      }),
    );
  });

  it('stuck detection flags the values of a run from the moment it is long enough', () => {
    fc.assert(
      fc.property(
        series(repetitive, 3000),
        fc.option(fc.integer({ min: 2, max: 6 }), { nil: undefined }),
        fc.option(fc.integer({ min: 1000, max: 10_000 }), { nil: undefined }),
        fc.constantFrom(0, 1.5),
        (points, samples, durationMs, tolerance) => {
          fc.pre(samples !== undefined || durationMs !== undefined);
          const counts = new ReasonCounts();
          const out = run(new StuckDetector({ samples, durationMs, tolerance, action: 'flag' }, counts), points);
          const ref = referenceStuck(points, tolerance, samples, durationMs);
          expect(out.map((r) => kept(r)!.flags?.includes('stuck') ?? false)).toEqual(ref);
          expect(counts.get('stuck')).toBe(ref.filter(Boolean).length);
        },
      ),
    );
  });

  it('unit conversion round-trips within a dimension and matches the textbook formulas', () => {
    const names = Object.keys(UNITS);
    fc.assert(
      fc.property(value, fc.constantFrom(...names), fc.constantFrom(...names), (v, from, to) => {
        fc.pre(UNITS[from]!.dimension === UNITS[to]!.dimension);
        const counts = new ReasonCounts();
        const there = new UnitNormaliser({ from, to, flag: false }, counts).push({ ts: 0, value: v });
        const back = new UnitNormaliser({ from: to, to: from, flag: false }, counts).push(there);
        expect(close(back.value, v, 1e-9)).toBe(true);
        expect(counts.get('converted')).toBe(2);
      }),
    );
    fc.assert(
      fc.property(value, (v) => {
        const convert = (from: string, to: string) => new UnitNormaliser({ from, to, flag: false }, new ReasonCounts()).push({ ts: 0, value: v }).value;
        expect(close(convert('°F', '°C'), ((v - 32) * 5) / 9)).toBe(true);
        expect(close(convert('K', '°C'), v - 273.15)).toBe(true);
        expect(close(convert('kPa', 'hPa'), v * 10)).toBe(true);
        expect(close(convert('hPa', 'kPa'), v / 10)).toBe(true);
        expect(close(convert('Wh', 'kWh'), v / 1000)).toBe(true);
        expect(close(convert('km/h', 'm/s'), v / 3.6)).toBe(true);
      }),
    );
  });

  it('skew correction shifts device time by the offset and leaves gateway time alone', () => {
    fc.assert(
      fc.property(series(), fc.integer({ min: -100_000, max: 100_000 }), fc.array(fc.boolean()), (points, offsetMs, gatewayTime) => {
        const op = new SkewCorrection({ offsetMs, deviceTimeOnly: true, flag: false }, new ReasonCounts());
        points.forEach((p, i) => {
          const source = gatewayTime[i] ? ('gateway' as const) : ('device' as const);
          const out = op.push({ ts: p.ts, value: p.value, source });
          expect(out.ts).toBe(source === 'gateway' ? p.ts : p.ts - offsetMs);
          expect(out.value).toBe(p.value);
        });
      }),
    );
  });
});

describe('rollups match a batch GROUP BY over the samples they accepted', () => {
  /** Arrival order: time-ordered with some samples delayed by up to `maxDelay` positions. */
  const shuffledSeries = fc
    .tuple(series(value, 20_000, 150), fc.array(fc.integer({ min: 0, max: 8 })))
    .map(([points, delays]) =>
      points
        .map((p, i) => ({ p, key: i + (delays[i] ?? 0) }))
        .sort((a, b) => a.key - b.key)
        .map((x) => x.p),
    );

  it('takes -0 as below 0 for min and max, whichever came first (a counterexample fast-check found)', () => {
    for (const values of [[0, -0], [-0, 0]]) {
      const windows = new TumblingWindows({ windowMs: 10_000, allowedLatenessMs: 0, aggregates: ['min', 'max'], maxValuesPerWindow: 10 }, new ReasonCounts());
      values.forEach((value, i) => windows.push({ ts: 1_700_000_000_001 + i, value }));
      const [w] = windows.advance(Infinity);
      expect(Object.is(w?.values.min, -0)).toBe(true);
      expect(Object.is(w?.values.max, 0)).toBe(true);
    }
  });

  it('the last emission of every window equals the reference; late samples beyond the lateness are counted', () => {
    fc.assert(
      fc.property(
        shuffledSeries,
        fc.constantFrom(10_000, 60_000, 300_000),
        fc.constantFrom(0, 30_000, 120_000),
        (arrivals, windowMs, allowedLatenessMs) => {
          const counts = new ReasonCounts();
          const windows = new TumblingWindows(
            { windowMs, allowedLatenessMs, aggregates: ['count', 'sum', 'mean', 'min', 'max', 'first', 'last', 'p50', 'p90', 'p99'], maxValuesPerWindow: 10_000 },
            counts,
          );
          const emitted: WindowAggregate[] = [];
          const accepted: Point[] = [];
          let watermark = -Infinity;
          for (const p of arrivals) {
            const start = Math.floor(p.ts / windowMs) * windowMs;
            if (start + windowMs + allowedLatenessMs > watermark) accepted.push(p);
            watermark = Math.max(watermark, p.ts);
            const out = windows.push(p);
            // Nothing is emitted before the watermark has passed the window's end.
            for (const w of out) expect(w.windowStart + windowMs).toBeLessThanOrEqual(windows.watermark);
            emitted.push(...out);
          }
          emitted.push(...windows.advance(Infinity));
          expect(windows.openWindows).toBe(0);
          const last = new Map<number, WindowAggregate>();
          for (const w of emitted) {
            const before = last.get(w.windowStart);
            if (before) expect(w.revision).toBe(before.revision + 1);
            else expect(w.revision).toBe(0);
            last.set(w.windowStart, w);
          }
          const ref = referenceWindows(accepted, windowMs);
          expect([...last.keys()].sort((a, b) => a - b)).toEqual([...ref.keys()].sort((a, b) => a - b));
          for (const [start, r] of ref) {
            const got = last.get(start)!.values;
            expect(got.count).toBe(r.count);
            expect(close(got.sum, r.sum)).toBe(true);
            expect(close(got.mean, r.mean)).toBe(true);
            expect(got.min).toBe(r.min);
            expect(got.max).toBe(r.max);
            expect(got.first).toBe(r.first);
            expect(got.last).toBe(r.last);
            expect(got.p50).toBe(nearestRank(r.values, 50));
            expect(got.p90).toBe(nearestRank(r.values, 90));
            expect(got.p99).toBe(nearestRank(r.values, 99));
          }
          expect(counts.get('dropped_late')).toBe(arrivals.length - accepted.length);
          expect(counts.get('windows')).toBe(ref.size);
          expect(counts.get('corrected')).toBe(emitted.length - ref.size);
        },
      ),
    );
  });
});

describe('differencing and integration match their references', () => {
  /** A counter: mostly increasing, with occasional resets and wraps near the top of a 32-bit range. */
  const counter = fc
    .array(
      fc.record({
        dt: fc.integer({ min: 1, max: 10_000 }),
        step: fc.oneof(
          { weight: 8, arbitrary: fc.integer({ min: 0, max: 100_000 }).map((n) => ({ kind: 'inc' as const, n })) },
          { weight: 1, arbitrary: fc.integer({ min: 0, max: 1000 }).map((n) => ({ kind: 'reset' as const, n })) },
          { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 30 }).map((n) => ({ kind: 'nearTop' as const, n })) },
        ),
      }),
      { maxLength: 200 },
    )
    .map((rows) => {
      let ts = 0;
      let v = 0;
      return rows.map((r) => {
        ts += r.dt;
        if (r.step.kind === 'inc') v = (v + r.step.n) % 2 ** 32;
        else if (r.step.kind === 'reset') v = r.step.n;
        else v = 2 ** 32 - 1 - r.step.n;
        return { ts, value: v };
      });
    });

  it('rate matches the reference, with wraps and resets counted', () => {
    fc.assert(
      fc.property(counter, fc.constantFrom(32, 64, undefined), fc.constantFrom('skip', 'fromZero'), (points, counterBits, onReset) => {
        const counts = new ReasonCounts();
        const out = run(new CounterRate({ counterBits, perMs: 1000, onReset, flag: true }, counts), points).map((r) => kept(r)?.value);
        const ref = referenceRate(points, { ...(counterBits === undefined ? {} : { counterBits }), perMs: 1000, onReset });
        expect(out.length).toBe(ref.length);
        out.forEach((v, i) => expect(close(v, ref[i], 1e-12)).toBe(true));
        const decreases = points.filter((p, i) => i > 0 && p.value < points[i - 1]!.value).length;
        expect(counts.get('wrap') + counts.get('reset')).toBe(decreases);
        expect(out.every((v) => v === undefined || v >= 0)).toBe(true);
      }),
    );
  });

  it('integration equals the trapezoid sum over the intervals no longer than maxGapMs', () => {
    fc.assert(
      fc.property(series(fc.double({ min: 0, max: 5000, noNaN: true }), 120_000), fc.integer({ min: 1000, max: 100_000 }), (points, maxGapMs) => {
        const counts = new ReasonCounts();
        const interval = new Integrator({ maxGapMs, unitMs: 3_600_000, scale: 1, output: 'interval', flag: false }, counts);
        const cumulative = new Integrator({ maxGapMs, unitMs: 3_600_000, scale: 1, output: 'cumulative', flag: false }, new ReasonCounts());
        const parts = run(interval, points).map(kept);
        const totals = run(cumulative, points).map(kept);
        const ref = referenceEnergy(points, maxGapMs, 3_600_000);
        const summed = parts.reduce((a, s) => a + (s?.value ?? 0), 0);
        expect(close(summed, ref.total)).toBe(true);
        expect(close(interval.total, ref.total)).toBe(true);
        expect(close(totals.at(-1)?.value ?? 0, ref.total)).toBe(true);
        expect(counts.get('gap')).toBe(ref.gaps);
        expect(parts.filter((s) => s?.flags?.includes('integrate_gap')).length).toBe(ref.gaps);
      }),
    );
  });
});

describe('filters match their references', () => {
  it('deadband sends what the reference sends, and the held series stays within the band', () => {
    fc.assert(
      fc.property(
        series(fc.oneof(value, repetitive)),
        fc.double({ min: 0, max: 50, noNaN: true }),
        fc.option(fc.integer({ min: 1000, max: 60_000 }), { nil: undefined }),
        (points, abs, heartbeatMs) => {
          const counts = new ReasonCounts();
          const out = run(new Deadband({ abs, heartbeatMs }, counts), points);
          const sent = out.flatMap((r, i) => (isRemoved(r) ? [] : [i]));
          expect(sent).toEqual(referenceDeadband(points, abs, heartbeatMs));
          expect(counts.get('suppressed')).toBe(points.length - sent.length);
          // Sample-and-hold reconstruction from what was sent.
          let held: number | undefined;
          points.forEach((p, i) => {
            const r = out[i]!;
            if (!isRemoved(r)) held = r.value;
            expect(Math.abs(p.value - held!)).toBeLessThanOrEqual(abs);
          });
        },
      ),
    );
  });

  it('ema with a fixed alpha matches the recurrence', () => {
    fc.assert(
      fc.property(series(), fc.double({ min: 0.01, max: 1, noNaN: true }), (points, alpha) => {
        const out = run(new ExponentialMovingAverage({ alpha, flag: false }, new ReasonCounts()), points).map((r) => kept(r)!.value);
        const ref = referenceEma(points.map((p) => p.value), alpha);
        out.forEach((v, i) => expect(close(v, ref[i], 1e-9)).toBe(true));
      }),
    );
  });

  it('ema with a time constant weighs each value by 1 - exp(-dt / tau)', () => {
    fc.assert(
      fc.property(series(), fc.integer({ min: 100, max: 100_000 }), (points, tau) => {
        const out = run(new ExponentialMovingAverage({ timeConstantMs: tau, flag: false }, new ReasonCounts()), points).map((r) => kept(r)!.value);
        let y = 0;
        points.forEach((p, i) => {
          y = i === 0 ? p.value : y + (1 - Math.exp(-(p.ts - points[i - 1]!.ts) / tau)) * (p.value - y);
          expect(close(out[i], y, 1e-9)).toBe(true);
        });
      }),
    );
  });

  it('sma over samples and over a duration matches the mean of the window', () => {
    fc.assert(
      fc.property(series(value, 5000, 1500), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 60_000 }), (points, n, durationMs) => {
        const bySamples = run(new SimpleMovingAverage({ samples: n, flag: false }, new ReasonCounts()), points).map((r) => kept(r)!.value);
        const byTime = run(new SimpleMovingAverage({ durationMs, flag: false }, new ReasonCounts()), points).map((r) => kept(r)!.value);
        const refSamples = referenceSmaSamples(points.map((p) => p.value), n);
        const refTime = referenceSmaDuration(points, durationMs);
        // Absolute tolerance: a running sum over values up to 1000 carries rounding of about 1e-13 per step.
        bySamples.forEach((v, i) => expect(Math.abs(v - refSamples[i]!)).toBeLessThan(1e-7));
        byTime.forEach((v, i) => expect(Math.abs(v - refTime[i]!)).toBeLessThan(1e-7));
      }),
      { numRuns: 50 },
    );
  });
});
