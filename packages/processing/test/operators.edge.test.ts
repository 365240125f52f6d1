// The edge cases of each operator, one behaviour per test: resets, wraps, gaps, late data, heartbeats.
import { describe, expect, it } from 'vitest';
import {
  CounterRate,
  Deadband,
  HampelFilter,
  Integrator,
  isRemoved,
  ReasonCounts,
  SkewCorrection,
  StuckDetector,
  TumblingWindows,
  UnitNormaliser,
  type Sample,
  type SeriesOperator,
  type StepResult,
} from '../src/index.js';

const S = 1000;
const MIN = 60 * S;

function feed(op: SeriesOperator, points: [number, number][]): StepResult[] {
  return points.map(([ts, value]) => op.push({ ts, value }));
}
const sample = (r: StepResult | undefined): Sample => {
  if (r === undefined || isRemoved(r)) throw new Error(`expected a sample, got ${JSON.stringify(r)}`);
  return r;
};

describe('counter to rate', () => {
  it('turns a 32-bit wrap into the increase across the top of the range', () => {
    const counts = new ReasonCounts();
    const op = new CounterRate({ counterBits: 32, perMs: 1000, onReset: 'skip', flag: true }, counts);
    const out = feed(op, [
      [0, 2 ** 32 - 10],
      [1000, 5],
    ]);
    expect(isRemoved(out[0]!)).toBe(true);
    expect(sample(out[1])).toMatchObject({ value: 15, flags: ['rate_wrap'] });
    expect(counts.snapshot()).toEqual({ first: 1, wrap: 1 });
  });

  it('turns a 64-bit wrap into the increase across the top of the range', () => {
    const op = new CounterRate({ counterBits: 64, perMs: 1000, onReset: 'skip', flag: false }, new ReasonCounts());
    const out = feed(op, [
      [0, 2 ** 64 - 2 ** 20],
      [2000, 2 ** 20],
    ]);
    expect(sample(out[1]).value).toBe(2 ** 20);
  });

  it('treats a decrease that is not near the top of the range as a reset, and skips it', () => {
    const counts = new ReasonCounts();
    const op = new CounterRate({ counterBits: 32, perMs: 1000, onReset: 'skip', flag: true }, counts);
    const out = feed(op, [
      [0, 1000],
      [1000, 1100],
      [2000, 10],
      [3000, 30],
    ]);
    expect(sample(out[1]).value).toBe(100);
    expect(out[2]).toEqual({ removed: 'rate_reset' });
    expect(sample(out[3]).value).toBe(20);
    expect(counts.get('reset')).toBe(1);
  });

  it('counts from zero after a reset when asked to', () => {
    const op = new CounterRate({ perMs: 1000, onReset: 'fromZero', flag: true }, new ReasonCounts());
    const out = feed(op, [
      [0, 2 ** 32 - 10],
      [2000, 10],
    ]);
    // No counter width configured: even a drop from the top of the 32-bit range is a reset.
    expect(sample(out[1])).toMatchObject({ value: 5, flags: ['rate_reset'] });
  });

  it('removes a sample whose time does not advance, without losing the previous one', () => {
    const counts = new ReasonCounts();
    const op = new CounterRate({ perMs: 1000, onReset: 'skip', flag: false }, counts);
    const out = feed(op, [
      [1000, 10],
      [1000, 20],
      [500, 5],
      [2000, 30],
    ]);
    expect(out[1]).toEqual({ removed: 'rate_out_of_order' });
    expect(out[2]).toEqual({ removed: 'rate_out_of_order' });
    expect(sample(out[3]).value).toBe(20);
    expect(counts.get('out_of_order')).toBe(2);
  });
});

describe('power to energy', () => {
  it('integrates a constant 1 kW over an hour of irregular samples to 1000 Wh', () => {
    const op = new Integrator({ maxGapMs: 30 * MIN, unitMs: 3_600_000, scale: 1, output: 'cumulative', flag: false }, new ReasonCounts());
    const times = [0, 7 * S, 61 * S, 5 * MIN, 17 * MIN, 40 * MIN, 60 * MIN];
    const out = feed(op, times.map((t) => [t, 1000]));
    expect(sample(out[0]).value).toBe(0);
    expect(sample(out.at(-1)).value).toBeCloseTo(1000, 9);
  });

  it('integrates a linear ramp exactly, whatever the spacing', () => {
    const op = new Integrator({ maxGapMs: 3_600_000, unitMs: 3_600_000, scale: 0.001, output: 'interval', flag: false }, new ReasonCounts());
    // Power rising 0 -> 3600 W over an hour: 1800 Wh = 1.8 kWh.
    feed(op, [0, 13, 400, 1999, 3600].map((s) => [s * S, s]));
    expect(op.total).toBeCloseTo(1.8, 12);
  });

  it('does not integrate across a gap longer than maxGapMs, and reports it', () => {
    const counts = new ReasonCounts();
    const op = new Integrator({ maxGapMs: 5 * MIN, unitMs: 3_600_000, scale: 1, output: 'interval', flag: false }, counts);
    const out = feed(op, [
      [0, 600],
      [1 * MIN, 600],
      [61 * MIN, 600],
      [62 * MIN, 600],
    ]);
    expect(out[0]).toEqual({ removed: 'integrate_first' });
    expect(sample(out[1]).value).toBeCloseTo(10, 12);
    expect(sample(out[2])).toEqual({ ts: 61 * MIN, value: 0, flags: ['integrate_gap'] });
    expect(sample(out[3]).value).toBeCloseTo(10, 12);
    expect(op.total).toBeCloseTo(20, 12);
    expect(counts.get('gap')).toBe(1);
    expect(counts.get('gap_ms')).toBe(60 * MIN);
  });
});

