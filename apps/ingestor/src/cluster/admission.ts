// Scale-out, stage 0 of a gateway batch: which ingestor takes it. A gateway is processed by one
// ingestor at a time, the holder of its lease in Redis (leases.ts); this stage takes the lease
// before the batch enters the pipeline, keeps the gateway's batches in arrival order while it
// waits, and lets the lease go when the gateway is quiet here.
//
// Two ways the broker hands out batches (`mode`):
// - `leases` (every ingestor gets every batch: the Ferry broker, aedes has no $share): only the
//   gateway's preferred ingestor among the live ones (rendezvous hashing, rendezvous.ts) takes a
//   free lease; the others drop the batch unread. A holder keeps its gateways while it lives, and
//   lets one go when it is quiet and another member is now preferred (a member joined). When a
//   holder dies its lease expires and the gateway's next resend goes to the new preferred one.
// - `shared` (MQTT 5 shared subscription, Mosquitto 2 / EMQX: each batch reaches one ingestor):
//   whoever receives a batch takes the lease, waiting (bounded) while another ingestor holds it,
//   and lets it go once the gateway has nothing in flight here, so the next batch may be taken by
//   any of them.
// A batch dropped here is never acked, so the gateway resends it: nothing is lost by dropping.
import type { Clock, Logger } from '@ferry/runtime';

/** The lease operations admission needs (leases.ts). */
export interface LeaseGate {
  acquire(source: string): Promise<boolean>;
  holds(source: string): boolean;
  release(source: string): Promise<void>;
  held(): readonly string[];
}

export type AdmissionMode = 'leases' | 'shared';

export type AdmissionDrop = 'not-preferred' | 'lease-busy' | 'closing';

export interface AdmissionOptions {
  readonly mode: AdmissionMode;
  readonly leases: LeaseGate;
  /** The gateway's preferred ingestor among the live ones is this one (mode leases). */
  readonly preferred: (gatewayId: string) => boolean;
  /** Hands the batch to the pipeline (synchronous). */
  readonly accept: (topic: string, payload: Buffer) => void;
  /** Batches of the gateway taken by the pipeline and not acked yet. */
  readonly inFlight: (gatewayId: string) => number;
  /** Called once this ingestor holds a gateway it did not hold before: cached records may be stale. */
  readonly onTaken: (gatewayId: string) => void;
  /** How long a batch waits for a lease another ingestor holds (mode shared) before it is dropped. */
  readonly waitMs: number;
  /** A quiet gateway's lease is let go after this long (mode shared). */
  readonly lingerMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly onDrop?: (why: AdmissionDrop, batches: number) => void;
}

export interface Admission {
  admit(gatewayId: string, topic: string, payload: Buffer): void;
  /** The pipeline acked a batch of the gateway (or gave it up): the lease may go. */
  settled(gatewayId: string): void;
  /** Members changed: quiet gateways now preferred elsewhere are let go (mode leases). */
  rebalance(): void;
  /**
   * While this ingestor cannot take batches (its broker connection is down) it keeps none of its
   * gateways but those with batches still in flight here, each let go once they are acked.
   */
  setActive(active: boolean): void;
  /** Batches waiting for a lease. */
  readonly waiting: number;
  close(): void;
}

interface Queue {
  readonly items: { topic: string; payload: Buffer }[];
  running: boolean;
  releaseTimer: NodeJS.Timeout | undefined;
}

/** Between tries for a lease held elsewhere: 50 ms doubling to 800 ms. */
function retryDelayMs(attempt: number): number {
  return Math.min(800, 50 * 2 ** Math.min(4, attempt));
}

