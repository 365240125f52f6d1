// Storage failures (a full disk, an unwritable file) are logged loudly but at a bounded rate: a
// full SD card fails every group commit, and one log line per commit would fill what is left.
// Pure: time comes from the injected Clock.
import { LogThrottle } from '@ferry/runtime';
import type { Clock, ThrottleVerdict } from '@ferry/runtime';

export type StorageAlarmVerdict = ThrottleVerdict;

export class StorageAlarm {
  private readonly throttle: LogThrottle;
  private failing = false;
  /** Failures since the gateway started. */
  failures = 0;

  constructor(clock: Clock, intervalMs: number) {
    this.throttle = new LogThrottle(clock, intervalMs);
  }

  failed(): StorageAlarmVerdict {
    this.failures += 1;
    this.failing = true;
    return this.throttle.hit();
  }

  /** A commit went through; true when it ends a run of failures (worth one line). */
  succeeded(): boolean {
    if (!this.failing) return false;
    this.failing = false;
    this.throttle.reset();
    return true;
  }
}