describe('tumbling windows with a watermark', () => {
  const make = (counts: ReasonCounts, allowedLatenessMs = 30 * S, maxValuesPerWindow = 10_000) =>
    new TumblingWindows({ windowMs: MIN, allowedLatenessMs, aggregates: ['count', 'sum', 'min', 'max', 'first', 'last', 'p50'], maxValuesPerWindow }, counts);

  it('emits a window once a reading at or after its end arrives', () => {
    const counts = new ReasonCounts();
    const w = make(counts);
    expect(w.push({ ts: 10 * S, value: 1 })).toEqual([]);
    expect(w.push({ ts: 59_999, value: 3 })).toEqual([]);
    const [first] = w.push({ ts: MIN, value: 100 });
    expect(first).toEqual({ windowStart: 0, windowMs: MIN, revision: 0, values: { count: 2, sum: 4, min: 1, max: 3, first: 1, last: 3, p50: 1 } });
  });

  it('corrects a window for a reading within the allowed lateness, then drops later ones', () => {
    const counts = new ReasonCounts();
    const w = make(counts);
    w.push({ ts: 10 * S, value: 1 });
    expect(w.push({ ts: 80 * S, value: 5 })).toHaveLength(1);
    // Watermark 80 s: window [0, 60 s) stays open until 90 s.
    const [corrected] = w.push({ ts: 5 * S, value: 7 });
    expect(corrected).toMatchObject({ windowStart: 0, revision: 1, values: { count: 2, sum: 8, first: 7, last: 1 } });
    w.push({ ts: 90 * S, value: 5 });
    expect(w.push({ ts: 20 * S, value: 9 })).toEqual([]);
    expect(counts.snapshot()).toMatchObject({ windows: 1, corrected: 1, dropped_late: 1 });
  });

  it('emits a window first opened by a late reading once, as it stands', () => {
    const counts = new ReasonCounts();
    const w = make(counts, 5 * MIN);
    w.push({ ts: 3 * MIN, value: 1 });
    const [late] = w.push({ ts: MIN + 1, value: 2 });
    expect(late).toMatchObject({ windowStart: MIN, revision: 0, values: { count: 1 } });
  });

  it('drops percentiles, not counts, when a window holds more values than its bound', () => {
    const counts = new ReasonCounts();
    const w = make(counts, 0, 3);
    for (let i = 0; i < 5; i++) w.push({ ts: i * S, value: i });
    const [window] = w.advance(MIN);
    expect(window!.values).toEqual({ count: 5, sum: 10, min: 0, max: 4, first: 0, last: 4 });
    expect(counts.get('percentiles_skipped')).toBe(1);
  });

  it('closes quiet windows when advanced to the wall clock', () => {
    const w = make(new ReasonCounts(), 0);
    w.push({ ts: 10 * S, value: 1 });
    expect(w.advance(59 * S)).toEqual([]);
    expect(w.advance(MIN)).toHaveLength(1);
    expect(w.openWindows).toBe(0);
  });

  it('aligns windows to the epoch for negative times too', () => {
    const w = make(new ReasonCounts(), 0);
    expect(w.windowStart(-1)).toBe(-MIN);
    expect(w.windowStart(MIN)).toBe(MIN);
  });
});

