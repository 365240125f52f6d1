// The uplink: the gateway's one MQTT connection to the cloud broker. A persistent session
// (clean: false, fixed clientId) so acks published while the gateway is away wait for it; a
// retained Last Will so the cloud sees the gateway go offline. Each connect attempt takes a new
// session epoch (a number the outbox never gives out twice): the Will registered with that attempt
// and every status published over the connection it opens carry it, so the cloud can tell a late
// Will of an old session from the end of the current one without trusting any clock.
import { existsSync, readFileSync } from 'node:fs';
import type { IClientOptions, MqttClient } from 'mqtt';
import { uplinkTopics } from '@ferry/protocol';
import type { Logger } from '@ferry/runtime';
import { connectMqtt } from './mqtt-connect.js';
import { paceReconnects, reconnectPolicy } from './reconnect.js';

export interface UplinkOptions {
  readonly url: string;
  readonly gatewayId: string;
  readonly clientId: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly ca?: string | undefined;
  readonly rejectUnauthorized: boolean;
  readonly keepaliveSec: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly logger: Logger;
  /** The retained status the broker publishes if the connection is lost; asked for at each attempt, with its epoch. */
  readonly lastWill: (epoch: number | undefined) => Buffer;
  /** A session epoch larger than any given before (persisted); undefined when none can be had. */
  readonly nextEpoch?: () => number | undefined;
  /** Optional subscriptions made at each connect (dead-letter control): a refusal never stops the uplink. */
  readonly extraTopics?: readonly string[];
}

export interface UplinkEvents {
  /** Connected, and the ack subscription is in place: batches may go out. */
  readonly onUp: () => void;
  readonly onDown: () => void;
  readonly onAck: (payload: Buffer) => void;
  /** Whether the broker granted extraTopics at this connect. */
  readonly onExtraSubscribed?: (granted: boolean) => void;
  /** A message on one of extraTopics. */
  readonly onMessage?: (topic: string, payload: Buffer) => void;
}

export interface Uplink {
  readonly connected: boolean;
  /** The epoch of the current (or latest) connect attempt: what this session's statuses carry. */
  readonly epoch: number | undefined;
  /** QoS 1; `done` runs on the broker's PUBACK or on failure. */
  publish(topic: string, payload: Buffer, options: { retain?: boolean }, done?: (err?: Error) => void): void;
  /** Publishes `finalStatus` (retained) when connected, then disconnects cleanly so the Will is not sent. */
  close(finalStatus?: Buffer): Promise<void>;
}

/** Time allowed for the offline status to be PUBACKed on close. */
const CLOSE_STATUS_TIMEOUT_MS = 2_000;

function readCa(ca: string): string {
  // PEM text is used as is; anything else is taken for a file path.
  if (ca.includes('-----BEGIN')) return ca;
  if (!existsSync(ca)) throw new Error(`uplink.ca: ${ca} is neither PEM text nor a readable file`);
  return readFileSync(ca, 'utf8');
}

export function connectUplink(options: UplinkOptions, events: UplinkEvents): Uplink {
  const { logger } = options;
  let epoch: number | undefined;
  /** A new epoch per attempt; when storage cannot give one, one more than the last in memory. */
  function takeEpoch(): number | undefined {
    let next: number | undefined;
    try {
      next = options.nextEpoch?.();
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'no session epoch from the outbox; counting on from the last one');
    }
    if (next === undefined || (epoch !== undefined && next <= epoch)) next = epoch === undefined ? undefined : epoch + 1;
    epoch = next;
    return epoch;
  }
  const statusTopic = uplinkTopics.status(options.gatewayId);
  const ackTopic = uplinkTopics.ack(options.gatewayId);
  const mqttOptions: IClientOptions = {
    protocolVersion: 4,
    clean: false,
    clientId: options.clientId,
    keepalive: options.keepaliveSec,
    connectTimeout: 10_000,
    reconnectOnConnackError: true,
    // The sender resends from the outbox after a reconnect; MQTT.js need not queue for it.
    queueQoSZero: false,
    resubscribe: false,
    rejectUnauthorized: options.rejectUnauthorized,
    will: { topic: statusTopic, payload: options.lastWill(takeEpoch()), qos: 1, retain: true },
    ...(options.username !== undefined ? { username: options.username } : {}),
    ...(options.password !== undefined ? { password: options.password } : {}),
    ...(options.ca !== undefined ? { ca: readCa(options.ca) } : {}),
  };
  const client: MqttClient = connectMqtt(options.url, mqttOptions);
  paceReconnects(client, reconnectPolicy(options.reconnectMinMs, options.reconnectMaxMs));

  let up = false;
  let closing = false;
  let failuresInARow = 0;

  client.on('reconnect', () => {
    // A new session for each attempt: its Will carries the epoch its statuses will carry.
    if (client.options.will) client.options.will.payload = options.lastWill(takeEpoch());
  });

  client.on('connect', () => {
    failuresInARow = 0;
    logger.info({ url: redact(options.url) }, 'uplink connected');
    // Subscribed at every connect: a broker that lost the session (restart, no persistence)
    // would otherwise never deliver another ack.
    client.subscribe(ackTopic, { qos: 1 }, (err, granted) => {
      if (closing) return;
      if (err || !granted || granted.some((g) => g.qos === 128)) {
        logger.error({ err, topic: ackTopic }, 'uplink refused the ack subscription; reconnecting');
        client.stream.destroy();
        return;
      }
      if (!client.connected) return;
      up = true;
      events.onUp();
    });
    if (options.extraTopics?.length) {
      client.subscribe([...options.extraTopics], { qos: 1 }, (err, granted) => {
        if (!closing) events.onExtraSubscribed?.(!err && !!granted && !granted.some((g) => g.qos === 128));
      });
    }
  });

  client.on('close', () => {
    if (up) {
      up = false;
      logger.warn({ url: redact(options.url) }, 'uplink lost; readings stay in the outbox');
      events.onDown();
    }
  });

  client.on('error', (err) => {
    failuresInARow += 1;
    // The first failure of an outage is worth a warning; the retries after it are not.
    if (failuresInARow === 1) logger.warn({ err: err.message, url: redact(options.url) }, 'uplink connection failed; retrying');
    else logger.debug({ err: err.message }, 'uplink retry failed');
  });

  client.on('message', (topic, payload) => {
    if (topic === ackTopic) events.onAck(payload);
    else events.onMessage?.(topic, payload);
  });

  return {
    get connected() {
      return up && client.connected;
    },
    get epoch() {
      return epoch;
    },
    publish(topic, payload, publishOptions, done) {
      client.publish(topic, payload, { qos: 1, retain: publishOptions.retain ?? false }, (err) => done?.(err));
    },
    async close(finalStatus) {
      if (closing) return;
      closing = true;
      const wasUp = up;
      up = false;
      if (wasUp) events.onDown();
      if (client.connected && finalStatus) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, CLOSE_STATUS_TIMEOUT_MS);
          client.publish(statusTopic, finalStatus, { qos: 1, retain: true }, () => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      // A clean DISCONNECT when connected (no Will); otherwise stop retrying at once.
      await client.endAsync(!client.connected);
    },
  };
}

/** The URL without credentials, for logs. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = '';
    return parsed.toString();
  } catch {
    return '(unparseable url)';
  }
}
