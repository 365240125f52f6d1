// Range check: a value outside [min, max] is physically impossible for the sensor (a broken
// probe reads -127 °C), so it is dropped, clamped or kept with a flag.
import { ReasonCounts, removed, withValue, type Sample, type SeriesOperator, type StepResult } from './sample.js';

export interface RangeOptions {
  readonly min?: number | undefined;
  readonly max?: number | undefined;
  /** drop: remove the value; clamp: replace it by the bound; flag: keep it, flagged. */
  readonly action: 'drop' | 'clamp' | 'flag';
  /** Write a flag for clamped values too (flag action always flags). */
  readonly flag: boolean;
}

/** Counts `below_min` and `above_max`. */
export class RangeCheck implements SeriesOperator {
  constructor(
    private readonly opts: RangeOptions,
    private readonly counts: ReasonCounts,
  ) {}

  push(sample: Sample): StepResult {
    const { min, max } = this.opts;
    if (min !== undefined && sample.value < min) return this.#outside(sample, 'below_min', min);
    if (max !== undefined && sample.value > max) return this.#outside(sample, 'above_max', max);
    return sample;
  }

  #outside(sample: Sample, reason: 'below_min' | 'above_max', bound: number): StepResult {
    this.counts.add(reason);
    switch (this.opts.action) {
      case 'drop':
        return removed(`range_${reason}`);
      case 'clamp':
        return withValue(sample, bound, this.opts.flag ? `range_${reason}_clamped` : undefined);
      case 'flag':
        return withValue(sample, sample.value, `range_${reason}`);
    }
  }
}
