// Counter to rate: the increase per `perMs` between consecutive samples. A counter that goes
// down has either wrapped (a fixed-width register overflowed) or reset (the device restarted);
// both are detected and counted rather than turned into a huge negative rate.
import { ReasonCounts, removed, savedNumbers, withValue, type Sample, type SeriesOperator, type StepResult } from './sample.js';

export interface RateOptions {
  /** Width of the device's counter register; without it every decrease is a reset. */
  readonly counterBits?: 32 | 64 | undefined;
  /** The rate is per this many milliseconds (1000: per second). */
  readonly perMs: number;
  /** After a reset: skip the sample, or assume the counter restarted from zero (Prometheus' choice). */
  readonly onReset: 'skip' | 'fromZero';
  readonly flag: boolean;
}

/**
 * A decrease is a wrap when the previous value was in the top quarter of the counter's range and
 * the new one is in the bottom quarter; any other decrease is a reset. 64-bit counters above
 * 2^53 lose precision in a double, so their rates are approximate there.
 */
export function isWrap(previous: number, value: number, counterBits: number): boolean {
  const range = 2 ** counterBits;
  return previous >= range * 0.75 && value < range * 0.25;
}

/** Counts `first` (no rate yet), `out_of_order` (time did not advance), `wrap` and `reset`. */
export class CounterRate implements SeriesOperator {
  #has = false;
  #prevTs = 0;
  #prevValue = 0;

  constructor(
    private readonly opts: RateOptions,
    private readonly counts: ReasonCounts,
  ) {}

  push(sample: Sample): StepResult {
    if (!this.#has) {
      this.#remember(sample);
      this.counts.add('first');
      return removed('rate_first');
    }
    const dt = sample.ts - this.#prevTs;
    if (dt <= 0) {
      this.counts.add('out_of_order');
      return removed('rate_out_of_order');
    }
    let delta = sample.value - this.#prevValue;
    let flag: string | undefined;
    if (delta < 0) {
      const bits = this.opts.counterBits;
      if (bits !== undefined && isWrap(this.#prevValue, sample.value, bits)) {
        delta = 2 ** bits - this.#prevValue + sample.value;
        this.counts.add('wrap');
        flag = 'rate_wrap';
      } else {
        this.counts.add('reset');
        if (this.opts.onReset === 'skip') {
          this.#remember(sample);
          return removed('rate_reset');
        }
        delta = sample.value;
        flag = 'rate_reset';
      }
    }
    this.#remember(sample);
    return withValue(sample, (delta / dt) * this.opts.perMs, this.opts.flag ? flag : undefined);
  }

  saveState(): unknown {
    return this.#has ? [this.#prevTs, this.#prevValue] : null;
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const [ts, value] = savedNumbers(state, 2) as [number, number];
    this.#has = true;
    this.#prevTs = ts;
    this.#prevValue = value;
  }

  #remember(sample: Sample): void {
    this.#has = true;
    this.#prevTs = sample.ts;
    this.#prevValue = sample.value;
  }
}
