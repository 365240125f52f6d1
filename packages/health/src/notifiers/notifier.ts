// The Notifier seam: log, webhook and MQTT implement it; the hub sends to all of them without
// letting a slow or failing one hold up the others.
import type { Logger } from '@ferry/runtime';
import type { AlertNotification } from '../alerts.js';

export interface Notifier {
  readonly name: string;
  /** Delivers a batch; rejects when it could not (after its own retries). */
  notify(batch: readonly AlertNotification[]): Promise<void>;
  close?(): Promise<void>;
}

export interface NotifierHub {
  /** Queues the batch for every notifier; returns at once. */
  send(batch: readonly AlertNotification[]): void;
  /** Resolves when every queued batch was delivered or given up on. */
  idle(): Promise<void>;
  /** Delivered and failed batches per notifier, this run. */
  stats(): Record<string, { delivered: number; failed: number }>;
  close(): Promise<void>;
}

export function createNotifierHub(notifiers: readonly Notifier[], logger: Logger): NotifierHub {
  // One chain per notifier: each keeps its own order, none waits for another.
  const chains = new Map<Notifier, Promise<void>>(notifiers.map((n) => [n, Promise.resolve()]));
  const counts: Record<string, { delivered: number; failed: number }> = Object.fromEntries(notifiers.map((n) => [n.name, { delivered: 0, failed: 0 }]));
  return {
    send(batch) {
      if (batch.length === 0) return;
      for (const notifier of notifiers) {
        const previous = chains.get(notifier) ?? Promise.resolve();
        const next = previous.then(async () => {
          const count = counts[notifier.name] ?? { delivered: 0, failed: 0 };
          try {
            await notifier.notify(batch);
            count.delivered++;
          } catch (err) {
            count.failed++;
            logger.error({ notifier: notifier.name, err: err instanceof Error ? err.message : String(err), alerts: batch.length }, 'notifier failed; the other notifiers are not affected');
          }
        });
        chains.set(notifier, next);
      }
    },
    async idle() {
      await Promise.all(chains.values());
    },
    stats() {
      return structuredClone(counts);
    },
    async close() {
      await Promise.all(chains.values());
      await Promise.allSettled(notifiers.map((n) => (n.close ? n.close() : Promise.resolve())));
    },
  };
}
