// Stage 1, receive: device publishes reach the gateway through its embedded MQTT listener
// (aedes), or through a subscription on a broker already on site (e.g. Zigbee2MQTT's Mosquitto).
// Either way a device's QoS 1 publish is acknowledged only when `onMessage` says it is stored.
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { Aedes } from 'aedes';
import type { AuthenticateError, Client } from 'aedes';
import type { MqttClient } from 'mqtt';
import { connectionPeer, guardPacketSize, LogThrottle, maxPacketBytes } from '@ferry/runtime';
import type { Clock, Logger } from '@ferry/runtime';
import type { ConnectRefusal, DeviceAccess } from './device-access.js';
import { connectMqtt } from './mqtt-connect.js';
import { paceReconnects, reconnectPolicy } from './reconnect.js';

/** Who published: the user name the device logged in with on the embedded listener. */
export interface DeviceSender {
  readonly username?: string | undefined;
}

/**
 * Stores or dead-letters one device message; `done(null)` once that is durable. `sender` is set
 * for the embedded listener only (on an attached broker, that broker checked its clients).
 */
export type DeviceMessageHandler = (topic: string, payload: Buffer, done: (err: Error | null) => void, sender?: DeviceSender) => void;

/**
 * Why the listener turned a connection away: a CONNECT without a user name or with wrong
 * credentials, or a packet announcing more bytes than the listener reads (closed at its fixed
 * header, before the body arrives).
 */
export type ConnectionRefusal = ConnectRefusal | 'packet_too_large';

export interface DeviceListenerOptions {
  readonly host: string;
  readonly port: number;
  readonly access: DeviceAccess;
  readonly logger: Logger;
  readonly onMessage: DeviceMessageHandler;
  /**
   * The largest payload read whole: larger ones, up to this, are dead-lettered by the decoder's
   * size rule; a packet announcing more is refused at its fixed header (deviceReadLimit()).
   */
  readonly maxPayloadBytes: number;
  /** A connection was refused (counted in a metric; logged here at warn, at a bounded rate). */
  readonly onConnectRefused?: (reason: ConnectionRefusal) => void;
  readonly clock: Clock;
}

/** At most one warn line per kind of refusal in this long; the others are counted in the next line. */
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

/**
 * The payload size the device listener reads at most: four times the decoder's limit, at least
 * 1 MiB. A payload between the two is read and dead-lettered with its first bytes, so an operator
 * sees what the device sent; beyond it the connection is closed at the packet's fixed header.
 */
export function deviceReadLimit(maxPayloadBytes: number): number {
  return Math.max(4 * maxPayloadBytes, 1024 * 1024);
}

export interface DeviceListener {
  /** e.g. mqtt://127.0.0.1:41234 */
  readonly url: string;
  /** Refuses new device connections; connected devices stay until close(). */
  stopAccepting(): void;
  close(): Promise<void>;
}

/** A device connected without a user name; and a publish aedes makes itself (no client). */
const ANONYMOUS: DeviceSender = Object.freeze({ username: undefined });
const NO_CLIENT: DeviceSender = Object.freeze({});

function authError(reason: ConnectRefusal): AuthenticateError {
  // MQTT 3.1.1 CONNACK return codes: 5 = not authorized (no user name, as Mosquitto answers an
  // anonymous client), 4 = bad user name or password.
  return reason === 'anonymous'
    ? Object.assign(new Error('anonymous devices are not allowed: log in with a user name'), { returnCode: 5 as const })
    : Object.assign(new Error('bad user name or password'), { returnCode: 4 as const });
}

type RelayCallback = (error?: Error) => void;
type AedesPublish = (packet: Parameters<Aedes['publish']>[0], client: Client | RelayCallback | null, done?: RelayCallback) => void;

/**
 * After authorizePublish took a device publish (stored or dead-lettered it) and aedes sent the
 * PUBACK, aedes would still relay it: match its topic against the subscriptions twice (offline
 * queues, then the emitter) and allocate a packet copy, promises and closures for it, per publish,
 * only for authorizeForward to drop every delivery. Skipping it also keeps a retained device
 * publish from being stored (aedes stores retained messages in that relay) and replayed to anyone. Device topics skip that relay; aedes's own
 * `$SYS` publishes (heartbeat, client takeover, which its will handling relies on) still take it.
 */
export function skipRelay(broker: Aedes): void {
  const relay = broker.publish.bind(broker) as unknown as AedesPublish;
  const publish: AedesPublish = (packet, client, done) => {
    if (packet.topic.startsWith('$SYS')) {
      relay(packet, client, done);
      return;
    }
    (typeof client === 'function' ? client : done)?.();
  };
  broker.publish = publish;
}

