// Simple, obviously-correct batch versions of the operators, for the property tests to compare
// the streaming implementations against. Slow on purpose: clarity over speed.
import { MAD_TO_SIGMA } from '../src/index.js';

export interface Point {
  ts: number;
  value: number;
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

export function nearestRank(values: readonly number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[rank - 1]!;
}

/** Each value judged against the median and MAD of the `window` raw values before it. */
export function referenceHampel(
  values: readonly number[],
  window: number,
  threshold: number,
  minDeviation: number,
): { outlier: boolean; median: number }[] {
  return values.map((v, i) => {
    if (i < window) return { outlier: false, median: NaN };
    const past = values.slice(i - window, i);
    const m = median(past);
    const sigma = MAD_TO_SIGMA * median(past.map((x) => Math.abs(x - m)));
    const d = Math.abs(v - m);
    return { outlier: d > threshold * sigma && d > minDeviation, median: m };
  });
}

export function referenceMedianFilter(values: readonly number[], window: number): number[] {
  return values.map((_, i) => median(values.slice(Math.max(0, i - window + 1), i + 1)));
}

/** Splits into runs of values within `tolerance` of each run's first value, then marks the stuck tail of each run. */
export function referenceStuck(points: readonly Point[], tolerance: number, samples?: number, durationMs?: number): boolean[] {
  const runs: number[][] = [];
  points.forEach((p, i) => {
    const run = runs.at(-1);
    if (run && Math.abs(p.value - points[run[0]!]!.value) <= tolerance) run.push(i);
    else runs.push([i]);
  });
  const stuck = points.map(() => false);
  for (const run of runs) {
    const start = points[run[0]!]!;
    run.forEach((index, k) => {
      const p = points[index]!;
      if ((samples !== undefined && k + 1 >= samples) || (durationMs !== undefined && p.ts - start.ts >= durationMs)) stuck[index] = true;
    });
  }
  // Once a run is stuck it stays stuck, even if the time condition alone would not hold for a later value.
  for (const run of runs) {
    const first = run.findIndex((i) => stuck[i]);
    if (first >= 0) for (const i of run.slice(first)) stuck[i] = true;
  }
  return stuck;
}

export interface ReferenceRateOptions {
  counterBits?: 32 | 64;
  perMs: number;
  onReset: 'skip' | 'fromZero';
}

/** Rates for each point after the first; undefined where no rate is emitted. */
export function referenceRate(points: readonly Point[], opts: ReferenceRateOptions): (number | undefined)[] {
  if (points.length === 0) return [];
  const out: (number | undefined)[] = [undefined];
  let prev = points[0];
  for (const p of points.slice(1)) {
    if (!prev || p.ts <= prev.ts) {
      out.push(undefined);
      continue;
    }
    let delta: number | undefined = p.value - prev.value;
    if (delta < 0) {
      const range = opts.counterBits === undefined ? undefined : 2 ** opts.counterBits;
      if (range !== undefined && prev.value >= range * 0.75 && p.value < range / 4) delta = p.value + (range - prev.value);
      else delta = opts.onReset === 'skip' ? undefined : p.value;
    }
    out.push(delta === undefined ? undefined : (delta * opts.perMs) / (p.ts - prev.ts));
    prev = p;
  }
  return out;
}

/** Trapezoids between consecutive points not further apart than maxGapMs. */
export function referenceEnergy(points: readonly Point[], maxGapMs: number, unitMs: number): { total: number; gaps: number } {
  let total = 0;
  let gaps = 0;
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1]!;
    const b = points[i]!;
    const dt = b.ts - a.ts;
    if (dt > maxGapMs) gaps++;
    else total += ((a.value + b.value) / 2) * (dt / unitMs);
  }
  return { total, gaps };
}

/** Indexes of the points a deadband sends. Assumes time only moves forward. */
export function referenceDeadband(points: readonly Point[], abs: number, heartbeatMs?: number): number[] {
  const sent: number[] = [];
  points.forEach((p, i) => {
    const last = sent.length > 0 ? points[sent.at(-1)!]! : undefined;
    if (!last || Math.abs(p.value - last.value) > abs || (heartbeatMs !== undefined && p.ts - last.ts >= heartbeatMs)) sent.push(i);
  });
  return sent;
}

export function referenceEma(values: readonly number[], alpha: number): number[] {
  const out: number[] = [];
  values.forEach((v, i) => out.push(i === 0 ? v : alpha * v + (1 - alpha) * out[i - 1]!));
  return out;
}

export function referenceSmaSamples(values: readonly number[], n: number): number[] {
  return values.map((_, i) => {
    const w = values.slice(Math.max(0, i - n + 1), i + 1);
    return w.reduce((a, b) => a + b, 0) / w.length;
  });
}

/** Mean of the values in (ts - durationMs, ts], for time-ordered points. */
export function referenceSmaDuration(points: readonly Point[], durationMs: number): number[] {
  return points.map((p, i) => {
    const w = points.slice(0, i + 1).filter((q) => q.ts > p.ts - durationMs);
    return w.reduce((a, q) => a + q.value, 0) / w.length;
  });
}

export interface ReferenceWindow {
  count: number;
  sum: number;
  mean: number;
  min: number;
  max: number;
  first: number;
  last: number;
  values: number[];
}

/** Aggregates per epoch-aligned window, first/last by time (ties: arrival order). */
export function referenceWindows(points: readonly Point[], windowMs: number): Map<number, ReferenceWindow> {
  const groups = new Map<number, Point[]>();
  for (const p of points) {
    const start = Math.floor(p.ts / windowMs) * windowMs;
    groups.set(start, [...(groups.get(start) ?? []), p]);
  }
  const out = new Map<number, ReferenceWindow>();
  for (const [start, ps] of groups) {
    const values = ps.map((p) => p.value);
    const byTime = ps.map((p, i) => ({ p, i })).sort((a, b) => a.p.ts - b.p.ts || a.i - b.i);
    const sum = values.reduce((a, b) => a + b, 0);
    out.set(start, {
      count: ps.length,
      sum,
      mean: sum / ps.length,
      min: Math.min(...values),
      max: Math.max(...values),
      first: byTime[0]!.p.value,
      last: byTime.at(-1)!.p.value,
      values,
    });
  }
  return out;
}

export function close(a: number | undefined, b: number | undefined, tolerance = 1e-9): boolean {
  if (a === undefined || b === undefined) return a === b;
  return Math.abs(a - b) <= tolerance * Math.max(1, Math.abs(a), Math.abs(b));
}
