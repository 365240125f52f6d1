// Stage 3, commit: readings from many device publishes share one SQLite transaction (a group
// commit), and each publish is acknowledged only once the transaction holding it has committed.
import { FerryError } from '@ferry/protocol';
import type { DeviceReading } from '@ferry/protocol';
import type { AppendResult, Outbox } from './outbox.js';

/** Called once the reading is durable (null) or could not be stored (an error). */
export type CommitCallback = (err: Error | null) => void;

export interface GroupCommitterOptions {
  readonly outbox: Outbox;
  /** How long the first reading of a group waits for others; 0 commits on the next turn of the event loop. */
  readonly lingerMs: number;
  /** A group this large commits at once. */
  readonly maxReadings: number;
  readonly onCommitted: (result: AppendResult) => void;
  readonly onError: (err: FerryError, readings: number) => void;
  /** Readings refused because the outbox is full (`whenFull: 'refuse-new'`); their devices were not acknowledged. */
  readonly onRefused?: (readings: number) => void;
  /** Rows the outbox bounds must keep: those in batches awaiting an ack. */
  readonly inFlight?: { has(seq: number): boolean };
}

export interface GroupCommitter {
  /**
   * Adds the readings of one device message; they always share one transaction, so a message is
   * stored whole or not at all and a device that publishes it again never doubles part of it.
   */
  add(message: readonly DeviceReading[], done: CommitCallback): void;
  /** Commits what is pending now. */
  flush(): void;
  readonly pending: number;
  /** Flushes, then refuses further readings with FERRY_ERR_NOT_READY. */
  close(): void;
}

export function createGroupCommitter(options: GroupCommitterOptions): GroupCommitter {
  let readings: DeviceReading[] = [];
  /** One per message: its callback and how many readings it put in `readings`. */
  let callbacks: Array<{ done: CommitCallback; count: number }> = [];
  let timer: NodeJS.Timeout | undefined;
  let immediate: NodeJS.Immediate | undefined;
  let closed = false;

  function cancelTimer(): void {
    if (timer) clearTimeout(timer);
    if (immediate) clearImmediate(immediate);
    timer = undefined;
    immediate = undefined;
  }

  function flush(): void {
    cancelTimer();
    if (readings.length === 0) return;
    const group = readings;
    const waiting = callbacks;
    readings = [];
    callbacks = [];
    let result: AppendResult;
    try {
      result = options.outbox.append(group, options.inFlight ? { inFlight: options.inFlight } : {});
    } catch (err) {
      const failure =
        err instanceof FerryError ? err : new FerryError('FERRY_ERR_STORAGE', `outbox commit failed: ${(err as Error).message}`, {}, { cause: err });
      options.onError(failure, group.length);
      // Not stored, so not acknowledged: the devices keep their copies and publish again.
      for (const { done } of waiting) done(failure);
      return;
    }
    const stored = result.seqs.length;
    if (stored > 0) options.onCommitted(result);
    if (stored < group.length) {
      const full = new FerryError('FERRY_ERR_OUTBOX_FULL', `the outbox is full; ${group.length - stored} reading(s) refused, publish again later`, {
        refused: group.length - stored,
      });
      options.onRefused?.(group.length - stored);
      // A message is acknowledged only when all its readings were stored (the outbox stores a
      // group whole or not at all); the others are not, and their devices publish again.
      let end = 0;
      for (const { done, count } of waiting) {
        end += count;
        done(end <= stored ? null : full);
      }
      return;
    }
    for (const { done } of waiting) done(null);
  }

  return {
    add(message, done) {
      if (closed) {
        done(new FerryError('FERRY_ERR_NOT_READY', 'the gateway is closing; publish again later'));
        return;
      }
      if (message.length === 0) {
        done(null);
        return;
      }
      readings.push(...message);
      callbacks.push({ done, count: message.length });
      if (readings.length >= options.maxReadings) flush();
      else if (!timer && !immediate) {
        if (options.lingerMs > 0) timer = setTimeout(flush, options.lingerMs);
        else immediate = setImmediate(flush);
      }
    },
    flush,
    get pending() {
      return readings.length;
    },
    close() {
      flush();
      closed = true;
    },
  };
}
