// Smoothing filters: exponential and simple moving averages. Both emit one value per input.
import { ReasonCounts, savedNumbers, withValue, type Sample, type SeriesOperator } from './sample.js';

export interface EmaOptions {
  /** Fixed weight of the new value, for regularly sampled series. */
  readonly alpha?: number | undefined;
  /** For irregular intervals: the weight is 1 - exp(-dt / timeConstantMs). */
  readonly timeConstantMs?: number | undefined;
  readonly flag: boolean;
}

/** Counts `smoothed` (value changed) and `out_of_order` (time went back; treated as no time passed). */
export class ExponentialMovingAverage implements SeriesOperator {
  #has = false;
  #lastTs = 0;
  #average = 0;

  constructor(
    private readonly opts: EmaOptions,
    private readonly counts: ReasonCounts,
  ) {}

  push(sample: Sample): Sample {
    if (!this.#has) {
      this.#has = true;
      this.#lastTs = sample.ts;
      this.#average = sample.value;
      return sample;
    }
    let alpha: number;
    if (this.opts.timeConstantMs !== undefined) {
      let dt = sample.ts - this.#lastTs;
      if (dt < 0) {
        this.counts.add('out_of_order');
        dt = 0;
      }
      alpha = 1 - Math.exp(-dt / this.opts.timeConstantMs);
    } else {
      alpha = this.opts.alpha ?? 1;
    }
    this.#average += alpha * (sample.value - this.#average);
    this.#lastTs = Math.max(this.#lastTs, sample.ts);
    return this.#output(sample, this.#average, 'ema_smoothed');
  }

  saveState(): unknown {
    return this.#has ? [this.#lastTs, this.#average] : null;
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const [ts, average] = savedNumbers(state, 2) as [number, number];
    this.#has = true;
    this.#lastTs = ts;
    this.#average = average;
  }

  #output(sample: Sample, value: number, flag: string): Sample {
    if (value === sample.value) return sample;
    this.counts.add('smoothed');
    return withValue(sample, value, this.opts.flag ? flag : undefined);
  }
}

export interface SmaOptions {
  /** Mean of the last `samples` values (the current one included)... */
  readonly samples?: number | undefined;
  /** ...or of the values in (ts - durationMs, ts]. */
  readonly durationMs?: number | undefined;
  readonly flag: boolean;
}

/** Re-add the window from scratch this often, so rounding in the running sum cannot accumulate. */
const RESUM_EVERY = 1024;

/** Counts `smoothed` and `out_of_order` (time windows only; the window is cut at the newest time). */
export class SimpleMovingAverage implements SeriesOperator {
  #ts: number[] = [];
  #values: number[] = [];
  #head = 0;
  #sum = 0;
  #updates = 0;
  #newest = -Infinity;

  constructor(
    private readonly opts: SmaOptions,
    private readonly counts: ReasonCounts,
  ) {}

  push(sample: Sample): Sample {
    if (sample.ts < this.#newest) this.counts.add('out_of_order');
    this.#newest = Math.max(this.#newest, sample.ts);
    this.#ts.push(sample.ts);
    this.#values.push(sample.value);
    this.#sum += sample.value;
    const { samples, durationMs } = this.opts;
    if (samples !== undefined) {
      while (this.#values.length - this.#head > samples) this.#sum -= this.#values[this.#head++]!;
    } else if (durationMs !== undefined) {
      const cut = this.#newest - durationMs;
      while (this.#ts[this.#head]! <= cut && this.#head < this.#values.length - 1) this.#sum -= this.#values[this.#head++]!;
    }
    // Compact the arrays once the consumed prefix dominates, keeping memory at O(window).
    if (this.#head > 64 && this.#head * 2 > this.#values.length) {
      this.#ts = this.#ts.slice(this.#head);
      this.#values = this.#values.slice(this.#head);
      this.#head = 0;
    }
    if (++this.#updates >= RESUM_EVERY) {
      this.#updates = 0;
      this.#sum = 0;
      for (let i = this.#head; i < this.#values.length; i++) this.#sum += this.#values[i]!;
    }
    const mean = this.#sum / (this.#values.length - this.#head);
    if (mean === sample.value) return sample;
    this.counts.add('smoothed');
    return withValue(sample, mean, this.opts.flag ? 'sma_smoothed' : undefined);
  }

  /** [newest, sum, updates, ts..., values...]: the running sum too, so the means come out to the bit. */
  saveState(): unknown {
    if (this.#values.length === this.#head) return null;
    return [this.#newest, this.#sum, this.#updates, ...this.#ts.slice(this.#head), ...this.#values.slice(this.#head)];
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const saved = savedNumbers(state);
    const n = (saved.length - 3) / 2;
    if (!Number.isInteger(n) || n < 1) throw new TypeError('saved operator state does not fit this operator');
    this.#newest = saved[0]!;
    this.#sum = saved[1]!;
    this.#updates = saved[2]!;
    this.#ts = saved.slice(3, 3 + n);
    this.#values = saved.slice(3 + n);
    this.#head = 0;
  }
}
