// Storage failures (a full disk, an unwritable file) are logged loudly but at a bounded rate: a
// full SD card fails every group commit, and one log line per commit would fill what is left.
// Pure: time comes from the injected Clock.
import type { Clock } from '@ferry/runtime';

export type StorageAlarmVerdict =
  /** Log this failure; `suppressed` failures since the last line were not logged. */
  | { readonly log: true; readonly suppressed: number }
  | { readonly log: false };

export class StorageAlarm {
  private lastLogAt: number | undefined;
  private suppressed = 0;
  private failing = false;
  /** Failures since the gateway started. */
  failures = 0;

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
  ) {}

  failed(): StorageAlarmVerdict {
    this.failures += 1;
    this.failing = true;
    const now = this.clock.now();
    if (this.lastLogAt === undefined || now - this.lastLogAt >= this.intervalMs) {
      const suppressed = this.suppressed;
      this.lastLogAt = now;
      this.suppressed = 0;
      return { log: true, suppressed };
    }
    this.suppressed += 1;
    return { log: false };
  }

  /** A commit went through; true when it ends a run of failures (worth one line). */
  succeeded(): boolean {
    if (!this.failing) return false;
    this.failing = false;
    this.lastLogAt = undefined;
    this.suppressed = 0;
    return true;
  }
}
