// A fleet of simulated devices publishing Ferry's native JSON telemetry over MQTT. A reading
// counts as acknowledged only when the broker's PUBACK arrived (QoS 1), so a test or the demo
// can compare what devices sent against what reached the database.
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import { FerryError } from '@ferry/protocol';
import { createLogger, parseConfig, systemClock } from '@ferry/runtime';
import type { Clock, Logger } from '@ferry/runtime';
import { connectionCount, simulatorConfigSchema } from './config.js';
import type { SimulatorConfig, SimulatorConfigInput } from './config.js';
import { createDeviceSignals } from './signals.js';
import type { DeviceSignals } from './signals.js';

export interface SimulatorDeps {
  readonly logger?: Logger;
  /** Supplies reading timestamps. */
  readonly clock?: Clock;
}

export interface SimulatorStats {
  /** Devices whose connection is up now. */
  readonly devices: number;
  /** Telemetry readings handed to MQTT (a dropout publishes nothing and is not counted). */
  readonly published: number;
  /** Readings the broker acknowledged (PUBACK at QoS 1; written to the socket at QoS 0). */
  readonly acknowledged: number;
  /** Readings whose publish failed (the connection was closed before the ack). */
  readonly failed: number;
  /** Online/offline status messages acknowledged; a gateway takes them as readings too. */
  readonly statuses: number;
}

export interface Simulator {
  /** Resolves once every connection is up and the devices have started reading. */
  ready(): Promise<void>;
  /** Publishes each device's offline status and disconnects. */
  close(): Promise<void>;
  stats(): SimulatorStats;
  /** With `readingsPerDevice`: resolves when every reading was published and settled. Always resolves on close. */
  readonly done: Promise<void>;
}

/** How long close() waits for outstanding acks and offline statuses before it drops the connection. */
const CLOSE_GRACE_MS = 3_000;

interface Link {
  readonly client: MqttClient;
  readonly devices: Device[];
  /** One connection per device: its Will is that device's offline status. */
  readonly dedicated: boolean;
}

interface Device {
  readonly id: string;
  readonly topic: string;
  readonly statusTopic: string;
  readonly signals: DeviceSignals;
  link: Link | undefined;
  /** The next device sequence number: readings published so far. */
  seq: number;
  timer: NodeJS.Timeout | undefined;
  finished: boolean;
}

function topicFor(pattern: string, deviceId: string): string {
  return pattern.replace('{deviceId}', deviceId);
}

function statusPayload(state: 'online' | 'offline', ts: number): string {
  return JSON.stringify({ state, ts });
}

