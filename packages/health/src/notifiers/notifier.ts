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

export interface NotifierStats {
  delivered: number;
  failed: number;
  /** Batches discarded unsent: beyond the queue bound, or still queued when close() gave up. */
  dropped: number;
}

export interface NotifierHub {
  /** Queues the batch for every notifier; returns at once. */
  send(batch: readonly AlertNotification[]): void;
  /** Resolves when every queued batch was delivered or given up on. */
  idle(): Promise<void>;
  /** Delivered, failed and dropped batches per notifier, this run. */
  stats(): Record<string, NotifierStats>;
  /** Waits up to `closeTimeoutMs` for queued batches, then closes the notifiers and drops what is left. */
  close(): Promise<void>;
}

export interface NotifierHubOptions {
  /** Batches waiting per notifier; beyond this the oldest is dropped (a dead webhook must not grow memory). */
  readonly maxQueued?: number;
  readonly closeTimeoutMs?: number;
}

export const NOTIFIER_HUB_DEFAULTS = { maxQueued: 100, closeTimeoutMs: 10_000 } as const;

interface Lane {
  readonly notifier: Notifier;
  readonly queue: (readonly AlertNotification[])[];
  readonly counts: NotifierStats;
  running: Promise<void> | undefined;
  /** The queue overflowed since it last ran empty: logged once per episode. */
  overflowing: boolean;
}

export function createNotifierHub(notifiers: readonly Notifier[], logger: Logger, options: NotifierHubOptions = {}): NotifierHub {
  const maxQueued = options.maxQueued ?? NOTIFIER_HUB_DEFAULTS.maxQueued;
  const closeTimeoutMs = options.closeTimeoutMs ?? NOTIFIER_HUB_DEFAULTS.closeTimeoutMs;
  // One lane per notifier: each keeps its own order, none waits for another.
  const lanes: Lane[] = notifiers.map((notifier) => ({ notifier, queue: [], counts: { delivered: 0, failed: 0, dropped: 0 }, running: undefined, overflowing: false }));
  let closing = false;

  async function drain(lane: Lane): Promise<void> {
    for (let batch = lane.queue.shift(); batch; batch = lane.queue.shift()) {
      try {
        await lane.notifier.notify(batch);
        lane.counts.delivered++;
      } catch (err) {
        lane.counts.failed++;
        logger.error({ notifier: lane.notifier.name, err: err instanceof Error ? err.message : String(err), alerts: batch.length }, 'notifier failed; the other notifiers are not affected');
      }
    }
    lane.overflowing = false;
  }

  function start(lane: Lane): void {
    if (lane.running) return;
    lane.running = Promise.resolve()
      .then(() => drain(lane))
      .finally(() => {
        lane.running = undefined;
        if (lane.queue.length > 0 && !closing) start(lane);
      });
  }

  function running(): Promise<void>[] {
    return lanes.flatMap((l) => (l.running ? [l.running] : []));
  }

  async function idle(): Promise<void> {
    // A lane that ran empty may start again from its own finally: look until none runs.
    for (let busy = running(); busy.length > 0; busy = running()) await Promise.all(busy);
  }

  return {
    send(batch) {
      if (batch.length === 0 || closing) return;
      for (const lane of lanes) {
        lane.queue.push(batch);
        if (lane.queue.length > maxQueued) {
          lane.queue.shift();
          lane.counts.dropped++;
          if (!lane.overflowing) logger.warn({ notifier: lane.notifier.name, maxQueued }, 'notifier falling behind; its oldest queued alert batches are dropped (counted)');
          lane.overflowing = true;
        }
        start(lane);
      }
    },
    idle,
    stats() {
      return Object.fromEntries(lanes.map((l) => [l.notifier.name, { ...l.counts }]));
    },
    async close() {
      await within(idle(), closeTimeoutMs);
      closing = true;
      for (const lane of lanes) {
        const left = lane.queue.splice(0).length;
        lane.counts.dropped += left;
        if (left > 0) logger.warn({ notifier: lane.notifier.name, batches: left }, 'closing: alert batches not sent');
      }
      // Closing a notifier ends its retries, so a batch still in flight settles soon after.
      await Promise.allSettled(notifiers.map((n) => (n.close ? n.close() : Promise.resolve())));
      await within(Promise.allSettled(running()), closeTimeoutMs);
    },
  };
}

/** Waits for the work, or `ms`, whichever comes first. */
async function within(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  try {
    await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