export async function listenForDevices(options: DeviceListenerOptions): Promise<DeviceListener> {
  const { logger, onMessage, access } = options;
  // The user each connected device logged in as, for the per-device rule on its publishes: one
  // sender object per connection, handed along with each of its publishes.
  const senders = new WeakMap<Client, DeviceSender>();
  const throttles = new Map<ConnectionRefusal, LogThrottle>();
  function refuse(reason: ConnectionRefusal, detail: Record<string, unknown>, message: string): void {
    options.onConnectRefused?.(reason);
    let throttle = throttles.get(reason);
    if (!throttle) throttles.set(reason, (throttle = new LogThrottle(options.clock, REFUSAL_LOG_INTERVAL_MS)));
    const verdict = throttle.hit();
    if (verdict.log) logger.warn({ event: 'device_refused', reason, ...detail, suppressed: verdict.suppressed }, message);
  }
  const broker = await Aedes.createBroker({
    authenticate: (client, givenUser, givenPassword, done) => {
      void access.connect(givenUser, givenPassword).then((refused) => {
        if (refused === null) {
          senders.set(client, givenUser !== undefined ? { username: givenUser } : ANONYMOUS);
          done(null, true);
          return;
        }
        refuse(refused, { clientId: client.id, username: givenUser ?? null, remote: connectionPeer(client.conn) ?? null }, 'device connection refused');
        done(authError(refused), false);
      });
    },
    // The PUBACK (or PUBREC) aedes sends a device waits for this callback: it is called only once
    // the reading is committed to the outbox, or the refused message is in the dead-letter store.
    authorizePublish: (client, packet, done) => {
      if (packet.topic.startsWith('$SYS')) {
        done(new Error('$SYS topics are reserved'));
        return;
      }
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      onMessage(packet.topic, payload, done, client ? (senders.get(client) ?? ANONYMOUS) : NO_CLIENT);
    },
    // Device messages end in the outbox; none is relayed to other subscribers.
    authorizeForward: () => null,
  });
  broker.on('clientError', (client, err) => logger.debug({ clientId: client.id, err: err.message }, 'device connection error'));
  skipRelay(broker);

  const readLimit = maxPacketBytes(deviceReadLimit(options.maxPayloadBytes));
  const server: Server = createServer((socket) => {
    guardPacketSize(socket, readLimit, (announced) =>
      refuse('packet_too_large', { remote: connectionPeer(socket) ?? null, announcedBytes: announced, maxPacketBytes: readLimit }, 'device packet over the size limit: connection closed at its fixed header'),
    );
    broker.handle(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'device listener error'));
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `mqtt://${host}:${address.port}`;
  logger.info({ url, auth: access.auth, deviceMustMatchUser: access.deviceMustMatchUser }, 'device listener ready');

  let serverClosed: Promise<void> | undefined;
  function stopAccepting(): Promise<void> {
    serverClosed ??= new Promise<void>((resolve) => server.close(() => resolve()));
    return serverClosed;
  }

  return {
    url,
    stopAccepting() {
      void stopAccepting();
    },
    async close() {
      const closed = stopAccepting();
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await closed;
    },
  };
}

export interface DeviceAttachmentOptions {
  readonly url: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly clientId: string;
  readonly qos: 0 | 1 | 2;
  /** Subscription filters, one per device pattern. */
  readonly filters: readonly string[];
  readonly acceptRetained: boolean;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly logger: Logger;
  readonly onMessage: DeviceMessageHandler;
  /** A retained message was skipped (acceptRetained false). */
  readonly onRetainedSkipped?: () => void;
}

export interface DeviceAttachment {
  readonly connected: boolean;
  close(): Promise<void>;
}

/**
 * Subscribes on an existing broker. The session is persistent (clean: false, fixed clientId) so
 * the broker queues what devices publish while the gateway is down, and the PUBACK to the broker
 * is held until the message is stored (MQTT.js sends it when handleMessage calls back; that
 * works for MQTT 3.1.1, where customHandleAcks does not apply). MQTT.js handles incoming
 * messages one at a time, so this path commits one group per message.
 */
export function attachToBroker(options: DeviceAttachmentOptions): DeviceAttachment {
  const { logger } = options;
  const client: MqttClient = connectMqtt(options.url, {
    protocolVersion: 4,
    clean: false,
    clientId: options.clientId,
    reconnectOnConnackError: true,
    // Subscriptions are made on connect when the broker has no session; see below.
    resubscribe: false,
    ...(options.username !== undefined ? { username: options.username } : {}),
    ...(options.password !== undefined ? { password: options.password } : {}),
  });
  paceReconnects(client, reconnectPolicy(options.reconnectMinMs, options.reconnectMaxMs));

  client.handleMessage = (packet, callback) => {
    if (packet.retain && !options.acceptRetained) {
      options.onRetainedSkipped?.();
      callback();
      return;
    }
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    options.onMessage(packet.topic, payload, (err) => {
      // No PUBACK on failure: the broker delivers the message again after a reconnect.
      if (err) callback(err);
      else callback();
    });
  };

  let failuresInARow = 0;
  client.on('connect', (connack) => {
    failuresInARow = 0;
    logger.info({ sessionPresent: connack.sessionPresent }, 'attached to the device broker');
    if (connack.sessionPresent) return;
    const subscriptions = Object.fromEntries(options.filters.map((f) => [f, { qos: options.qos }]));
    client.subscribe(subscriptions, (err, granted) => {
      if (err || !granted || granted.some((g) => g.qos === 128)) {
        logger.error({ err, filters: options.filters }, 'the device broker refused a subscription');
      }
    });
  });
  client.on('error', (err) => {
    failuresInARow += 1;
    if (failuresInARow === 1) logger.warn({ err: err.message }, 'device broker connection failed; retrying');
    else logger.debug({ err: err.message }, 'device broker retry failed');
  });

  return {
    get connected() {
      return client.connected;
    },
    async close() {
      // Not forced when connected: PUBACKs already queued go out before the DISCONNECT.
      await client.endAsync(!client.connected);
    },
  };
}
