// MQTT notifier: each alert change as JSON (the Alertmanager alert shape, see docs/health.md) on
// `<topic>/<rule>/<subject>` at QoS 1, over a client the caller connects (MQTT.js's fits and
// reconnects on its own). While the broker is away, alert messages wait in a bounded queue and go
// out in order once the client is connected again; when the queue is full the oldest is dropped
// and counted. notify() never waits longer than `waitMs`, so the hub's queue for it stays short.
import { alertmanagerAlert } from './alertmanager.js';
import type { Notifier } from './notifier.js';

export interface AlertPublisher {
  readonly connected: boolean;
  publishAsync(topic: string, message: string | Buffer, options: { qos: 0 | 1 | 2; retain?: boolean }): Promise<unknown>;
  on(event: 'connect', listener: () => void): unknown;
  removeListener(event: 'connect', listener: () => void): unknown;
}

export interface MqttNotifierOptions {
  readonly client: AlertPublisher;
  /** Topic prefix, e.g. `ferry/alerts`. */
  readonly topic: string;
  /** Retained: a subscriber joining later sees the latest state of each alert. */
  readonly retain?: boolean;
  /** Alert messages held while the broker is away; beyond this the oldest are dropped. */
  readonly maxQueued?: number;
  /** How long notify() waits for the broker's acks before it reports the batch undelivered (it stays queued). */
  readonly waitMs?: number;
}

export interface MqttNotifier extends Notifier {
  /** Messages waiting for the broker now (the one being published included). */
  readonly queued: number;
  /** Messages the broker acknowledged, this run. */
  readonly published: number;
  /** Messages dropped because the queue was full, this run. */
  readonly dropped: number;
}

export const MQTT_NOTIFIER_DEFAULTS = { maxQueued: 1000, waitMs: 10_000 } as const;

interface Outgoing {
  readonly topic: string;
  readonly payload: string;
  readonly settle: (delivered: boolean) => void;
}

/** MQTT topic levels cannot carry wildcards; device ids may hold `/`, which is kept as levels. */
function level(text: string): string {
  return text.replace(/[#+]/g, '_');
}

/** Resolves with the work's value, or with `undefined` once `ms` passed. */
async function within<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function createMqttNotifier(options: MqttNotifierOptions): MqttNotifier {
  const { client } = options;
  const maxQueued = options.maxQueued ?? MQTT_NOTIFIER_DEFAULTS.maxQueued;
  const waitMs = options.waitMs ?? MQTT_NOTIFIER_DEFAULTS.waitMs;
  const retain = options.retain ?? false;
  const queue: Outgoing[] = [];
  let inFlight: Outgoing | undefined;
  let draining = false;
  let closed = false;
  let published = 0;
  let dropped = 0;

  function enqueue(item: Outgoing): void {
    queue.push(item);
    while (queue.length > maxQueued) {
      queue.shift()?.settle(false);
      dropped++;
    }
  }

  // One message in flight at a time keeps the order and keeps MQTT.js's own (unbounded) offline
  // store down to that one; it resends it after a reconnect, so the await simply lasts longer.
  async function drain(): Promise<void> {
    if (draining) return;
    draining = true;
    try {
      while (!closed && client.connected) {
        const next = queue.shift();
        if (!next) break;
        inFlight = next;
        try {
          await client.publishAsync(next.topic, next.payload, { qos: 1, retain });
        } catch {
          // Not acknowledged (the client was ended under it): first in line for the next connection.
          if (!closed) queue.unshift(next);
          else next.settle(false);
          break;
        } finally {
          inFlight = undefined;
        }
        published++;
        next.settle(true);
      }
    } finally {
      draining = false;
    }
  }

  const onConnect = (): void => {
    void drain();
  };
  client.on('connect', onConnect);

  return {
    name: 'mqtt',
    get queued() {
      return queue.length + (inFlight ? 1 : 0);
    },
    get published() {
      return published;
    },
    get dropped() {
      return dropped;
    },
    async notify(batch) {
      if (closed) throw new Error('mqtt notifier is closed');
      const delivered = batch.map(
        ({ status, alert }) =>
          new Promise<boolean>((settle) => {
            const topic = `${options.topic}/${level(alert.rule)}/${level(alert.subject.id)}`;
            enqueue({ topic, payload: JSON.stringify(alertmanagerAlert(status, alert)), settle });
          }),
      );
      void drain();
      const waiting = (): string => `${queue.length + (inFlight ? 1 : 0)} alert messages queued for when it is back`;
      if (!client.connected) throw new Error(`mqtt notifier: broker unreachable; ${waiting()}`);
      const outcome = await within(Promise.all(delivered), waitMs);
      if (outcome === undefined) throw new Error(`mqtt notifier: no ack within ${waitMs} ms; ${waiting()}`);
      if (outcome.includes(false)) throw new Error(`mqtt notifier: queue full (${maxQueued}); ${dropped} alert messages dropped so far`);
    },
    close() {
      closed = true;
      client.removeListener('connect', onConnect);
      for (const item of queue.splice(0)) item.settle(false);
      return Promise.resolve();
    },
  };
}
