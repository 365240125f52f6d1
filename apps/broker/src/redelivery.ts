// QoS 1 publishes the broker PUBACKed and then could not store (a full disk under its SQLite
// persistence): their clients will not send them again, and the journal holds the only copy. They
// are published again from the journal, oldest first, with backoff, until storing them goes
// through; only then is their journal entry cleared. Without this they would wait for a restart.
import { backoffDelay } from '@ferry/runtime';
import type { BackoffPolicy, Logger } from '@ferry/runtime';

/** What the journal keeps of a publish. */
export interface JournaledPublish {
  readonly topic: string;
  readonly payload: Buffer;
  readonly retain: boolean;
}

export interface RedeliveryOptions {
  /** Publishes through the broker's whole pipeline (retained, session queues, subscribers); rejects if it could not store it. */
  readonly publish: (packet: JournaledPublish) => Promise<void>;
  /** The entry may leave the journal. */
  readonly delivered: (seq: number) => void;
  readonly retry: BackoffPolicy;
  readonly logger: Logger;
  readonly random?: () => number;
}

export interface Redelivery {
  /** Journal entry `seq` failed after its PUBACK: publish it again. */
  add(seq: number, packet: JournaledPublish): void;
  /** Entries waiting to be published again. */
  readonly pending: number;
  stop(): void;
}

export function createRedelivery(options: RedeliveryOptions): Redelivery {
  const { logger } = options;
  const waiting = new Map<number, JournaledPublish>();
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let attempt = 0;
  let stopped = false;

  function schedule(): void {
    if (stopped || timer || running || waiting.size === 0) return;
    const delayMs = backoffDelay(attempt++, options.retry, options.random);
    timer = setTimeout(() => {
      timer = undefined;
      void run();
    }, delayMs);
    timer.unref();
  }

  async function run(): Promise<void> {
    running = true;
    try {
      // In seq order (a Map keeps insertion order, and entries fail in the order they were journaled).
      for (const [seq, packet] of [...waiting].sort(([a], [b]) => a - b)) {
        if (stopped) return;
        try {
          await options.publish(packet);
        } catch {
          // Storage still fails: the rest wait too, and all are tried again after a longer pause.
          return;
        }
        waiting.delete(seq);
        options.delivered(seq);
      }
      if (attempt > 0) logger.info({ event: 'journal_redelivered' }, 'publishes that could not be stored after their PUBACK are stored and relayed now');
      attempt = 0;
    } finally {
      running = false;
      schedule();
    }
  }

  return {
    add(seq, packet) {
      if (stopped) return;
      if (waiting.size === 0) {
        logger.warn({ event: 'journal_redelivery', seq, topic: packet.topic }, 'a PUBACKed QoS 1 publish could not be stored; the journal keeps it, published again once storage works');
      }
      waiting.set(seq, packet);
      schedule();
    },
    get pending() {
      return waiting.size;
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}
