// Tumbling-window rollups of one series. Windows are aligned to the epoch, like InfluxQL's
// GROUP BY time(...), and [start, start + windowMs) holds a sample at `ts` when start <= ts < end.
//
// Event time decides: the watermark is the newest reading time seen (or the time passed to
// advance()). A window is emitted once the watermark reaches its end. It stays open for
// `allowedLatenessMs` more: a late sample within that updates it and the whole window is emitted
// again with a higher revision (same series and start, so the database overwrites the point);
// a sample for a window already closed past its lateness is counted as `dropped_late`.
//
// Memory: per open window a fixed set of running aggregates, plus, when percentiles are asked
// for, the window's values (8 bytes each) up to `maxValuesPerWindow`. A window with more values
// than that drops its values and emits no percentiles (counted `percentiles_skipped`), while
// count/sum/mean/min/max/first/last stay exact. Open windows per series are at most
// 2 + ceil(allowedLatenessMs / windowMs): closed windows are evicted when the watermark next
// crosses a window boundary (or on advance()), not on every sample.
import { percentileOfSorted, sortedCopy } from './order-statistics.js';
import { savedNumbers, type ReasonCounts, type Sample } from './sample.js';

export const AGGREGATES = ['count', 'sum', 'mean', 'min', 'max', 'first', 'last', 'p50', 'p90', 'p95', 'p99'] as const;
export type Aggregate = (typeof AGGREGATES)[number];

const PERCENTILES: Partial<Record<Aggregate, number>> = { p50: 50, p90: 90, p95: 95, p99: 99 };

const NONE: readonly WindowAggregate[] = Object.freeze([]);

export interface RollupOptions {
  readonly windowMs: number;
  readonly allowedLatenessMs: number;
  readonly aggregates: readonly Aggregate[];
  readonly maxValuesPerWindow: number;
}

export interface WindowAggregate {
  readonly windowStart: number;
  readonly windowMs: number;
  /** 0 for the first emission of a window, then 1, 2... for each correction. */
  readonly revision: number;
  readonly values: Readonly<Partial<Record<Aggregate, number>>>;
}

interface OpenWindow {
  readonly start: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  firstTs: number;
  first: number;
  lastTs: number;
  last: number;
  values: number[] | undefined;
  emitted: boolean;
  revision: number;
}

/** Counts `windows` (first emissions), `corrected`, `dropped_late` and `percentiles_skipped`. */
export class TumblingWindows {
  readonly #windows = new Map<number, OpenWindow>();
  readonly #keepValues: boolean;
  #watermark = -Infinity;
  /** End of the window holding the watermark: below it, a rising watermark completes no window. */
  #newestEnd = -Infinity;

  constructor(
    private readonly opts: RollupOptions,
    private readonly counts: ReasonCounts,
  ) {
    this.#keepValues = opts.aggregates.some((a) => PERCENTILES[a] !== undefined);
  }

  get watermark(): number {
    return this.#watermark;
  }

  get openWindows(): number {
    return this.#windows.size;
  }

  /** Start of the window holding `ts` (floor, so negative times align too). */
  windowStart(ts: number): number {
    return ts - (((ts % this.opts.windowMs) + this.opts.windowMs) % this.opts.windowMs);
  }

