// Median filter: each value becomes the median of itself and the previous `window - 1` values.
// Removes isolated spikes without the lag a mean has on steps; causal, so at the edge it adds
// no delay (a centred median would hold every reading back by half a window).
import { medianOfSorted, sortSmall } from './order-statistics.js';
import { ReasonCounts, savedNumbers, withValue, type Sample, type SeriesOperator } from './sample.js';

export interface MedianOptions {
  readonly window: number;
  readonly flag: boolean;
}

/** Counts `changed` (output differs from input). */
export class MedianFilter implements SeriesOperator {
  #values: number[] = [];
  #next = 0;
  /** One scratch array per window fill level, reused for sorting. */
  readonly #scratch: Float64Array[] = [];

  constructor(
    private readonly opts: MedianOptions,
    private readonly counts: ReasonCounts,
  ) {}

  push(sample: Sample): Sample {
    const values = this.#values;
    if (values.length < this.opts.window) values.push(sample.value);
    else values[this.#next] = sample.value;
    this.#next = (this.#next + 1) % this.opts.window;
    const sorted = (this.#scratch[values.length] ??= new Float64Array(values.length));
    sorted.set(values);
    const median = medianOfSorted(sortSmall(sorted));
    if (median === sample.value) return sample;
    this.counts.add('changed');
    return withValue(sample, median, this.opts.flag ? 'median_changed' : undefined);
  }

  /** [next, ...values]: the ring buffer as it stands. */
  saveState(): unknown {
    return this.#values.length > 0 ? [this.#next, ...this.#values] : null;
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const [next, ...values] = savedNumbers(state);
    if (next === undefined || values.length > this.opts.window || next >= this.opts.window) throw new TypeError('saved operator state does not fit this operator');
    this.#next = next;
    this.#values = values;
  }
}
