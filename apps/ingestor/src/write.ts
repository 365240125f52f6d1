// Stage 5, write: points from many batches are coalesced into chunks (up to maxPoints, or once the
// oldest has lingered lingerMs) and written to the Sink, retrying with backoff while the database
// is unavailable. Nothing is settled until the sink confirmed it, so while the database is down
// no ack leaves and the readings wait in the gateways' outboxes, the only durable copy.
import { performance } from 'node:perf_hooks';
import { isFerryError } from '@ferry/protocol';
import { backoffDelay } from '@ferry/runtime';
import type { BackoffPolicy, Clock } from '@ferry/runtime';
import type { Point, Sink, SinkWriteResult } from '@ferry/sinks';

export interface CoalescePolicy {
  readonly maxPoints: number;
  readonly lingerMs: number;
}

export interface WritePolicy extends CoalescePolicy {
  /** Chunks written at the same time. */
  readonly maxInFlight: number;
  readonly retry: BackoffPolicy;
}

/** Pure: the coalescing buffer. Decides when a chunk is due; the writer below owns the timers. */
export class WriteBuffer<T> {
  private items: T[] = [];
  private oldestAt: number | undefined;

  constructor(
    private readonly policy: CoalescePolicy,
    private readonly clock: Clock,
  ) {}

  get size(): number {
    return this.items.length;
  }

  push(items: readonly T[]): void {
    if (items.length === 0) return;
    if (this.items.length === 0) this.oldestAt = this.clock.now();
    for (const item of items) this.items.push(item);
  }

  /** The next chunk if one is due: a full one, or whatever lingered long enough, or anything when flushing. */
  take(flush = false): T[] | undefined {
    const due = this.dueAt();
    if (due === undefined || (!flush && due > this.clock.now())) return undefined;
    const chunk = this.items.splice(0, this.policy.maxPoints);
    // What remains arrived no later than the oldest taken, so it keeps that age.
    if (this.items.length === 0) this.oldestAt = undefined;
    return chunk;
  }

  /** When the next chunk becomes due (epoch ms), or undefined when empty. */
  dueAt(): number | undefined {
    if (this.items.length === 0 || this.oldestAt === undefined) return undefined;
    if (this.items.length >= this.policy.maxPoints) return this.clock.now();
    return this.oldestAt + this.policy.lingerMs;
  }
}

/** A server's retry-after is honoured, but a wild value must not park the writer for hours. */
const MAX_RETRY_AFTER_MS = 10 * 60_000;

/** Pure: how long to wait before retry `attempt` (0-based) after `err`; honours details.retryAfterMs. */
export function retryDelay(err: unknown, attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const backoff = backoffDelay(attempt, policy, random);
  const retryAfterMs = isFerryError(err) ? err.details.retryAfterMs : undefined;
  if (typeof retryAfterMs === 'number' && Number.isFinite(retryAfterMs) && retryAfterMs > 0) {
    return Math.min(Math.round(retryAfterMs), MAX_RETRY_AFTER_MS);
  }
  return backoff;
}

export interface WriteItem {
  /** null: nothing to write (processing removed every metric); the item is still confirmed with its chunk. */
  readonly point: Point | null;
}

export interface WriterEvents {
  written?(points: number, seconds: number): void;
  retry?(err: unknown, attempt: number, delayMs: number, stage: 'sink' | 'confirm' | 'intent' | 'present'): void;
  sinkState?(up: boolean): void;
  /** Points of a writer that died mid-write found in the database already, so not written again. */
  recovered?(points: number): void;
}

/**
 * Write intents (intents.ts): the writer notes each chunk before its first write, and asks the
 * database about readings a writer that is gone may have written already.
 */
export interface WriterIntents<T> {
  /** Durably notes the chunk is about to be written; its result goes to confirm(). Retried while it throws. */
  begin(chunk: readonly T[]): unknown;
  /**
   * When the item may be in the database from a writer that is gone: the time (epoch ms) by which
   * that write has surely landed or failed, so the database can be asked. Otherwise undefined.
   */
  askAfter(item: T): number | undefined;
  /** Resolves once the writers of these suspect items can no longer write (IntentLog.waitForWriters). */
  readonly waitForWriters?: ((items: readonly T[]) => Promise<void>) | undefined;
}

