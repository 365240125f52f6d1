// Deadband (report by exception): at the edge, send a value only when it moved by more than the
// bound since the last value sent, or when `heartbeatMs` passed, so a metered uplink carries
// changes, not repeats. Holding the last sent value reproduces the series within the bound.
import { ReasonCounts, removed, savedNumbers, type Sample, type SeriesOperator, type StepResult } from './sample.js';

export interface DeadbandOptions {
  /** Absolute bound, in the metric's unit. */
  readonly abs?: number | undefined;
  /** Relative bound, a fraction of the last value sent (0.01: 1 %). */
  readonly rel?: number | undefined;
  /** Send at least this often (reading time), even when the value did not move. */
  readonly heartbeatMs?: number | undefined;
}

/** Counts `suppressed`, `heartbeat` (sent only because of the heartbeat) and `out_of_order` (passed through). */
export class Deadband implements SeriesOperator {
  #has = false;
  #lastTs = 0;
  #lastValue = 0;

  constructor(
    private readonly opts: DeadbandOptions,
    private readonly counts: ReasonCounts,
  ) {}

  push(sample: Sample): StepResult {
    if (!this.#has) return this.#send(sample);
    if (sample.ts < this.#lastTs) {
      // Older than what was sent: holding it would misplace it, so pass it on untouched.
      this.counts.add('out_of_order');
      return sample;
    }
    const moved = Math.abs(sample.value - this.#lastValue);
    const { abs, rel, heartbeatMs } = this.opts;
    if ((abs !== undefined && moved > abs) || (rel !== undefined && moved > rel * Math.abs(this.#lastValue))) {
      return this.#send(sample);
    }
    if (heartbeatMs !== undefined && sample.ts - this.#lastTs >= heartbeatMs) {
      this.counts.add('heartbeat');
      return this.#send(sample);
    }
    this.counts.add('suppressed');
    return removed('deadband_suppressed');
  }

  saveState(): unknown {
    return this.#has ? [this.#lastTs, this.#lastValue] : null;
  }

  loadState(state: unknown): void {
    if (state === null) return;
    const [ts, value] = savedNumbers(state, 2) as [number, number];
    this.#has = true;
    this.#lastTs = ts;
    this.#lastValue = value;
  }

  #send(sample: Sample): Sample {
    this.#has = true;
    this.#lastTs = sample.ts;
    this.#lastValue = sample.value;
    return sample;
  }
}
