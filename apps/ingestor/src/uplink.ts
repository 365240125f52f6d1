// The ingestor's MQTT connection: a persistent session (clean: false, fixed client id) so batches
// published while the ingestor is down wait in the broker; QoS 1 subscriptions to every
// gateway's batches and statuses; acks published QoS 1.
//
// MQTT.js PUBACKs a batch as soon as the message handler returns, before the database has it.
// That is deliberate: the broker-level ack only moves the batch into our memory; the end-to-end
// ack (published once the database confirmed) is the delivery guarantee, and the gateway keeps
// every reading until it arrives, resending on timeout.
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import type { Ack } from '@ferry/protocol';
import { encodeAck, FerryError, uplinkTopics } from '@ferry/protocol';
import type { Logger } from '@ferry/runtime';

export interface UplinkOptions {
  readonly url: string;
  readonly clientId: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly logger: Logger;
  readonly onBatch: (topic: string, payload: Buffer) => void;
  readonly onStatus: (topic: string, payload: Buffer) => void;
  readonly onAckSent?: () => void;
}

export interface Uplink {
  /** Resolves once connected and subscribed; rejects with FERRY_ERR_NOT_READY after timeoutMs. */
  ready(timeoutMs: number): Promise<void>;
  readonly connected: boolean;
  publishAck(ack: Ack): void;
  /** Waits up to timeoutMs for outgoing acks to be PUBACKed, then disconnects. */
  close(timeoutMs: number): Promise<void>;
}

export function createUplink(options: UplinkOptions): Uplink {
  const { logger } = options;
  const client: MqttClient = mqtt.connect(options.url, {
    protocolVersion: 4,
    clean: false,
    clientId: options.clientId,
    ...(options.username !== undefined ? { username: options.username } : {}),
    ...(options.password !== undefined ? { password: options.password } : {}),
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    keepalive: 30,
    // We subscribe on every connect ourselves: with a persistent session that is idempotent,
    // and it also covers a broker that lost the session.
    resubscribe: false,
  });
  let subscribed = false;
  let lastError: Error | undefined;
  const readyWaiters = new Set<() => void>();

  client.on('message', (topic, payload) => {
    if (topic.endsWith('/batch')) options.onBatch(topic, payload);
    else if (topic.endsWith('/status')) options.onStatus(topic, payload);
  });
  client.on('connect', (connack) => {
    logger.info({ url: options.url, clientId: options.clientId, sessionPresent: connack.sessionPresent }, 'connected to broker');
    client.subscribe(
      { [uplinkTopics.allBatches]: { qos: 1 }, [uplinkTopics.allStatuses]: { qos: 1 } },
      (err, granted) => {
        const refused = granted?.filter((g) => g.qos === 128) ?? [];
        if (err || refused.length > 0) {
          lastError = err ?? new Error(`broker refused subscription to ${refused.map((g) => g.topic).join(', ')}`);
          logger.error({ err: lastError }, 'subscribe failed');
          return;
        }
        subscribed = true;
        for (const wake of readyWaiters) wake();
      },
    );
  });
  client.on('error', (err) => {
    lastError = err;
    logger.warn({ err: err.message }, 'broker connection error');
  });
  client.on('offline', () => logger.warn({ url: options.url }, 'broker unreachable; reconnecting'));

  return {
    get connected() {
      return client.connected;
    },
    async ready(timeoutMs) {
      if (subscribed) return;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          readyWaiters.delete(wake);
          reject(
            new FerryError(
              'FERRY_ERR_NOT_READY',
              `not subscribed to ${options.url} within ${timeoutMs} ms${lastError ? `: ${lastError.message}` : ''}`,
              { url: options.url, timeoutMs },
            ),
          );
        }, timeoutMs);
        function wake(): void {
          clearTimeout(timer);
          readyWaiters.delete(wake);
          resolve();
        }
        readyWaiters.add(wake);
      });
    },
    publishAck(ack) {
      // While disconnected MQTT.js queues the QoS 1 publish and sends it on reconnect; if it is
      // lost anyway, the gateway resends the batch and it is acked again as duplicates.
      client.publish(uplinkTopics.ack(ack.gatewayId), encodeAck(ack), { qos: 1 }, (err) => {
        if (err) logger.warn({ err: err.message, gatewayId: ack.gatewayId, batchId: ack.batchId }, 'ack not published');
        else options.onAckSent?.();
      });
    },
    async close(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const graceful = client.endAsync(false);
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const outcome = await Promise.race([graceful.then(() => 'ended' as const, () => 'ended' as const), deadline]);
      clearTimeout(timer);
      if (outcome === 'timeout') await client.endAsync(true);
    },
  };
}