  /** Adds a sample; returns the windows it completed or corrected, oldest first. */
  push(sample: Sample): readonly WindowAggregate[] {
    const start = this.windowStart(sample.ts);
    const end = start + this.opts.windowMs;
    if (end + this.opts.allowedLatenessMs <= this.#watermark) {
      this.counts.add('dropped_late');
      return NONE;
    }
    let window = this.#windows.get(start);
    if (!window) {
      window = {
        start,
        count: 0,
        sum: 0,
        min: Infinity,
        max: -Infinity,
        firstTs: Infinity,
        first: NaN,
        lastTs: -Infinity,
        last: NaN,
        values: this.#keepValues ? [] : undefined,
        emitted: false,
        revision: 0,
      };
      this.#windows.set(start, window);
    }
    this.#add(window, sample);
    let out: WindowAggregate[] | undefined;
    if (window.emitted) {
      window.revision++;
      this.counts.add('corrected');
      out = [this.#aggregate(window)];
    } else if (end <= this.#watermark) {
      // A late sample opened a window the watermark has already passed: it is complete as it stands.
      window.emitted = true;
      this.counts.add('windows');
      out = [this.#aggregate(window)];
    }
    if (sample.ts > this.#watermark) {
      // The common case: a new reading inside the newest window completes nothing.
      if (sample.ts < this.#newestEnd) this.#watermark = sample.ts;
      else this.#close(sample.ts, (out ??= []));
    }
    return out ?? NONE;
  }

  /**
   * The open windows and the watermark as plain JSON, so a restart resumes them: one array per
   * window, [start, count, sum, min, max, firstTs, first, lastTs, last, emitted, revision, ...values].
   */
  saveState(): unknown {
    if (this.#watermark === -Infinity) return null;
    const windows = [...this.#windows.values()].map((w) => [
      w.start, w.count, w.sum, w.min, w.max, w.firstTs, w.first, w.lastTs, w.last, w.emitted ? 1 : 0, w.revision,
      // -1 marks a window that gave up its values (percentiles skipped).
      ...(w.values ?? (this.#keepValues ? [-1] : [])),
    ]);
    return { watermark: this.#watermark, windows };
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const saved = state as { watermark?: unknown; windows?: unknown };
    const [watermark] = savedNumbers([saved.watermark], 1) as [number];
    if (!Array.isArray(saved.windows)) throw new TypeError('saved operator state does not fit this operator');
    const windows = saved.windows.map((entry): OpenWindow => {
      const n = savedNumbers(entry);
      if (n.length < 11) throw new TypeError('saved operator state does not fit this operator');
      const rest = n.slice(11);
      const values = !this.#keepValues || (rest.length === 1 && rest[0] === -1 && n[1] !== 1) ? undefined : rest;
      if (values && values.length !== n[1]) throw new TypeError('saved operator state does not fit this operator');
      return {
        start: n[0]!, count: n[1]!, sum: n[2]!, min: n[3]!, max: n[4]!, firstTs: n[5]!, first: n[6]!, lastTs: n[7]!, last: n[8]!,
        values: this.#keepValues ? values : undefined, emitted: n[9] === 1, revision: n[10]!,
      };
    });
    this.#windows.clear();
    for (const w of windows) this.#windows.set(w.start, w);
    this.#watermark = watermark;
    this.#newestEnd = this.windowStart(watermark) + this.opts.windowMs;
  }

  /** Moves the watermark to `now` (e.g. the wall clock, for a quiet series) and emits what it completes. */
  advance(now: number): WindowAggregate[] {
    const out: WindowAggregate[] = [];
    if (now > this.#watermark) this.#close(now, out);
    return out;
  }

  #add(w: OpenWindow, sample: Sample): void {
    const v = sample.value;
    w.count++;
    w.sum += v;
    // Math.min/max, not `<`/`>`: -0 is below 0 for them, so the result does not depend on which came first.
    w.min = Math.min(w.min, v);
    w.max = Math.max(w.max, v);
    if (sample.ts < w.firstTs) {
      w.firstTs = sample.ts;
      w.first = v;
    }
    if (sample.ts >= w.lastTs) {
      w.lastTs = sample.ts;
      w.last = v;
    }
    if (w.values) {
      if (w.values.length < this.opts.maxValuesPerWindow) w.values.push(v);
      else {
        w.values = undefined;
        this.counts.add('percentiles_skipped');
      }
    }
  }

  #close(watermark: number, out: WindowAggregate[]): void {
    this.#watermark = watermark;
    this.#newestEnd = this.windowStart(watermark) + this.opts.windowMs;
    const due: OpenWindow[] = [];
    for (const w of this.#windows.values()) {
      const end = w.start + this.opts.windowMs;
      if (!w.emitted && end <= watermark) due.push(w);
      if (end + this.opts.allowedLatenessMs <= watermark) this.#windows.delete(w.start);
    }
    due.sort((a, b) => a.start - b.start);
    for (const w of due) {
      w.emitted = true;
      this.counts.add('windows');
      out.push(this.#aggregate(w));
    }
  }

  #aggregate(w: OpenWindow): WindowAggregate {
    const values: Partial<Record<Aggregate, number>> = {};
    const sorted = w.values && w.values.length === w.count ? sortedCopy(w.values) : undefined;
    for (const a of this.opts.aggregates) {
      switch (a) {
        case 'count':
          values.count = w.count;
          break;
        case 'sum':
          values.sum = w.sum;
          break;
        case 'mean':
          values.mean = w.sum / w.count;
          break;
        case 'min':
          values.min = w.min;
          break;
        case 'max':
          values.max = w.max;
          break;
        case 'first':
          values.first = w.first;
          break;
        case 'last':
          values.last = w.last;
          break;
        case 'p50':
        case 'p90':
        case 'p95':
        case 'p99':
          if (sorted) values[a] = percentileOfSorted(sorted, PERCENTILES[a]!);
          break;
      }
    }
    return { windowStart: w.start, windowMs: this.opts.windowMs, revision: w.revision, values };
  }
}
