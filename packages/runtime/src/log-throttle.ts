// A bounded rate for log lines of one kind: a full SD card fails every commit, a misconfigured
// device reconnects every second, and one line per event would fill the disk or the journal. The
// first event logs, later ones within `intervalMs` are counted and reported on the next line.
// Pure: time comes from the injected Clock.
import type { Clock } from './clock.js';

export type ThrottleVerdict =
  /** Log this event; `suppressed` events since the last line were not logged. */
  | { readonly log: true; readonly suppressed: number }
  | { readonly log: false };

export class LogThrottle {
  #lastLogAt: number | undefined;
  #suppressed = 0;

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
  ) {}

  hit(): ThrottleVerdict {
    const now = this.clock.now();
    if (this.#lastLogAt === undefined || now - this.#lastLogAt >= this.intervalMs) {
      const suppressed = this.#suppressed;
      this.#lastLogAt = now;
      this.#suppressed = 0;
      return { log: true, suppressed };
    }
    this.#suppressed += 1;
    return { log: false };
  }

  /** The run of events ended: the next one logs at once. */
  reset(): void {
    this.#lastLogAt = undefined;
    this.#suppressed = 0;
  }
}
