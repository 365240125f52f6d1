// An in-memory Sink for the pipeline tests: keyed like a time-series database (series + timestamp),
// so writing the same point twice overwrites it. It can be taken down or told to refuse points.
import { FerryError } from '@ferry/protocol';
import type { Point, Sink, SinkWriteResult } from '@ferry/sinks';

export class MemorySink implements Sink {
  readonly description = 'memory';
  readonly points = new Map<string, Point>();
  /** Every write call, including failed ones. */
  writeCalls = 0;
  down = false;
  retryAfterMs: number | undefined;
  refuse: (point: Point) => string | undefined = () => undefined;
  private waiters: (() => void)[] = [];

  static key(p: Point): string {
    const tags = Object.entries(p.tags)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    return `${p.measurement},${tags} ${p.timestampNs}`;
  }

  async write(points: readonly Point[]): Promise<SinkWriteResult> {
    this.writeCalls++;
    this.wake();
    if (this.down) {
      throw new FerryError('FERRY_ERR_SINK_UNAVAILABLE', 'memory sink is down', this.retryAfterMs !== undefined ? { retryAfterMs: this.retryAfterMs } : {});
    }
    const rejected: { index: number; reason: string }[] = [];
    points.forEach((p, index) => {
      const reason = this.refuse(p);
      if (reason !== undefined) rejected.push({ index, reason });
      else this.points.set(MemorySink.key(p), p);
    });
    return { written: points.length - rejected.length, rejected };
  }

  async ping(): Promise<boolean> {
    return !this.down;
  }

  async close(): Promise<void> {}

  /** Resolves at the next write call (successful or not). */
  nextWrite(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
