// Stage 1, receive: device publishes reach the gateway through its embedded MQTT listener
// (aedes), or through a subscription on a broker already on site (e.g. Zigbee2MQTT's Mosquitto).
// Either way a device's QoS 1 publish is acknowledged only when `onMessage` says it is stored.
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { Aedes } from 'aedes';
import type { AuthenticateError, Client } from 'aedes';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import type { Logger } from '@ferry/runtime';
import type { ConnectRefusal, DeviceAccess } from './device-access.js';
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

export interface DeviceListenerOptions {
  readonly host: string;
  readonly port: number;
  readonly access: DeviceAccess;
  readonly logger: Logger;
  readonly onMessage: DeviceMessageHandler;
  /** A CONNECT was refused (counted in a metric). */
  readonly onConnectRefused?: (reason: ConnectRefusal) => void;
}

export interface DeviceListener {
  /** e.g. mqtt://127.0.0.1:41234 */
  readonly url: string;
  /** Refuses new device connections; connected devices stay until close(). */
  stopAccepting(): void;
  close(): Promise<void>;
}

function authError(reason: ConnectRefusal): AuthenticateError {
  // MQTT 3.1.1 CONNACK return codes: 5 = not authorized (no user name, as Mosquitto answers an
  // anonymous client), 4 = bad user name or password.
  return reason === 'anonymous'
    ? Object.assign(new Error('anonymous devices are not allowed: log in with a user name'), { returnCode: 5 as const })
    : Object.assign(new Error('bad user name or password'), { returnCode: 4 as const });
}

export async function listenForDevices(options: DeviceListenerOptions): Promise<DeviceListener> {
  const { logger, onMessage, access } = options;
  // The user each connected device logged in as, for the per-device rule on its publishes.
  const users = new WeakMap<Client, string>();
  const broker = await Aedes.createBroker({
    authenticate: (client, givenUser, givenPassword, done) => {
      void access.connect(givenUser, givenPassword).then((refused) => {
        if (refused === null) {
          if (givenUser !== undefined) users.set(client, givenUser);
          done(null, true);
          return;
        }
        options.onConnectRefused?.(refused);
        logger.info({ clientId: client.id, username: givenUser, reason: refused }, 'device connection refused');
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
      // The gateway is the only consumer: nothing is kept retained to be replayed to anyone.
      packet.retain = false;
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      onMessage(packet.topic, payload, (err) => done(err), client ? { username: users.get(client) } : {});
    },
    // Device messages end in the outbox; none is relayed to other subscribers.
    authorizeForward: () => null,
  });
  broker.on('clientError', (client, err) => logger.debug({ clientId: client.id, err: err.message }, 'device connection error'));

  const server: Server = createServer(broker.handle);
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
  const client: MqttClient = mqtt.connect(options.url, {
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
