// Power to energy: the trapezoid rule between consecutive samples, which copes with irregular
// intervals. Across a gap longer than `maxGapMs` nothing is known about the power, so the gap is
// not integrated: it is counted and the sample after it carries an `integrate_gap` flag.
import { ReasonCounts, removed, savedNumbers, withValue, type Sample, type SeriesOperator, type StepResult } from './sample.js';

export interface IntegrateOptions {
  readonly maxGapMs: number;
  /** Time unit of the result: 3_600_000 turns W into Wh. */
  readonly unitMs: number;
  /** Multiplies the result: 0.001 turns Wh into kWh. */
  readonly scale: number;
  /**
   * interval: each sample carries the energy since the previous one (sums survive restarts and
   * partitioning); cumulative: the running total since this operator started.
   */
  readonly output: 'interval' | 'cumulative';
  readonly flag: boolean;
}

/** Counts `first`, `out_of_order`, `gap` and `gap_ms` (total time not integrated). */
export class Integrator implements SeriesOperator {
  #has = false;
  #prevTs = 0;
  #prevValue = 0;
  #total = 0;

  constructor(
    private readonly opts: IntegrateOptions,
    private readonly counts: ReasonCounts,
  ) {}

  /** Energy integrated so far (cumulative, whatever the output mode). */
  get total(): number {
    return this.#total;
  }

  push(sample: Sample): StepResult {
    if (!this.#has) {
      this.#remember(sample);
      this.counts.add('first');
      if (this.opts.output === 'cumulative') return withValue(sample, 0, undefined);
      return removed('integrate_first');
    }
    const dt = sample.ts - this.#prevTs;
    if (dt <= 0) {
      this.counts.add('out_of_order');
      return removed('integrate_out_of_order');
    }
    if (dt > this.opts.maxGapMs) {
      this.counts.add('gap');
      this.counts.add('gap_ms', dt);
      this.#remember(sample);
      // The gap is reported on the reading whatever `flag` says: the energy is knowingly incomplete.
      return withValue(sample, this.opts.output === 'cumulative' ? this.#total : 0, 'integrate_gap');
    }
    const energy = (((this.#prevValue + sample.value) / 2) * dt * this.opts.scale) / this.opts.unitMs;
    this.#total += energy;
    this.#remember(sample);
    return withValue(sample, this.opts.output === 'cumulative' ? this.#total : energy, undefined);
  }

  saveState(): unknown {
    return this.#has ? [this.#prevTs, this.#prevValue, this.#total] : null;
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const [ts, value, total] = savedNumbers(state, 3) as [number, number, number];
    this.#has = true;
    this.#prevTs = ts;
    this.#prevValue = value;
    this.#total = total;
  }

  #remember(sample: Sample): void {
    this.#has = true;
    this.#prevTs = sample.ts;
    this.#prevValue = sample.value;
  }
}