export interface WriterOptions<T extends WriteItem> {
  readonly sink: Sink;
  readonly policy: WritePolicy;
  readonly clock: Clock;
  /**
   * Called once the sink confirmed a chunk, to record and settle its items. If it throws (local
   * storage failed) it is called again with the same result until it goes through: each of its
   * steps must be one a second call may repeat.
   */
  readonly confirm: (chunk: readonly T[], result: SinkWriteResult, intent: unknown) => void;
  readonly intents?: WriterIntents<T> | undefined;
  readonly events?: WriterEvents;
  readonly random?: () => number;
}

export interface Writer<T extends WriteItem> {
  push(items: readonly T[]): void;
  /** Items buffered, not yet handed to the sink. */
  readonly queued: number;
  /** Chunks being written or waiting to retry. */
  readonly writing: number;
  /**
   * Flushes the buffer, waits up to timeoutMs for every chunk to be confirmed, then stops for
   * good. Resolves true when all was confirmed; what was not is simply never acked, and the
   * gateways resend it.
   */
  stop(timeoutMs: number): Promise<boolean>;
}

export function createWriter<T extends WriteItem>(options: WriterOptions<T>): Writer<T> {
  const { sink, policy, events = {} } = options;
  const buffer = new WriteBuffer<T>(policy, options.clock);
  let writing = 0;
  let flushing = false;
  let stopped = false;
  let lingerTimer: NodeJS.Timeout | undefined;
  const sleepers = new Set<() => void>();
  let idleWaiter: (() => void) | undefined;

  const isIdle = (): boolean => buffer.size === 0 && writing === 0;

  function pump(): void {
    if (stopped) return;
    while (writing < policy.maxInFlight) {
      const chunk = buffer.take(flushing);
      if (!chunk) break;
      writing++;
      void writeChunk(chunk).finally(() => {
        writing--;
        pump();
        if (isIdle()) idleWaiter?.();
      });
    }
    armLinger();
  }

  function armLinger(): void {
    if (lingerTimer) clearTimeout(lingerTimer);
    lingerTimer = undefined;
    const due = buffer.dueAt();
    // With every slot busy the next pump comes from a finishing chunk, not from a timer.
    if (stopped || due === undefined || writing >= policy.maxInFlight) return;
    lingerTimer = setTimeout(pump, Math.max(0, due - options.clock.now()));
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      sleepers.add(wake);
    });
  }

  /** Runs `step` until it succeeds, sleeping between tries; undefined once stopped. */
  async function untilDone<R>(stage: 'sink' | 'intent' | 'present', step: () => R | Promise<R>): Promise<{ value: R } | undefined> {
    for (let attempt = 0; !stopped; attempt++) {
      try {
        return { value: await step() };
      } catch (err) {
        if (stage !== 'intent') events.sinkState?.(false);
        if (stopped) return undefined;
        const delay = retryDelay(err, attempt, policy.retry, options.random);
        events.retry?.(err, attempt, delay, stage);
        await sleep(delay);
      }
    }
    return undefined;
  }

  /**
   * Which of the chunk items at `indices` the database holds already, asked once `askAfter` has
   * passed; undefined once stopped. Empty without Sink.present (a rewrite replaces the point).
   */
  async function lookFor(chunk: readonly T[], indices: readonly number[], askAfter: number, stage: 'sink' | 'present'): Promise<Set<number> | undefined> {
    const found = new Set<number>();
    if (!sink.present || indices.length === 0) return found;
    const wait = askAfter - options.clock.now();
    if (wait > 0) await sleep(wait);
    const present = sink.present.bind(sink);
    const answer = await untilDone(stage, () => present(indices.map((i) => chunk[i]!.point!)));
    if (!answer) return undefined;
    answer.value.forEach((there, k) => {
      if (there) found.add(indices[k]!);
    });
    if (found.size > 0) events.recovered?.(found.size);
    return found;
  }

  /** Items of a writer that is gone which may be in the database (WriterIntents.askAfter): looked for. */
  function lookForSuspects(chunk: readonly T[]): Promise<Set<number> | undefined> {
    const intents = options.intents;
    const asked: number[] = [];
    let askAfter = -Infinity;
    if (intents && sink.present) {
      chunk.forEach((item, i) => {
        if (!item.point) return;
        const at = intents.askAfter(item);
        if (at === undefined) return;
        asked.push(i);
        askAfter = Math.max(askAfter, at);
      });
    }
    if (asked.length > 0 && intents?.waitForWriters) {
      return intents.waitForWriters(asked.map((i) => chunk[i]!)).then(() => lookFor(chunk, asked, askAfter, 'present'));
    }
    return lookFor(chunk, asked, askAfter, 'present');
  }

  async function writeChunk(chunk: readonly T[]): Promise<void> {
    const intents = options.intents;
    const begun = intents ? await untilDone('intent', () => intents.begin(chunk)) : { value: undefined };
    if (!begun) return;
    const there = await lookForSuspects(chunk);
    if (!there) return;
    let points: Point[] = [];
    /** Chunk index of each point: rejections index the points, and some items may have none (or are there already). */
    let itemOf: number[] = [];
    const toWrite = (): void => {
      points = [];
      itemOf = [];
      chunk.forEach((item, i) => {
        if (!item.point || there.has(i)) return;
        points.push(item.point);
        itemOf.push(i);
      });
    };
    toWrite();
    let result: SinkWriteResult | undefined;
    let started = 0;
    for (let attempt = 0; result === undefined; attempt++) {
      if (stopped) return;
      if (attempt > 0 && points.length > 0) {
        // The failed try may have landed (a timeout after the database took the write): what it
        // holds now is not written a second time. While the database is down, asking fails like
        // writing (the same retries).
        const landed = await lookFor(chunk, itemOf, 0, 'sink');
        if (!landed) return;
        for (const i of landed) there.add(i);
        if (landed.size > 0) toWrite();
      }
      try {
        started = performance.now();
        result = points.length === 0 ? { written: 0, rejected: [] } : await sink.write(points);
      } catch (err) {
        events.sinkState?.(false);
        if (stopped) return;
        const delay = retryDelay(err, attempt, policy.retry, options.random);
        events.retry?.(err, attempt, delay, 'sink');
        await sleep(delay);
      }
    }
    if (points.length !== chunk.length) result = { written: result.written + there.size, rejected: result.rejected.map((r) => ({ ...r, index: itemOf[r.index] ?? r.index })) };
    if (points.length > 0) {
      events.sinkState?.(true);
      events.written?.(points.length, (performance.now() - started) / 1000);
    }
    // Test-only: die like kill -9 after the database confirmed and before anything is recorded
    // or acked, to prove the resend is not written twice (apps/ingestor/test/crash.test.ts).
    if (process.env.FERRY_TEST_CRASH_AFTER_WRITE === '1') process.kill(process.pid, 'SIGKILL');
    // The database has the chunk: only recording it is retried (never the write, which
    // VictoriaMetrics would keep twice). Stopped meanwhile, the stores may be closed: the resend
    // is judged then, its write intent still open.
    for (let attempt = 0; !stopped; attempt++) {
      try {
        options.confirm(chunk, result, begun.value);
        return;
      } catch (err) {
        const delay = retryDelay(err, attempt, policy.retry, options.random);
        events.retry?.(err, attempt, delay, 'confirm');
        await sleep(delay);
      }
    }
  }

  return {
    push(items) {
      if (stopped || items.length === 0) return;
      buffer.push(items);
      pump();
    },
    get queued() {
      return buffer.size;
    },
    get writing() {
      return writing;
    },
    async stop(timeoutMs) {
      if (stopped) return isIdle();
      flushing = true;
      pump();
      if (!isIdle()) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, timeoutMs);
          function done(): void {
            clearTimeout(timer);
            idleWaiter = undefined;
            resolve();
          }
          idleWaiter = done;
        });
      }
      const drained = isIdle();
      stopped = true;
      if (lingerTimer) clearTimeout(lingerTimer);
      for (const wake of [...sleepers]) wake();
      return drained;
    },
  };
}
