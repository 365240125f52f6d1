// Drain progress: how fast the backlog leaves the outbox (readings acked per second over a
// sliding window) and when it will be gone. Pure: time comes from the injected Clock.
import type { Clock } from '@ferry/runtime';

export interface DrainProgress {
  /** Readings in the outbox (unsent and in flight). */
  readonly backlog: number;
  /** Readings acked per second over the last window. */
  readonly ratePerSec: number;
  /** Seconds until the backlog is gone at that rate; null while nothing drains. */
  readonly etaSec: number | null;
}

export interface DrainMeterOptions {
  readonly clock: Clock;
  /** A backlog at least this large is a drain worth logging. */
  readonly aboveReadings: number;
  /** Progress is logged at most this often. */
  readonly logIntervalMs: number;
  /** The rate is measured over this much recent time. */
  readonly windowMs?: number;
}

/** Samples closer together than this are merged: acks come in hundreds a second. */
const SAMPLE_EVERY_MS = 250;

export class DrainMeter {
  private readonly samples: { t: number; total: number }[] = [];
  private total = 0;
  private lastLogAt: number | undefined;
  private draining = false;
  private readonly windowMs: number;

  constructor(private readonly options: DrainMeterOptions) {
    this.windowMs = options.windowMs ?? 10_000;
  }

  /** Readings left the outbox after an ack. */
  acked(readings: number): void {
    this.total += readings;
    const now = this.options.clock.now();
    const last = this.samples[this.samples.length - 1];
    if (last && now - last.t < SAMPLE_EVERY_MS) last.total = this.total;
    else this.samples.push({ t: now, total: this.total });
    this.prune(now);
  }

  progress(backlog: number): DrainProgress {
    const now = this.options.clock.now();
    this.prune(now);
    const first = this.samples[0];
    let ratePerSec = 0;
    // From the oldest sample in the window to now: a stalled drain shows its rate falling, not frozen.
    if (first && now - first.t >= SAMPLE_EVERY_MS) ratePerSec = Math.max(0, (this.total - first.total) / ((now - first.t) / 1000));
    ratePerSec = Math.round(ratePerSec * 10) / 10;
    return { backlog, ratePerSec, etaSec: backlog === 0 ? 0 : ratePerSec > 0 ? Math.ceil(backlog / ratePerSec) : null };
  }

  /**
   * What to log now, if anything: `progress` every logIntervalMs while the backlog is above the
   * threshold, `done` once when it falls back below it.
   */
  report(backlog: number): 'progress' | 'done' | undefined {
    const now = this.options.clock.now();
    if (backlog >= this.options.aboveReadings) {
      this.draining = true;
      if (this.lastLogAt === undefined || now - this.lastLogAt >= this.options.logIntervalMs) {
        this.lastLogAt = now;
        return 'progress';
      }
      return undefined;
    }
    if (this.draining) {
      this.draining = false;
      this.lastLogAt = undefined;
      return 'done';
    }
    return undefined;
  }

  private prune(now: number): void {
    // Keep one sample at or before the window start, so the window is always covered.
    while (this.samples.length > 1 && (this.samples[1]?.t ?? now) <= now - this.windowMs) this.samples.shift();
  }
}
