// Stuck-sensor detection: a value that does not move (within `tolerance`) for `samples` samples
// or `durationMs` of reading time is more likely a frozen sensor than a quiet process.
// Values from the moment the run qualifies are flagged or dropped; earlier ones have gone.
import { ReasonCounts, removed, savedNumbers, withValue, type Sample, type SeriesOperator, type StepResult } from './sample.js';

export interface StuckOptions {
  /** The run is stuck once it has this many samples (the first included). */
  readonly samples?: number | undefined;
  /** ... or once it spans this long in reading time. */
  readonly durationMs?: number | undefined;
  /** Values within this of the run's first value count as the same. */
  readonly tolerance: number;
  readonly action: 'drop' | 'flag';
}

/** Counts `stuck` (values flagged or dropped) and `runs` (stuck runs detected). */
export class StuckDetector implements SeriesOperator {
  #runValue = NaN;
  #runStart = 0;
  #runLength = 0;
  #stuck = false;

  constructor(
    private readonly opts: StuckOptions,
    private readonly counts: ReasonCounts,
  ) {}

  push(sample: Sample): StepResult {
    if (this.#runLength > 0 && Math.abs(sample.value - this.#runValue) <= this.opts.tolerance) {
      this.#runLength++;
    } else {
      this.#runValue = sample.value;
      this.#runStart = sample.ts;
      this.#runLength = 1;
      this.#stuck = false;
    }
    if (!this.#stuck) {
      const { samples, durationMs } = this.opts;
      const long = samples !== undefined && this.#runLength >= samples;
      const lasting = durationMs !== undefined && sample.ts - this.#runStart >= durationMs;
      if (!long && !lasting) return sample;
      this.#stuck = true;
      this.counts.add('runs');
    }
    this.counts.add('stuck');
    return this.opts.action === 'drop' ? removed('stuck') : withValue(sample, sample.value, 'stuck');
  }

  saveState(): unknown {
    return this.#runLength > 0 ? [this.#runValue, this.#runStart, this.#runLength, this.#stuck ? 1 : 0] : null;
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const [value, start, length, stuck] = savedNumbers(state, 4) as [number, number, number, number];
    this.#runValue = value;
    this.#runStart = start;
    this.#runLength = length;
    this.#stuck = stuck === 1;
  }
}
