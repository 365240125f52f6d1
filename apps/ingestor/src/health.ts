// Device and gateway health in the ingestor: feeds the pure HealthMonitor (@ferry/health) with
// the readings the database confirmed, device status messages, gateway statuses and the
// ingestor's own links; runs its deadlines on a timer, persists it, and hands alerts to notifiers.
import { join } from 'node:path';
import { z } from 'zod';
import mqtt from 'mqtt';
import { decodeGatewayStatus, parseUplinkTopic } from '@ferry/protocol';
import { Counter, Gauge, readConfigFile } from '@ferry/runtime';
import type { Clock, Logger, Registry } from '@ferry/runtime';
import {
  createLogNotifier,
  createMqttNotifier,
  createNotifierHub,
  createSqliteHealthStore,
  createWebhookNotifier,
  flushHealth,
  HealthMonitor,
  parseRules,
} from '@ferry/health';
import type { AlertNotification, AlertRule, MqttNotifier, Notifier, NotifierHub, ObservedReading, SqliteHealthStore } from '@ferry/health';
import type { Point } from '@ferry/sinks';
import { RecentReadings } from './recent.js';
import type { RecentReading, RecentReadingInput } from './recent.js';

const DEFAULT_RULES = [
  { name: 'device-offline', kind: 'device-offline', for: '5m', keepFiringFor: '5m', severity: 'warning' },
  { name: 'gateway-offline', kind: 'gateway-offline', for: '2m', severity: 'critical' },
  { name: 'gateway-backlog', kind: 'gateway-backlog', olderThan: '30m', severity: 'warning' },
  { name: 'gateway-dropped', kind: 'gateway-dropped', within: '10m', severity: 'warning' },
  { name: 'gateway-disk', kind: 'gateway-disk', freeBelow: 0.1, clear: 0.15, severity: 'warning' },
  { name: 'deadletters-rising', kind: 'deadletters-rising', increase: 100, within: '10m', severity: 'warning' },
] as const;