export function createAdmission(options: AdmissionOptions): Admission {
  const { leases, logger, clock } = options;
  const queues = new Map<string, Queue>();
  let waiting = 0;
  let closed = false;
  let active = true;

  function drop(gatewayId: string, queue: Queue, why: AdmissionDrop): void {
    const n = queue.items.length;
    queue.items.length = 0;
    waiting -= n;
    if (n > 0) options.onDrop?.(why, n);
    if (why === 'lease-busy') logger.debug({ gatewayId, batches: n }, 'gateway held by another ingestor; batches dropped, the gateway resends them');
  }

  function flush(queue: Queue): void {
    for (const item of queue.items.splice(0)) {
      waiting--;
      options.accept(item.topic, item.payload);
    }
  }

  async function take(gatewayId: string, queue: Queue): Promise<void> {
    queue.running = true;
    try {
      let attempt = 0;
      const since = clock.now();
      while (queue.items.length > 0 && !closed) {
        if (leases.holds(gatewayId)) {
          flush(queue);
          break;
        }
        if (options.mode === 'leases' && !options.preferred(gatewayId)) {
          drop(gatewayId, queue, 'not-preferred');
          break;
        }
        const got = await leases.acquire(gatewayId);
        if (got) {
          options.onTaken(gatewayId);
          flush(queue);
          break;
        }
        if (options.mode === 'leases' || clock.now() - since >= options.waitMs) {
          drop(gatewayId, queue, 'lease-busy');
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, retryDelayMs(attempt++)));
      }
      if (closed) drop(gatewayId, queue, 'closing');
    } catch (err) {
      logger.warn({ err, gatewayId }, 'could not take the gateway lease; batches dropped, the gateway resends them');
      drop(gatewayId, queue, 'lease-busy');
    } finally {
      queue.running = false;
      // A batch that came in while the last try was answered.
      if (queue.items.length > 0 && !closed) void take(gatewayId, queue);
      else scheduleRelease(gatewayId, queue);
    }
  }

  function scheduleRelease(gatewayId: string, queue: Queue): void {
    if (queue.running || queue.items.length > 0 || queue.releaseTimer || options.inFlight(gatewayId) > 0) return;
    if (!leases.holds(gatewayId)) {
      queues.delete(gatewayId);
      return;
    }
    const keep = active && options.mode === 'leases' && options.preferred(gatewayId);
    if (keep) return;
    queue.releaseTimer = setTimeout(() => {
      queue.releaseTimer = undefined;
      if (queue.running || queue.items.length > 0 || options.inFlight(gatewayId) > 0) return;
      queues.delete(gatewayId);
      leases.release(gatewayId).catch((err: unknown) => logger.warn({ err, gatewayId }, 'gateway lease not released; it expires by itself'));
    }, options.lingerMs);
    queue.releaseTimer.unref();
  }

  function queueOf(gatewayId: string): Queue {
    let queue = queues.get(gatewayId);
    if (!queue) queues.set(gatewayId, (queue = { items: [], running: false, releaseTimer: undefined }));
    return queue;
  }

  return {
    admit(gatewayId, topic, payload) {
      if (closed) return;
      const queue = queueOf(gatewayId);
      if (queue.releaseTimer) {
        clearTimeout(queue.releaseTimer);
        queue.releaseTimer = undefined;
      }
      // The common case: held, nothing waiting ahead of it.
      if (!queue.running && queue.items.length === 0 && leases.holds(gatewayId)) {
        options.accept(topic, payload);
        return;
      }
      queue.items.push({ topic, payload });
      waiting++;
      if (!queue.running) void take(gatewayId, queue);
    },
    settled(gatewayId) {
      const queue = queues.get(gatewayId) ?? (leases.holds(gatewayId) ? queueOf(gatewayId) : undefined);
      if (queue) scheduleRelease(gatewayId, queue);
    },
    rebalance() {
      for (const gatewayId of leases.held()) this.settled(gatewayId);
    },
    setActive(now) {
      if (active === now) return;
      active = now;
      if (!now) this.rebalance();
    },
    get waiting() {
      return waiting;
    },
    close() {
      closed = true;
      for (const [gatewayId, queue] of queues) {
        if (queue.releaseTimer) clearTimeout(queue.releaseTimer);
        drop(gatewayId, queue, 'closing');
      }
      queues.clear();
    },
  };
}
