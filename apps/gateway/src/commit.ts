// Stage 3, commit: readings from many device publishes share one SQLite transaction (a group
// commit), and each publish is acknowledged only once the transaction holding it has committed.
import { FerryError } from '@ferry/protocol';
import type { DeviceReading } from '@ferry/protocol';
import type { AppendResult, Outbox, SavedSeriesState } from './outbox.js';

/**
 * Edge processing before the outbox: what a device message's readings become, and the operator
 * state to save in the same transaction. Runs when the group commits, so the state and the
 * readings it produced are durable together, or neither is and the state is rolled back.
 */
export interface CommitProcessing {
  process(readings: readonly DeviceReading[]): DeviceReading[];
  takeState(): SavedSeriesState[];
  /** The group was not stored: undo what process() did to the state since the last commit. */
  rollback(): void;
}

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
  readonly processing?: CommitProcessing;
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

/** Each message's readings through the pipelines; a message may now store fewer (even none) or more. */
function processMessages(
  processing: CommitProcessing,
  group: readonly DeviceReading[],
  waiting: ReadonlyArray<{ done: CommitCallback; count: number }>,
): { group: DeviceReading[]; waiting: Array<{ done: CommitCallback; count: number }> } {
  const out: DeviceReading[] = [];
  const counted: Array<{ done: CommitCallback; count: number }> = [];
  let start = 0;
  for (const { done, count } of waiting) {
    const produced = processing.process(group.slice(start, start + count));
    start += count;
    for (const r of produced) out.push(r);
    counted.push({ done, count: produced.length });
  }
  return { group: out, waiting: counted };
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
    let group = readings;
    let waiting = callbacks;
    readings = [];
    callbacks = [];
    const { processing } = options;
    let result: AppendResult;
    try {
      if (processing) ({ group, waiting } = processMessages(processing, group, waiting));
      result = options.outbox.append(group, {
        ...(options.inFlight ? { inFlight: options.inFlight } : {}),
        ...(processing ? { pipelineState: processing.takeState() } : {}),
      });
    } catch (err) {
      processing?.rollback();
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
      processing?.rollback();
      const full = new FerryError('FERRY_ERR_OUTBOX_FULL', `the outbox is full; ${group.length - stored} reading(s) refused, publish again later`, {
        refused: group.length - stored,
      });
      options.onRefused?.(group.length - stored);
      // A message is acknowledged only when all its readings were stored (the outbox stores a
      // group whole or not at all); the others are not, and their devices publish again.
      let end = 0;
      for (const { done, count } of waiting) {
        end += count;
        // With edge processing the group's state was rolled back, so none of it counts as handled.
        done(end <= stored && !processing ? null : full);
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