/** Resolves true when `work` settles within `ms`, false otherwise; never rejects. */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([work.then(() => true, () => true), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

export function createSimulator(configInput: SimulatorConfigInput, deps: SimulatorDeps = {}): Simulator {
  const config: SimulatorConfig = parseConfig(simulatorConfigSchema, configInput, 'simulator config');
  const logger = (deps.logger ?? createLogger()).child({ component: 'simulator' });
  const clock = deps.clock ?? systemClock;
  const limit = config.readingsPerDevice;

  const devices: Device[] = Array.from({ length: config.devices }, (_, i) => {
    const id = `${config.deviceIdPrefix}${i}`;
    return {
      id,
      topic: topicFor(config.topicPattern, id),
      statusTopic: topicFor(config.statusTopicPattern, id),
      signals: createDeviceSignals(id, config.seed),
      link: undefined,
      seq: 0,
      timer: undefined,
      finished: false,
    };
  });
  const links: Link[] = [];
  let published = 0;
  let acknowledged = 0;
  let failed = 0;
  let statuses = 0;
  let closed = false;
  let starting: Promise<void> | undefined;
  let closing: Promise<void> | undefined;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });

  function checkDone(): void {
    if (limit === undefined) return;
    if (devices.every((d) => d.finished) && acknowledged + failed === published) resolveDone();
  }

  function stopDevice(device: Device): void {
    // Node's clearTimeout clears the first-reading timeout and the interval after it alike.
    clearTimeout(device.timer);
    device.timer = undefined;
  }

  function tick(device: Device): void {
    const link = device.link;
    if (closed || device.finished || !link) return;
    if (device.signals.missesReading(config.dropoutProbability)) return;
    const ts = clock.now();
    const payload = JSON.stringify({ ts, seq: device.seq, metrics: device.signals.next(ts) });
    device.seq += 1;
    published += 1;
    link.client.publishAsync(device.topic, payload, { qos: config.qos }).then(
      () => {
        acknowledged += 1;
        checkDone();
      },
      (err: unknown) => {
        failed += 1;
        logger.warn({ deviceId: device.id, seq: device.seq - 1, err: (err as Error).message }, 'reading not acknowledged');
        checkDone();
      },
    );
    if (limit !== undefined && device.seq >= limit) {
      device.finished = true;
      stopDevice(device);
      checkDone();
    }
  }

  function publishStatus(link: Link, state: 'online' | 'offline'): Promise<unknown> {
    if (!config.status) return Promise.resolve();
    const payload = statusPayload(state, clock.now());
    return Promise.all(
      link.devices.map((d) =>
        link.client.publishAsync(d.statusTopic, payload, { qos: 1, retain: true }).then(
          () => {
            statuses += 1;
          },
          (err: unknown) => {
            logger.debug({ deviceId: d.id, state, err: (err as Error).message }, 'status not published');
          },
        ),
      ),
    );
  }

  function openLink(index: number, members: Device[], dedicated: boolean): Link {
    const first = members[0];
    const options: IClientOptions = {
      protocolVersion: 4,
      clean: true,
      clientId: dedicated && first ? first.id : `ferry-sim-${randomBytes(4).toString('hex')}-${index}`,
      reconnectPeriod: 1_000,
      connectTimeout: 10_000,
      ...(config.username !== undefined ? { username: config.username } : {}),
      ...(config.password !== undefined ? { password: config.password } : {}),
      ...(dedicated && first && config.status
        ? { will: { topic: first.statusTopic, payload: Buffer.from(statusPayload('offline', clock.now())), qos: 1, retain: true } }
        : {}),
    };
    const client = mqtt.connect(config.url, options);
    const link: Link = { client, devices: members, dedicated };
    client.on('connect', () => {
      logger.debug({ clientId: options.clientId, devices: members.length }, 'connected');
      void publishStatus(link, 'online');
    });
    client.on('offline', () => {
      if (!closed) logger.warn({ clientId: options.clientId }, 'connection lost; reconnecting');
    });
    // Without a listener an 'error' event would crash the process; MQTT.js reconnects on its own.
    client.on('error', (err) => {
      logger.warn({ clientId: options.clientId, err: err.message }, 'mqtt error');
    });
    for (const d of members) d.link = link;
    return link;
  }

  async function start(): Promise<void> {
    const count = connectionCount(config);
    const groups: Device[][] = Array.from({ length: count }, () => []);
    devices.forEach((d, i) => groups[i % count]?.push(d));
    groups.forEach((members, i) => links.push(openLink(i, members, count === devices.length)));
    await Promise.all(
      links.map(
        (link) =>
          new Promise<void>((resolve, reject) => {
            if (link.client.connected) return resolve();
            link.client.once('connect', () => resolve());
            link.client.once('end', () => reject(new FerryError('FERRY_ERR_NOT_READY', 'simulator closed before it connected')));
          }),
      ),
    );
    if (closed) throw new FerryError('FERRY_ERR_NOT_READY', 'simulator closed before it connected');
    // Spread the devices over the interval so the broker sees a steady stream, not a burst per tick.
    devices.forEach((device, i) => {
      const offset = Math.floor((i * config.intervalMs) / devices.length);
      device.timer = setTimeout(() => {
        tick(device);
        if (!device.finished && !closed) device.timer = setInterval(() => tick(device), config.intervalMs);
      }, offset);
    });
    logger.info({ url: config.url, devices: devices.length, connections: links.length, intervalMs: config.intervalMs }, 'simulator started');
  }

  async function stop(): Promise<void> {
    closed = true;
    for (const d of devices) stopDevice(d);
    await Promise.all(
      links.map(async (link) => {
        if (link.client.connected) await settlesWithin(publishStatus(link, 'offline'), CLOSE_GRACE_MS);
        // A graceful end waits for outstanding PUBACKs; a broker that is gone would keep it waiting.
        if (!(await settlesWithin(link.client.endAsync(), CLOSE_GRACE_MS))) await link.client.endAsync(true);
      }),
    );
    resolveDone();
    logger.info({ published, acknowledged, failed }, 'simulator closed');
  }

  return {
    ready() {
      if (closing) return Promise.reject(new FerryError('FERRY_ERR_NOT_READY', 'simulator is closed'));
      starting ??= start();
      return starting;
    },
    close() {
      closing ??= stop();
      return closing;
    },
    stats() {
      const online = links.reduce((n, link) => n + (link.client.connected ? link.devices.length : 0), 0);
      return { devices: online, published, acknowledged, failed, statuses };
    },
    done,
  };
}