export const healthConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** A YAML or JSON file `{ rules: [...] }`; relative to the working directory. Replaces the inline and default rules. */
    rulesFile: z.string().min(1).optional(),
    /** Inline rules (docs/health.md); the defaults when neither is given. */
    rules: z.array(z.unknown()).optional(),
    /** Timeouts, flapping, grace window, per-profile and per-device overrides (see @ferry/health healthDefaultsSchema). */
    defaults: z.record(z.string(), z.unknown()).default({}),
    /** How often changed health is written to health.db. */
    flushIntervalMs: z.number().int().positive().default(5_000),
    /** How often deadlines are looked at. */
    tickMs: z.number().int().positive().default(1_000),
    /** The device page's recent readings, kept in memory for every sink (docs/health.md, memory bound). */
    recentReadings: z
      .object({
        perDevice: z.number().int().positive().max(100_000).default(100),
        /** Numeric and boolean metrics kept per reading (string values never are); the rest counted as trimmed. */
        maxMetrics: z.number().int().positive().max(1024).default(32),
        /** Across devices; beyond it the least recently updated devices are dropped (counted). */
        maxTotal: z.number().int().positive().default(100_000),
      })
      .strict()
      .refine((r) => r.maxTotal >= r.perDevice, { message: 'maxTotal must be at least perDevice', path: ['maxTotal'] })
      .prefault({}),
    notifiers: z
      .object({
        log: z.boolean().default(true),
        webhooks: z
          .array(
            z
              .object({
                url: z.string().url(),
                headers: z.record(z.string(), z.string()).optional(),
                maxAttempts: z.number().int().positive().optional(),
              })
              .strict(),
          )
          .default([]),
        /** Publish alert changes under this topic prefix on the ingestor's broker. */
        mqttTopic: z.string().min(1).optional(),
        /** Publish them retained: a subscriber joining later sees each alert's latest state. */
        mqttRetain: z.boolean().default(false),
        /** Alert messages held for the broker while it is away; beyond this the oldest are dropped (counted). */
        mqttMaxQueued: z.number().int().positive().default(1000),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type HealthConfig = z.output<typeof healthConfigSchema>;

export interface WrittenReading {
  readonly gatewayId: string;
  readonly origin: 'gateway' | 'direct';
  /** The reading as received. */
  readonly reading: unknown;
  /** What was written raw, after processing: null when processing left nothing raw; absent, as received. */
  readonly point?: Point | null;
}

/** A written reading as the model takes it; also what other ingestors send of theirs (cluster/fleet-sync.ts). */
export interface HealthObservation {
  readonly reading: ObservedReading;
  /** What the device page shows of it; absent when nothing was written raw. */
  readonly recent?: RecentReadingInput | undefined;
}

export interface IngestorHealthOptions {
  readonly config: HealthConfig;
  readonly dataDir: string;
  readonly brokerUrl: string;
  readonly brokerAuth?: { readonly username?: string | undefined; readonly password?: string | undefined };
  readonly clock: Clock;
  readonly logger: Logger;
  /** The ingestor's links, polled on each tick. */
  readonly links: () => { broker: boolean; sink: boolean };
  /** Dead letters held now. */
  readonly deadLetters: () => number;
  /** Where the ferry_health_* metrics go (retention, alerts, notifiers). */
  readonly registry?: Registry;
  /** Each save to health.db: went through (no `err`) or failed (a full disk is reported from here). */
  readonly onSaved?: (err?: unknown) => void;
}

export interface IngestorHealth {
  readonly monitor: HealthMonitor;
  readonly notifiers: NotifierHub;
  /** The recent readings the database confirmed, per device (health.recentReadings). */
  readonly recent: RecentReadings;
  /** A device's recent readings with ts in the last sinceMs, at most limit (the newest), oldest first. */
  recentReadings(deviceId: string, sinceMs: number, limit: number): RecentReading[];
  /**
   * Takes the readings the database confirmed; returns them as observed, worked out once per
   * chunk, for the fleet sync to share (cluster/fleet-sync.ts). Never throws.
   */
  observeWritten(items: readonly WrittenReading[]): WrittenObservations;
  /** Readings written by another ingestor of the fleet (cluster/fleet-sync.ts), taken as observeWritten takes its own. Never throws. */
  observe(written: WrittenObservations): void;
  /** Where each tick's alert notifications go instead of straight to the notifiers (a fleet sync claims them first); undefined: straight again. */
  routeNotifications(route: ((batch: readonly AlertNotification[]) => void) | undefined): void;
  observeStatusMessage(topic: string, payload: Uint8Array): void;
  start(): Promise<void>;
  close(): Promise<void>;
}

function loadRules(config: HealthConfig): AlertRule[] {
  if (config.rulesFile !== undefined) {
    const file = readConfigFile(config.rulesFile);
    return parseRules(file['rules'] ?? [], `health rules file ${config.rulesFile}: rules`);
  }
  return parseRules(config.rules ?? DEFAULT_RULES);
}

/** The fields of a written reading the health model needs; readings were validated before the write. */
function observed(item: WrittenReading): ObservedReading | undefined {
  const r = item.reading as Partial<Record<string, unknown>> | null;
  if (!r || typeof r !== 'object' || typeof r['deviceId'] !== 'string' || typeof r['metrics'] !== 'object' || r['metrics'] === null) return undefined;
  const receivedAt = typeof r['receivedAt'] === 'number' ? r['receivedAt'] : undefined;
  const ts = typeof r['ts'] === 'number' ? r['ts'] : receivedAt;
  if (receivedAt === undefined || ts === undefined) return undefined;
  return {
    deviceId: r['deviceId'],
    gatewayId: item.origin === 'gateway' ? item.gatewayId : undefined,
    // The gateway's seq orders a device's messages by their arrival at the gateway (statuses, Wills).
    seq: item.origin === 'gateway' && typeof r['seq'] === 'number' ? r['seq'] : undefined,
    kind: r['kind'] === 'status' ? 'status' : 'telemetry',
    ts,
    tsSource: r['tsSource'] === 'device' ? 'device' : 'gateway',
    receivedAt,
    deviceSeq: typeof r['deviceSeq'] === 'number' ? r['deviceSeq'] : undefined,
    metrics: r['metrics'] as ObservedReading['metrics'],
  };
}

/**
 * What the device page shows of a reading: the values as the database has them (processed, when
 * the ingestor processes), undefined when nothing was written raw. The buffer keeps numbers and
 * booleans only (recent.ts keptMetrics); the rest of the raw reading is let go.
 */
function recentOf(item: WrittenReading, reading: ObservedReading): RecentReadingInput | undefined {
  if (item.point === null) return undefined;
  const flags = (item.reading as Partial<Record<string, unknown>>)['flags'];
  const valid = Array.isArray(flags) && flags.length > 0 && flags.every((f) => typeof f === 'string');
  const ts = item.point ? Number(item.point.timestampNs / 1_000_000n) : reading.ts;
  const metrics = item.point ? item.point.fields : reading.metrics;
  // Written out rather than spread: every reading written passes here.
  return valid ? { ts, kind: reading.kind, metrics, flags } : { ts, kind: reading.kind, metrics };
}

/**
 * A written chunk as the model takes it: parallel lists, not an object per reading (every reading
 * written passes here). Worked out once per chunk, for the model and the fleet sync alike.
 */
export interface WrittenObservations {
  readonly readings: readonly ObservedReading[];
  /** `recent[i]`: what the device page shows of `readings[i]`. */
  readonly recent: readonly (RecentReadingInput | undefined)[];
}

const NOTHING_OBSERVED: WrittenObservations = { readings: [], recent: [] };

/** The model's view of written readings: those it cannot read (not validated as a reading) are left out. */
export function observationsOf(items: readonly WrittenReading[]): WrittenObservations {
  const readings: ObservedReading[] = [];
  const recent: (RecentReadingInput | undefined)[] = [];
  for (const item of items) {
    const reading = observed(item);
    if (!reading) continue;
    readings.push(reading);
    recent.push(recentOf(item, reading));
  }
  return { readings, recent };
}

export function createIngestorHealth(options: IngestorHealthOptions): IngestorHealth {
  const { config, clock } = options;
  const logger = options.logger.child({ component: 'health' });
  const rules = loadRules(config);
  const store: SqliteHealthStore = createSqliteHealthStore({ path: join(options.dataDir, 'health.db') });
  let monitor: HealthMonitor;
  try {
    const previous = store.load();
    monitor = new HealthMonitor({ clock, rules, defaults: config.defaults, ...(previous ? { restore: previous } : {}) });
  } catch (err) {
    store.close();
    throw err;
  }
  let mqttClient: mqtt.MqttClient | undefined;
  let mqttNotifier: MqttNotifier | undefined;
  const notifiers: Notifier[] = [];
  if (config.notifiers.log) notifiers.push(createLogNotifier(logger));
  config.notifiers.webhooks.forEach((hook, i) =>
    notifiers.push(createWebhookNotifier({ url: hook.url, name: `webhook-${i + 1}`, ...(hook.headers ? { headers: hook.headers } : {}), ...(hook.maxAttempts ? { maxAttempts: hook.maxAttempts } : {}) })),
  );
  if (config.notifiers.mqttTopic !== undefined) {
    // Its own connection: alerts go out even while the uplink's session is busy or reconnecting.
    mqttClient = mqtt.connect(options.brokerUrl, {
      protocolVersion: 4,
      clientId: `ferry-health-${Math.random().toString(16).slice(2, 10)}`,
      ...(options.brokerAuth?.username !== undefined ? { username: options.brokerAuth.username } : {}),
      ...(options.brokerAuth?.password !== undefined ? { password: options.brokerAuth.password } : {}),
    });
    // MQTT.js retries every second and reports each failed try: one line per outage, not per try.
    let lost = false;
    mqttClient.on('error', (err) => {
      if (!lost) logger.warn({ err: err.message }, 'alert MQTT connection failed; retrying, alert messages are queued meanwhile');
      lost = true;
    });
    mqttClient.on('offline', () => {
      if (!lost) logger.warn('alert MQTT connection lost; retrying, alert messages are queued meanwhile');
      lost = true;
    });
    mqttClient.on('connect', () => {
      if (lost) logger.info({ queued: mqttNotifier?.queued ?? 0 }, 'alert MQTT connection back; queued alert messages go out');
      lost = false;
    });
    mqttNotifier = createMqttNotifier({ client: mqttClient, topic: config.notifiers.mqttTopic, retain: config.notifiers.mqttRetain, maxQueued: config.notifiers.mqttMaxQueued });
    notifiers.push(mqttNotifier);
  }
  const hub = createNotifierHub(notifiers, logger);
  const toHub = (batch: readonly AlertNotification[]): void => hub.send(batch);
  let route = toHub;
  const recent = new RecentReadings(config.recentReadings);
  /** The model's forgotten count at the last tick: the buffer is swept only when it moved. */
  let forgottenSeen = monitor.fleet.retention().forgottenDevices;
  if (options.registry) registerHealthMetrics(options.registry, monitor, hub, () => mqttNotifier, recent);
  let tickTimer: NodeJS.Timeout | undefined;
  let flushTimer: NodeJS.Timeout | undefined;
  /** A refusal episode (fleet at maxDevices or maxGateways) is logged once, not once per message. */
  let refusing = false;
  let refusingGateways = false;

  function refused(deviceId: string): void {
    if (refusing) return;
    refusing = true;
    const { maxDevices } = monitor.fleet.defaults;
    logger.warn({ maxDevices, deviceId }, 'health: tracking maxDevices devices already; messages of further devices are not tracked (ferry_health_device_messages_refused_total) until silent ones are forgotten');
  }

  function tick(): void {
    if (refusing && !monitor.fleet.full) {
      refusing = false;
      logger.info({ devices: monitor.fleet.deviceCount }, 'health: below maxDevices again; new devices are tracked');
    }
    if (refusingGateways && monitor.fleet.gatewayCount < monitor.fleet.defaults.maxGateways) refusingGateways = false;
    monitor.setLinks(options.links());
    try {
      monitor.observeDeadLetters(options.deadLetters());
    } catch {
      // The dead-letter store is closing; nothing to observe.
    }
    const batch = monitor.tick();
    if (batch.length > 0) route(batch);
    // Devices the model forgot (forgetAfter) lose their recent readings too; a sweep of the buffer
    // only on the ticks where something was forgotten, so the usual tick costs nothing here.
    const forgotten = monitor.fleet.retention().forgottenDevices;
    if (forgotten !== forgottenSeen) {
      forgottenSeen = forgotten;
      recent.retain((deviceId) => monitor.fleet.device(deviceId) !== undefined);
    }
  }

  /** The model takes a chunk's readings in order (one call: one clock read, each device's deadline once); the device pages keep what was taken. */
  function take(readings: readonly ObservedReading[], shown: readonly (RecentReadingInput | undefined)[]): void {
    const taken = monitor.observeReadings(readings);
    for (let i = 0; i < readings.length; i++) {
      const deviceId = readings[i]!.deviceId;
      const recentInput = shown[i];
      // A device the model does not track has no page (the API answers 404): nothing kept for it.
      if (!taken[i]) refused(deviceId);
      else if (recentInput) recent.add(deviceId, recentInput);
    }
  }

  function guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'health model failed to take written readings');
    }
  }

  /** The chunk observed once; after a throw (logged) the fleet sync gets what was observed, or nothing. */
  function observeWritten(items: readonly WrittenReading[]): WrittenObservations {
    let written = NOTHING_OBSERVED;
    guarded(() => {
      written = observationsOf(items);
      take(written.readings, written.recent);
    });
    return written;
  }

  function flush(): void {
    try {
      flushHealth(monitor, store);
    } catch (err) {
      options.onSaved?.(err);
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'health state not saved; kept in memory, retried on the next flush');
      return;
    }
    options.onSaved?.();
  }

  return {
    monitor,
    notifiers: hub,
    recent,
    recentReadings(deviceId, sinceMs, limit) {
      return recent.readings(deviceId, { sinceTs: clock.now() - sinceMs, limit });
    },
    // Runs inside the write confirmation: a throw here would make the writer write the chunk again.
    observeWritten,
    observe: (written) => guarded(() => take(written.readings, written.recent)),
    routeNotifications(next) {
      route = next ?? toHub;
    },
    observeStatusMessage(topic, payload) {
      if (payload.byteLength === 0 || parseUplinkTopic(topic)?.kind !== 'status') return;
      const status = decodeGatewayStatus(payload);
      if (!status || monitor.observeGatewayStatus(status, clock.now()) || refusingGateways) return;
      refusingGateways = true;
      logger.warn({ maxGateways: monitor.fleet.defaults.maxGateways, gatewayId: status.gatewayId }, 'health: tracking maxGateways gateways already; statuses of further gateways are not tracked (ferry_health_gateway_statuses_refused_total)');
    },
    start() {
      if (!config.enabled) return Promise.resolve();
      tickTimer = setInterval(tick, config.tickMs);
      flushTimer = setInterval(flush, config.flushIntervalMs);
      tickTimer.unref();
      flushTimer.unref();
      logger.info({ rules: rules.map((r) => r.name), devices: monitor.fleet.deviceCount, notifiers: notifiers.map((n) => n.name) }, 'health monitor started');
      return Promise.resolve();
    },
    async close() {
      if (tickTimer) clearInterval(tickTimer);
      if (flushTimer) clearInterval(flushTimer);
      flush();
      store.close();
      // The hub waits for each notifier's current batch (the MQTT one at most its waitMs); what is
      // still unacknowledged then is given up, so a broker that is away cannot hold up the shutdown.
      await hub.close();
      if (mqttClient) await mqttClient.endAsync(true);
    },
  };
}

