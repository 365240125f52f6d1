// Direct-device intake: moves journaled device messages into the pipeline, at most `maxInMemory`
// at a time, and deletes each journal row once its reading is settled (written, duplicate or
// dead-lettered). On start it takes whatever a previous run left in the journal. A row that cannot
// be taken (its dead letter cannot be filed: a full disk) is taken again after a backoff, in order.
import { backoffDelay } from '@ferry/runtime';
import type { BackoffPolicy, Logger } from '@ferry/runtime';
import type { DeviceJournal } from './journal.js';
import type { Pipeline } from './pipeline.js';

export interface DirectIntake {
  /** Takes the rows already in the journal and follows new appends. */
  start(): void;
  /** Stops taking rows; what is in memory and unsettled stays in the journal for the next run. */
  stop(): void;
  /** Journal rows taken into memory and not settled yet. */
  readonly inMemory: number;
}

export interface DirectIntakeOptions {
  readonly journal: DeviceJournal;
  readonly pipeline: Pipeline;
  readonly maxInMemory: number;
  readonly logger: Logger;
  /** Between tries of a row that could not be taken. */
  readonly retry?: BackoffPolicy;
}

/** Rows read from the journal per query. */
const READ_CHUNK = 1000;

const DEFAULT_RETRY: BackoffPolicy = { initialMs: 200, maxMs: 5_000, factor: 2 };

export function createDirectIntake(options: DirectIntakeOptions): DirectIntake {
  const { journal, pipeline, logger } = options;
  let cursor = 0;
  let inMemory = 0;
  let running = false;
  let scheduled = false;
  /** Set while waiting to take a row again; consecutive failures set the delay. */
  let retryTimer: NodeJS.Timeout | undefined;
  let failures = 0;

  function schedule(): void {
    if (scheduled || !running) return;
    scheduled = true;
    // Deferred: settle callbacks run inside the writer's confirm, which must not re-enter the writer.
    setImmediate(() => {
      scheduled = false;
      feed();
    });
  }

  function feed(): void {
    // Waiting to take a failed row again: nothing after it goes first.
    if (retryTimer) return;
    while (running && inMemory < options.maxInMemory) {
      const rows = journal.read(cursor, Math.min(READ_CHUNK, options.maxInMemory - inMemory));
      if (rows.length === 0) return;
      for (const row of rows) {
        cursor = row.id;
        inMemory++;
        try {
          pipeline.acceptDirect(row, () => {
            inMemory--;
            journal.remove(row.id);
            schedule();
          });
        } catch (err) {
          // Local storage failed (dead-letter store): the row stays in the journal, and it and the
          // rows after it are taken again after a backoff.
          inMemory--;
          cursor = row.id - 1;
          const delayMs = backoffDelay(failures++, options.retry ?? DEFAULT_RETRY);
          if (failures === 1) logger.error({ err, journalId: row.id, topic: row.topic, delayMs }, 'device message could not be taken; it stays in the journal and is taken again');
          retryTimer = setTimeout(() => {
            retryTimer = undefined;
            feed();
          }, delayMs);
          retryTimer.unref();
          return;
        }
        failures = 0;
      }
    }
  }

  journal.onAppended(schedule);

  return {
    start() {
      running = true;
      feed();
    },
    stop() {
      running = false;
      if (retryTimer) clearTimeout(retryTimer);
      retryTimer = undefined;
    },
    get inMemory() {
      return inMemory;
    },
  };
}
