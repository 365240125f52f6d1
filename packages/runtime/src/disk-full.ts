// A full disk under a service's SQLite files, told apart from other storage failures, and how long
// it has lasted: what the ingestor and the broker report in /healthz and /metrics. Pure: time
// comes from the injected Clock; the caller says which writes failed and which went through.

import type { Clock } from './clock.js';

/** True for the errors a full disk produces, in SQLite's words or the OS's. */
export function isDiskFull(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (code === 'SQLITE_FULL' || code === 'ENOSPC') return true;
    if (/database or disk is full|ENOSPC|no space left/i.test(e.message)) return true;
    const details = (e as { details?: { sqlite?: unknown; sqliteCode?: unknown } }).details;
    if (details?.sqlite === 'SQLITE_FULL' || details?.sqliteCode === 'SQLITE_FULL') return true;
  }
  return false;
}

export interface DiskFullReport {
  /** Some store's last write failed for lack of space, or one did less than `holdMs` ago. */
  readonly full: boolean;
  /** Epoch ms of the first such failure of the current episode; null when not full. */
  readonly since: number | null;
  /** The latest such failure (kept after the episode ends, for the record); null if none yet. */
  readonly lastError: string | null;
  readonly lastErrorAt: number | null;
  /** Stores whose last write failed for lack of space, by name. */
  readonly stores: readonly string[];
  /** Writes that failed for lack of space since the process started. */
  readonly failures: number;
}

/** What a failed write meant: the first of a full-disk episode, one more of it, or another failure. */
export type DiskFullVerdict = 'began' | 'full' | 'other';

/**
 * Full-disk state of a service's stores. A store is failing from a write refused for lack of space
 * until a later write to it goes through. The service counts as full while any store is failing
 * and for `holdMs` after the last refusal: on a nearly full disk some small commits still fit
 * (SQLite reuses WAL space it already has), and the state should not flicker with each of them.
 */
export class DiskFullState {
  private readonly failing = new Map<string, number>();
  private episodeSince: number | undefined;
  /** An episode began and its end was not reported yet. */
  private open = false;
  private lastFailureAt: number | undefined;
  private lastMessage: string | undefined;
  private failureCount = 0;

  constructor(
    private readonly clock: Clock,
    private readonly holdMs = 10_000,
  ) {}

  /** A write to `store` failed; only a full disk changes the state. */
  failed(store: string, err: unknown): DiskFullVerdict {
    if (!isDiskFull(err)) return 'other';
    const began = !this.full;
    const now = this.clock.now();
    if (began) {
      this.episodeSince = now;
      this.open = true;
    }
    if (!this.failing.has(store)) this.failing.set(store, now);
    this.lastFailureAt = now;
    this.lastMessage = err instanceof Error ? err.message : String(err);
    this.failureCount += 1;
    return began ? 'began' : 'full';
  }

  /**
   * A write to `store` went through. True once per episode, for the write that ends it: the first
   * to go through with no store failing and the hold past (worth one log line).
   */
  succeeded(store: string): boolean {
    this.failing.delete(store);
    if (!this.open || this.full) return false;
    this.open = false;
    return true;
  }

  get full(): boolean {
    if (this.failing.size > 0) return true;
    return this.lastFailureAt !== undefined && this.clock.now() - this.lastFailureAt < this.holdMs;
  }

  get failures(): number {
    return this.failureCount;
  }

  report(): DiskFullReport {
    const full = this.full;
    return {
      full,
      since: full ? (this.episodeSince ?? null) : null,
      lastError: this.lastMessage ?? null,
      lastErrorAt: this.lastFailureAt ?? null,
      stores: [...this.failing.keys()],
      failures: this.failureCount,
    };
  }
}
