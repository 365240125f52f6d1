// The ingestor's MQTT connection: a persistent session (clean: false, fixed client id) so batches
// published while the ingestor is down wait in the broker; QoS 1 subscriptions to every
// gateway's batches and statuses; acks published QoS 1.
//
// MQTT.js PUBACKs a batch as soon as the message handler returns, before the database has it.
// That is deliberate: the broker-level ack only moves the batch into our memory; the end-to-end
// ack (published once the database confirmed) is the delivery guarantee, and the gateway keeps
// every reading until it arrives, resending on timeout.
//
// Devices that publish directly have no such second chance, so their messages go through
// `onDevice`, and MQTT.js's handleMessage is replaced so the PUBACK leaves only when onDevice
// calls back (after the journal commit). This works for MQTT 3.1.1 and 5 alike.
//
// Scale-out: with `sharedGroup` (MQTT 5) every subscription is `$share/<group>/<filter>` and the
// broker hands each message to one member of the group.
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import type { Ack, DeadLetterControl } from '@ferry/protocol';
import { encodeAck, encodeDeadLetterMessage, FerryError, parseUplinkTopic, uplinkTopics } from '@ferry/protocol';
import { abortReason } from '@ferry/runtime';
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
  /** Subscribed (true, after every connect) or the connection dropped (false). */
  readonly onConnection?: (up: boolean) => void;
  /** Gateways' dead-letter reports and replay results; subscribed on its own, so an ACL without it stops nothing else. */
  readonly onDeadLetters?: (topic: string, payload: Buffer) => void;
  /** MQTT 5 shared-subscription group for batches and device topics; switches to MQTT 5. */
  readonly sharedGroup?: string | undefined;
  /** Device topic filters (direct devices), QoS 1. */
  readonly deviceFilters?: readonly string[];
  /** A message on a device topic; PUBACKed only when `done` is called without an error. */
  readonly onDevice?: (topic: string, payload: Buffer, done: (err?: Error) => void) => void;
  /** Whether a topic is a device topic (so `onDevice` gets it rather than onBatch/onStatus). */
  readonly isDeviceTopic?: (topic: string) => boolean;
}

export interface Uplink {
  /**
   * Resolves once connected and subscribed; rejects with FERRY_ERR_NOT_READY after timeoutMs, or
   * as soon as `signal` aborts (a stop during start-up).
   */
  ready(timeoutMs: number, signal?: AbortSignal): Promise<void>;
  readonly connected: boolean;
  publishAck(ack: Ack): void;
  /** A report ack or replay request to one gateway, QoS 1. */
  publishDeadLetterControl(gatewayId: string, message: DeadLetterControl, done: (err?: Error) => void): void;
  /** Waits up to timeoutMs for outgoing acks to be PUBACKed, then disconnects. */
  close(timeoutMs: number): Promise<void>;
}

export function createUplink(options: UplinkOptions): Uplink {
  const { logger } = options;
  const mqtt5 = options.sharedGroup !== undefined;
  const client: MqttClient = mqtt.connect(options.url, {
    protocolVersion: mqtt5 ? 5 : 4,
    clean: false,
    // MQTT 5 ends a session at disconnect unless it is given an expiry: keep it, as 3.1.1 does.
    ...(mqtt5 ? { properties: { sessionExpiryInterval: 0xffffffff } } : {}),
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

  const isDeviceTopic = options.isDeviceTopic ?? (() => false);
  const share = (filter: string): string => (options.sharedGroup !== undefined ? `$share/${options.sharedGroup}/${filter}` : filter);
  client.on('message', (topic, payload) => {
    if (isDeviceTopic(topic)) return;
    if (topic.endsWith('/batch')) options.onBatch(topic, payload);
    else if (topic.endsWith('/status')) options.onStatus(topic, payload);
    else if (parseUplinkTopic(topic)?.kind === 'deadletters') options.onDeadLetters?.(topic, payload);
  });
  const onDevice = options.onDevice;
  if (onDevice) {
    const handleMessage = client.handleMessage.bind(client);
    client.handleMessage = (packet, callback) => {
      if (!isDeviceTopic(packet.topic)) {
        handleMessage(packet, callback);
        return;
      }
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      // No PUBACK on failure: the broker delivers the message again after a reconnect.
      onDevice(packet.topic, payload, (err) => (err ? callback(err) : callback()));
    };
  }
  /** Each connect's subscriptions; a callback of an earlier connection's is ignored. */
  let connection = 0;
  client.on('connect', (connack) => {
    logger.info({ url: options.url, clientId: options.clientId, sessionPresent: connack.sessionPresent }, 'connected to broker');
    const session = ++connection;
    const filters = [share(uplinkTopics.allBatches), uplinkTopics.allStatuses, ...(options.deviceFilters ?? []).map(share)];
    // One filter a SUBSCRIBE, one after the other: a clustered aedes broker (Redis persistence)
    // can lose the SUBACK of a persistent session's SUBSCRIBE of several filters, or of two in
    // flight at once (aedes #602, #458), and the ingestor would wait for it for good.
    const subscribeFrom = (index: number): void => {
      const filter = filters[index];
      if (filter === undefined) {
        subscribed = true;
        options.onConnection?.(true);
        for (const wake of readyWaiters) wake();
        if (options.onDeadLetters) subscribeDeadLetters(session);
        return;
      }
      client.subscribe(filter, { qos: 1 }, (err, granted) => {
        if (session !== connection) return;
        if (err || !granted || granted.some((g) => g.qos === 128)) {
          lastError = err ?? new Error(`broker refused subscription to ${filter}`);
          logger.error({ err: lastError }, 'subscribe failed');
          return;
        }
        subscribeFrom(index + 1);
      });
    };
    subscribeFrom(0);
  });
  const subscribeDeadLetters = (session: number): void => {
    client.subscribe(share(uplinkTopics.allDeadLetters), { qos: 1 }, (err, granted) => {
      if (session !== connection) return;
      if (err || !granted || granted.some((g) => g.qos === 128)) {
        logger.warn({ err, topic: uplinkTopics.allDeadLetters }, 'the broker refused the gateway dead-letter subscription: gateway dead letters stay on the gateways until its ACL grants role ingestor');
      }
    });
  };
  client.on('error', (err) => {
    lastError = err;
    logger.warn({ err: err.message }, 'broker connection error');
  });
  client.on('offline', () => logger.warn({ url: options.url }, 'broker unreachable; reconnecting'));
  client.on('close', () => options.onConnection?.(false));

  return {
    get connected() {
      return client.connected;
    },
    async ready(timeoutMs, signal) {
      if (subscribed) return;
      if (signal?.aborted) throw abortReason(signal, 'waiting for the broker');
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => {
          clearTimeout(timer);
          readyWaiters.delete(wake);
          reject(abortReason(signal as AbortSignal, 'waiting for the broker'));
        };
        const timer = setTimeout(() => {
          signal?.removeEventListener('abort', onAbort);
          readyWaiters.delete(wake);
          reject(
            new FerryError(
              'FERRY_ERR_NOT_READY',
              `not subscribed to ${options.url} within ${timeoutMs} ms${lastError ? `: ${lastError.message}` : ''}`,
              { url: options.url, timeoutMs },
            ),
          );
        }, timeoutMs);
        signal?.addEventListener('abort', onAbort, { once: true });
        function wake(): void {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
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
    publishDeadLetterControl(gatewayId, message, done) {
      client.publish(uplinkTopics.deadLetterControl(gatewayId), encodeDeadLetterMessage(message), { qos: 1 }, (err) => done(err));
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
