// Hampel filter: a value further than `threshold` robust standard deviations (1.4826 x MAD)
// from the median of the previous `window` raw values is a spike. The window holds raw inputs,
// spikes included, so a genuine step change is accepted once it fills half the window.
// Causal (judges each value against the past only), so it adds no delay at the edge.
import { medianOfSorted, sortSmall } from './order-statistics.js';
import { ReasonCounts, removed, savedNumbers, withValue, type Sample, type SeriesOperator, type StepResult } from './sample.js';

/** Scales the median absolute deviation to a standard deviation for normally distributed noise. */
export const MAD_TO_SIGMA = 1.4826;

export interface HampelOptions {
  /** How many previous values the median is taken over; no value is judged before the window is full. */
  readonly window: number;
  /** In robust standard deviations. */
  readonly threshold: number;
  /**
   * A deviation at or below this is never an outlier. Without it a sensor that reports the same
   * quantised value for a while (MAD 0) would have its first real change removed.
   */
  readonly minDeviation: number;
  /** drop: remove the spike; replace: substitute the window median; flag: keep it, flagged. */
  readonly action: 'drop' | 'replace' | 'flag';
  readonly flag: boolean;
}

/** Counts `outlier`. */
export class HampelFilter implements SeriesOperator {
  #history: number[] = [];
  #next = 0;
  /** Reused for sorting, so judging a value allocates nothing. */
  readonly #scratch: Float64Array;

  constructor(
    private readonly opts: HampelOptions,
    private readonly counts: ReasonCounts,
  ) {
    this.#scratch = new Float64Array(opts.window);
  }

  push(sample: Sample): StepResult {
    const history = this.#history;
    let result: StepResult = sample;
    if (history.length === this.opts.window) {
      const sorted = this.#scratch;
      sorted.set(history);
      sortSmall(sorted);
      const median = medianOfSorted(sorted);
      for (let i = 0; i < sorted.length; i++) sorted[i] = Math.abs(sorted[i]! - median);
      sortSmall(sorted);
      const sigma = MAD_TO_SIGMA * medianOfSorted(sorted);
      const deviation = Math.abs(sample.value - median);
      if (deviation > this.opts.threshold * sigma && deviation > this.opts.minDeviation) {
        this.counts.add('outlier');
        switch (this.opts.action) {
          case 'drop':
            result = removed('hampel_outlier');
            break;
          case 'replace':
            result = withValue(sample, median, this.opts.flag ? 'hampel_outlier_replaced' : undefined);
            break;
          case 'flag':
            result = withValue(sample, sample.value, 'hampel_outlier');
            break;
        }
      }
    }
    // Ring buffer of the raw inputs.
    if (history.length < this.opts.window) history.push(sample.value);
    else history[this.#next] = sample.value;
    this.#next = (this.#next + 1) % this.opts.window;
    return result;
  }

  /** [next, ...history]: the ring buffer as it stands. */
  saveState(): unknown {
    return this.#history.length > 0 ? [this.#next, ...this.#history] : null;
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const [next, ...history] = savedNumbers(state);
    if (next === undefined || history.length > this.opts.window || next >= this.opts.window) throw new TypeError('saved operator state does not fit this operator');
    this.#next = next;
    this.#history = history;
  }
}