describe('deadband', () => {
  it('sends a value that did not move once the heartbeat interval has passed', () => {
    const counts = new ReasonCounts();
    const op = new Deadband({ abs: 0.5, heartbeatMs: MIN }, counts);
    const sent = feed(op, Array.from({ length: 13 }, (_, i) => [i * 10 * S, 20] as [number, number]))
      .map((r, i) => (isRemoved(r) ? undefined : i * 10))
      .filter((t) => t !== undefined);
    expect(sent).toEqual([0, 60, 120]);
    expect(counts.snapshot()).toEqual({ heartbeat: 2, suppressed: 10 });
  });

  it('sends a value that moved by more than the bound, and none that moved by exactly the bound', () => {
    const op = new Deadband({ abs: 0.5 }, new ReasonCounts());
    const out = feed(op, [
      [0, 20],
      [1, 20.5],
      [2, 20.51],
      [3, 20.2],
    ]);
    expect(out.map((r) => !isRemoved(r))).toEqual([true, false, true, false]);
  });

  it('uses a relative bound against the last value sent', () => {
    const op = new Deadband({ rel: 0.1 }, new ReasonCounts());
    const out = feed(op, [
      [0, 100],
      [1, 109],
      [2, 111],
      [3, 120],
    ]);
    expect(out.map((r) => !isRemoved(r))).toEqual([true, false, true, false]);
  });

  it('passes a reading older than the last one sent', () => {
    const counts = new ReasonCounts();
    const op = new Deadband({ abs: 10 }, counts);
    feed(op, [[1000, 1]]);
    expect(isRemoved(op.push({ ts: 500, value: 1 }))).toBe(false);
    expect(counts.get('out_of_order')).toBe(1);
  });
});

describe('cleaning', () => {
  it('hampel replaces a lone spike by the median and accepts a genuine step change', () => {
    const counts = new ReasonCounts();
    const op = new HampelFilter({ window: 5, threshold: 3, minDeviation: 0.1, action: 'replace', flag: true }, counts);
    const values = [20, 20.1, 19.9, 20, 20.1, 95, 20, 30, 30, 30, 30, 30];
    const out = values.map((v, i) => sample(op.push({ ts: i * S, value: v })).value);
    expect(out[5]).toBe(20.0);
    // The step to 30 is removed only until it holds the window's median.
    expect(out.slice(-2)).toEqual([30, 30]);
    expect(counts.get('outlier')).toBeGreaterThanOrEqual(1);
  });

  it('hampel does not treat the first change of a flat series as an outlier within minDeviation', () => {
    const op = new HampelFilter({ window: 3, threshold: 3, minDeviation: 0.5, action: 'drop', flag: false }, new ReasonCounts());
    const out = feed(op, [
      [0, 21],
      [1, 21],
      [2, 21],
      [3, 21.2],
    ]);
    expect(isRemoved(out[3]!)).toBe(false);
  });

  it('stuck detection flags a value repeated for the configured number of samples', () => {
    const counts = new ReasonCounts();
    const op = new StuckDetector({ samples: 3, tolerance: 0, action: 'flag' }, counts);
    const out = feed(op, [20, 21, 21, 21, 21, 22].map((v, i) => [i * S, v]));
    expect(out.map((r) => sample(r).flags?.[0])).toEqual([undefined, undefined, undefined, 'stuck', 'stuck', undefined]);
    expect(counts.snapshot()).toEqual({ runs: 1, stuck: 2 });
  });

  it('stuck detection drops a value unchanged for the configured time', () => {
    const op = new StuckDetector({ durationMs: 10 * MIN, tolerance: 0.01, action: 'drop' }, new ReasonCounts());
    const out = feed(op, [
      [0, 5],
      [9 * MIN, 5.005],
      [10 * MIN, 5],
      [11 * MIN, 6],
    ]);
    expect(out.map(isRemoved)).toEqual([false, false, true, false]);
  });

  it('normalises °F to °C, hPa to kPa and Wh to kWh', () => {
    const convert = (from: string, to: string, v: number) => new UnitNormaliser({ from, to, flag: false }, new ReasonCounts()).push({ ts: 0, value: v }).value;
    expect(convert('°F', '°C', 212)).toBeCloseTo(100, 10);
    expect(convert('°F', '°C', 32)).toBeCloseTo(0, 10);
    expect(convert('hPa', 'kPa', 1013.25)).toBeCloseTo(101.325, 10);
    expect(convert('kPa', 'hPa', 101.325)).toBeCloseTo(1013.25, 10);
    expect(convert('Wh', 'kWh', 1500)).toBeCloseTo(1.5, 12);
    expect(() => convert('°F', 'kPa', 1)).toThrow(/cannot convert temperature/);
  });

  it('skew correction moves device time back by the known offset and can flag it', () => {
    const op = new SkewCorrection({ offsetMs: 90 * S, deviceTimeOnly: true, flag: true }, new ReasonCounts());
    expect(op.push({ ts: 10 * MIN, value: 1, source: 'device' })).toEqual({ ts: 10 * MIN - 90 * S, value: 1, source: 'device', flags: ['skew_corrected'] });
  });
});