/** ferry_health_*: read from the monitor at scrape time, like the ingestor's own counters. */
function registerHealthMetrics(registry: Registry, monitor: HealthMonitor, hub: NotifierHub, mqttNotifier: () => MqttNotifier | undefined, recent: RecentReadings): void {
  new Gauge({
    name: 'ferry_health_recent_readings',
    help: 'Recent readings held in memory for the device pages (health.recentReadings)',
    registers: [registry],
    collect() {
      this.set(recent.stats().readings);
    },
  });
  new Counter({
    name: 'ferry_health_recent_readings_trimmed_total',
    help: 'Recent readings that kept only health.recentReadings.maxMetrics of their numeric and boolean metrics',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(recent.stats().trimmedReadings);
    },
  });
  new Counter({
    name: 'ferry_health_recent_devices_evicted_total',
    help: 'Devices whose recent readings were dropped, least recently updated first, to stay under health.recentReadings.maxTotal',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(recent.stats().evictedDevices);
    },
  });
  new Counter({
    name: 'ferry_health_recent_readings_evicted_total',
    help: 'Recent readings dropped with their device to stay under health.recentReadings.maxTotal',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(recent.stats().evictedReadings);
    },
  });
  new Gauge({
    name: 'ferry_health_devices',
    help: 'Devices tracked by the health model, per liveness state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [state, n] of Object.entries(monitor.summary().devices)) if (state !== 'total') this.set({ state }, n);
    },
  });
  new Counter({
    name: 'ferry_health_devices_forgotten_total',
    help: 'Devices forgotten after health.defaults.forgetAfter without a message (or beyond maxDevices at a restart)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(monitor.fleet.retention().forgottenDevices);
    },
  });
  new Counter({
    name: 'ferry_health_device_messages_refused_total',
    help: 'Readings and status messages of new devices not tracked because the fleet was at health.defaults.maxDevices',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(monitor.fleet.retention().refused);
    },
  });
  new Counter({
    name: 'ferry_health_gateway_statuses_refused_total',
    help: 'Statuses of new gateways not tracked because health.defaults.maxGateways were',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(monitor.fleet.retention().refusedGateways);
    },
  });
  new Gauge({
    name: 'ferry_health_alerts',
    help: 'Active alerts, per state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      const { firing, pending } = monitor.summary().alerts;
      this.set({ state: 'firing' }, firing);
      this.set({ state: 'pending' }, pending);
    },
  });
  new Counter({
    name: 'ferry_health_notifications_total',
    help: 'Alert batches per notifier: delivered, failed (after the notifier\'s own retries; the MQTT one keeps them queued), or dropped unsent (its queue full, or at shutdown)',
    labelNames: ['notifier', 'outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [notifier, s] of Object.entries(hub.stats())) {
        this.inc({ notifier, outcome: 'delivered' }, s.delivered);
        this.inc({ notifier, outcome: 'failed' }, s.failed);
        this.inc({ notifier, outcome: 'dropped' }, s.dropped);
      }
    },
  });
  new Gauge({
    name: 'ferry_health_mqtt_alerts_queued',
    help: 'Alert messages waiting for the broker in the MQTT notifier',
    registers: [registry],
    collect() {
      this.set(mqttNotifier()?.queued ?? 0);
    },
  });
  new Counter({
    name: 'ferry_health_mqtt_alerts_dropped_total',
    help: 'Alert messages the MQTT notifier dropped because its queue was full (health.notifiers.mqttMaxQueued)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(mqttNotifier()?.dropped ?? 0);
    },
  });
}
