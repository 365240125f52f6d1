// One fleet view across ingestors (issue #20): each gateway's readings are written by one ingestor
// (its lease holder), yet every ingestor's health model, ops API and page must show the whole
// fleet with the same alerts, announce each alert once, and honour an ack or silence made on any.
// So each member:
// 1. shares what it wrote: one Lua call per chunk publishes the chunk on `fleet:written` (the other
//    members feed it to their models as their own written readings) and keeps each device's newest
//    reading in `fleet:lastseen`, which a starting or reconnected member catches up from;
// 2. claims each alert transition in Redis before notifying (CLAIM_LUA): all compute the same
//    alerts, one announces them;
// 3. stores acks (by alert key) and silences (fleet-unique ids) in Redis and announces them on
//    `fleet:alerts`; all apply them, and read the stored ones again after every reconnect.
// While Redis is away, or until caught up, the model holds its alerts as for a lost broker
// (`peers` link): it cannot tell a silent device from one written by a member it does not hear.
import type { AlertEngineEvent, AlertNotification, ObservedReading, Silence } from '@ferry/health';
import { LogThrottle } from '@ferry/runtime';
import type { Clock, Logger } from '@ferry/runtime';
import type { HealthObservation, IngestorHealth, WrittenObservations } from '../health.js';
import type { RecentReadingInput } from '../recent.js';
import {
  ackRecordOf,
  ackSupersedes,
  alertsMessageSchema,
  decodeAck,
  decodeLastSeen,
  encodeAck,
  encodeLastSeen,
  fleetAlertKey,
  fleetKeys,
  fleetSilenceIds,
  fromWire,
  newestPerDevice,
  parseJson,
  parseWrittenMessage,
  silenceFromRecord,
  silenceRecordSchema,
  toWire,
} from './fleet-events.js';
import type { AckRecord, AlertsMessage, SilenceRecord, WireReading } from './fleet-events.js';
import { ACK_END_LUA, ACK_LUA, CLAIM_LUA, PRUNE_LASTSEEN_LUA, SILENCE_LUA, WRITTEN_LUA } from './fleet-scripts.js';
import { defineScript } from './redis.js';
import type { RedisClient } from './redis.js';

/** What the sync needs of the ingestor's health (health.ts). */
export type FleetSyncHealth = Pick<IngestorHealth, 'monitor' | 'notifiers' | 'observe' | 'routeNotifications'>;

export interface FleetSyncOptions {
  /** For commands (connectRedis). */
  readonly redis: RedisClient;
  /** A second connection, for SUBSCRIBE only (a subscribed connection takes no other commands). */
  readonly subscriber: RedisClient;
  /** `state.keyPrefix`. */
  readonly keyPrefix: string;
  /** Unique per process, as for membership (members.ts). */
  readonly memberId: string;
  readonly health: FleetSyncHealth;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How long the claim of a firing alert is kept; an alert firing longer may be announced again by a member that only then starts to see it. */
  readonly firingClaimTtlMs?: number;
  /** How long the claim of a resolve is kept: longer than any member lags behind, so a late one neither resolves nor fires that episode again. */
  readonly resolvedClaimTtlMs?: number;
  /** Devices per last-seen page and per catch-up message. */
  readonly catchUpBatch?: number;
}

export const FLEET_SYNC_DEFAULTS = {
  firingClaimTtlMs: 7 * 86_400_000,
  resolvedClaimTtlMs: 86_400_000,
  catchUpBatch: 1000,
  /** close() waits at most this long for claims in flight (the notifications they decide). */
  closeWaitMs: 2_000,
  /** A catch-up that failed is tried again after this long. */
  retryMs: 1_000,
} as const;

export interface FleetSyncStats {
  /** Readings of other members taken into the model (live and caught up). */
  readonly readingsApplied: number;
  /** Alert transitions this member announced, and those another member had announced. */
  readonly claimsWon: number;
  readonly claimsLost: number;
  /** Catch-ups completed (the first at start, then one per reconnect). */
  readonly catchUps: number;
}

export interface FleetSync {
  /** Shares readings this member wrote, as health.observeWritten(items) returned them. Never throws. */
  publishWritten(written: WrittenObservations): void;
  /** Connected to Redis and caught up: the model sees every member's readings. */
  connected(): boolean;
  stats(): FleetSyncStats;
  /** Subscribes and catches up; waits for Redis if it is away (as the shared stores do). */
  start(): Promise<void>;
  /** Stops sharing and listening; the Redis clients stay open (they are the caller's). */
  close(): Promise<void>;
}

export function createFleetSync(options: FleetSyncOptions): FleetSync {
  const { redis, subscriber, memberId, health, clock } = options;
  const logger = options.logger.child({ component: 'fleet-sync' });
  const keys = fleetKeys(options.keyPrefix);
  const { monitor } = health;
  const alerts = monitor.alerts;
  const firingTtl = options.firingClaimTtlMs ?? FLEET_SYNC_DEFAULTS.firingClaimTtlMs;
  const resolvedTtl = options.resolvedClaimTtlMs ?? FLEET_SYNC_DEFAULTS.resolvedClaimTtlMs;
  const batchSize = options.catchUpBatch ?? FLEET_SYNC_DEFAULTS.catchUpBatch;
  const policy = { firmwareFields: monitor.fleet.defaults.fields.firmware };
  const written = defineScript(redis, 'ferryFleetWritten', WRITTEN_LUA);
  const pruneLastSeen = defineScript(redis, 'ferryFleetPruneLastSeen', PRUNE_LASTSEEN_LUA);
  const claim = defineScript(redis, 'ferryFleetClaim', CLAIM_LUA);
  const putAck = defineScript(redis, 'ferryFleetAck', ACK_LUA);
  const endAck = defineScript(redis, 'ferryFleetAckEnd', ACK_END_LUA);
  const putSilence = defineScript(redis, 'ferryFleetSilence', SILENCE_LUA);
  const errors = new LogThrottle(clock, 10_000);

  /** The ack record of each alert key, as Redis has it: applied to an alert that opens later here. */
  const acks = new Map<string, AckRecord>();
  /** The newest reading per device written while Redis was away: shared once it is back. */
  const unsent = new Map<string, WireReading>();
  const inFlight = new Set<Promise<unknown>>();
  const counts = { readingsApplied: 0, claimsWon: 0, claimsLost: 0, catchUps: 0 };
  let started = false;
  let closed = false;
  let caughtUp = false;
  /** Bumped on every lost connection: a catch-up that saw one in between does not count. */
  let epoch = 0;
  let resyncing: Promise<void> | undefined;
  let resyncAgain = false;
  let unwatch: (() => void) | undefined;

  function warn(err: unknown, what: string): void {
    const verdict = errors.hit();
    if (verdict.log) logger.warn({ err: err instanceof Error ? err.message : String(err), suppressed: verdict.suppressed }, what);
  }

  function track<T>(work: Promise<T>): void {
    const settled = work.then(
      () => undefined,
      () => undefined,
    );
    inFlight.add(settled);
    void settled.finally(() => inFlight.delete(settled));
  }

  // ---- written readings ----

  /** Other members' readings in the shape the model takes a chunk (health.observe): parallel lists, filled as they are read. */
  function observations(): WrittenObservations & { add(observation: HealthObservation): void } {
    const readings: ObservedReading[] = [];
    const recent: (RecentReadingInput | undefined)[] = [];
    return {
      readings,
      recent,
      add(observation) {
        readings.push(observation.reading);
        recent.push(observation.recent);
      },
    };
  }

  function sendWritten(readings: readonly WireReading[], catchUp: boolean): Promise<unknown> {
    const message = JSON.stringify({ v: 1, from: memberId, ...(catchUp ? { c: true } : {}), r: readings });
    const args: string[] = [keys.writtenChannel, message];
    for (const [deviceId, reading] of newestPerDevice(readings)) args.push(deviceId, encodeLastSeen(reading));
    const sent = written([keys.lastSeen], args).catch((err: unknown) => warn(err, 'fleet: written readings not shared with the other ingestors'));
    track(sent);
    return sent;
  }

  async function flushUnsent(): Promise<void> {
    while (unsent.size > 0) {
      const batch: WireReading[] = [];
      for (const [deviceId, reading] of unsent) {
        unsent.delete(deviceId);
        batch.push(reading);
        if (batch.length >= batchSize) break;
      }
      await sendWritten(batch, true);
    }
  }

  function takeWritten(message: string): void {
    const parsed = parseWrittenMessage(message);
    if ('issue' in parsed) {
      warn(parsed.issue, 'fleet: a written-readings message was not understood; dropped');
      return;
    }
    const { from, c, r } = parsed.message;
    if (from === memberId) return;
    const taken = observations();
    for (const w of r) taken.add(fromWire(w, { catchUp: c === true, withRecent: true }));
    health.observe(taken);
    counts.readingsApplied += r.length;
  }

  // ---- acks and silences ----

  function ackShown(key: string, record: AckRecord): void {
    const alert = alerts.activeByKey(key);
    if (!alert) return;
    const shown = alert.acknowledged;
    // Applied already (a catch-up reads what a message brought): no second history entry.
    if (record.acknowledged ? shown?.at === record.at && shown.by === record.by : shown === undefined) return;
    alerts.applyAcknowledgement(key, record);
  }

  function takeAck(key: string, record: AckRecord): void {
    if (!ackSupersedes(record, acks.get(key))) return;
    acks.set(key, record);
    ackShown(key, record);
  }

  function takeSilence(record: SilenceRecord): void {
    if ('silence' in record) alerts.applySilence(silenceFromRecord(record.silence));
    else alerts.applySilenceExpired(record.expired.id);
  }

  function takeAlertsMessage(message: string): void {
    const parsed = alertsMessageSchema.safeParse(parseJson(message));
    if (!parsed.success) {
      warn(parsed.error.issues[0]?.message, 'fleet: an alerts message was not understood; dropped');
      return;
    }
    const event: AlertsMessage = parsed.data;
    if (event.from === memberId) return;
    switch (event.type) {
      case 'ack':
        takeAck(event.key, event.ack);
        break;
      case 'ack-ended': {
        const held = acks.get(event.key);
        if (held && held.at <= event.endsAt) acks.delete(event.key);
        break;
      }
      case 'silence':
        takeSilence(event.record);
        break;
    }
  }

  function storeSilence(record: SilenceRecord, id: number, endsAt: number, mode: 'put' | 'seed'): Promise<unknown> {
    const message = mode === 'put' ? JSON.stringify({ v: 1, from: memberId, type: 'silence', record }) : '';
    const stored = putSilence([keys.silenceIndex, keys.silence(id)], [keys.alertsChannel, id, endsAt, JSON.stringify(record), message, clock.now(), mode]);
    const handled = stored.catch((err: unknown) => warn(err, 'fleet: silence not shared with the other ingestors'));
    track(handled);
    return handled;
  }

  /** What happens to this member's alerts that the others must know. Never throws (the engine calls it inline). */
  function onAlertEvent(event: AlertEngineEvent): void {
    try {
      switch (event.type) {
        case 'opened': {
          const record = acks.get(fleetAlertKey(event.alert, memberId));
          if (record?.acknowledged) ackShown(event.alert.key, record);
          break;
        }
        case 'ended': {
          const key = fleetAlertKey(event.alert, memberId);
          const record = acks.get(key);
          const endsAt = event.alert.endsAt;
          if (!record || endsAt === undefined || record.at > endsAt) break;
          acks.delete(key);
          const message = JSON.stringify({ v: 1, from: memberId, type: 'ack-ended', key, endsAt });
          track(endAck([keys.acks], [key, endsAt, keys.alertsChannel, message]).catch((err: unknown) => warn(err, 'fleet: ended ack not cleared in Redis')));
          break;
        }
        case 'acknowledgement': {
          const key = fleetAlertKey(event.alert, memberId);
          const record = ackRecordOf(event.change, memberId);
          acks.set(key, record);
          const message = JSON.stringify({ v: 1, from: memberId, type: 'ack', key, ack: record });
          track(putAck([keys.acks], [keys.alertsChannel, key, encodeAck(record), message]).catch((err: unknown) => warn(err, 'fleet: ack not shared with the other ingestors')));
          break;
        }
        case 'silenced':
          void storeSilence({ silence: { ...event.silence } }, event.silence.id, event.silence.endsAt, 'put');
          break;
        case 'silence-expired':
          void storeSilence({ expired: { id: event.silence.id, endsAt: event.silence.endsAt } }, event.silence.id, event.silence.endsAt, 'put');
          break;
      }
    } catch (err) {
      warn(err, 'fleet: alert change not shared');
    }
  }

  // ---- notifications ----

  /** Sends what this member won the claim for; if Redis refused the claims, sends all (twice beats never). */
  function claimAndSend(batch: readonly AlertNotification[]): void {
    const args: (string | number)[] = [memberId, firingTtl, resolvedTtl];
    const claimKeys = batch.map((n) => {
      args.push(n.status, n.alert.startsAt, n.alert.endsAt ?? n.alert.startsAt);
      return keys.claim(fleetAlertKey(n.alert, memberId));
    });
    track(
      claim(claimKeys, args).then(
        (reply) => {
          const won = Array.isArray(reply) ? reply : [];
          const mine = batch.filter((_, i) => won[i] === 1);
          counts.claimsWon += mine.length;
          counts.claimsLost += batch.length - mine.length;
          if (mine.length > 0) health.notifiers.send(mine);
          if (mine.length < batch.length) logger.debug({ announcedElsewhere: batch.length - mine.length }, 'fleet: alert changes announced by another ingestor');
        },
        (err: unknown) => {
          warn(err, 'fleet: alert claims failed; notifying anyway, so another ingestor may notify too');
          health.notifiers.send(batch);
        },
      ),
    );
  }

  // ---- catching up ----

  async function readSilences(now: number): Promise<void> {
    // Ours first, if absent (Redis restarted empty); an early expiry stored there wins over them.
    await Promise.all(alerts.activeSilences(now).map((s: Silence) => storeSilence({ silence: { ...s } }, s.id, s.endsAt, 'seed')));
    const ids = await redis.zrangebyscore(keys.silenceIndex, `(${now}`, '+inf');
    if (ids.length === 0) return;
    const values = await redis.mget(ids.map((id) => keys.silence(Number(id))));
    for (const value of values) {
      const parsed = value === null ? undefined : silenceRecordSchema.safeParse(parseJson(value));
      if (parsed?.success) takeSilence(parsed.data);
    }
  }

  async function readAcks(): Promise<void> {
    const stored = await redis.hgetall(keys.acks);
    // Redis is the record: one removed while this member was away (its episode ended) goes here too.
    acks.clear();
    for (const [key, value] of Object.entries(stored)) {
      const record = decodeAck(value);
      if (record) takeAck(key, record);
    }
  }

  async function readLastSeen(now: number): Promise<void> {
    const forgetBefore = now - monitor.fleet.defaults.forgetAfter;
    let cursor = '0';
    do {
      const [next, flat] = await redis.hscan(keys.lastSeen, cursor, 'COUNT', batchSize);
      cursor = next;
      const taken = observations();
      const stale: string[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const field = flat[i] as string;
        const value = flat[i + 1] as string;
        const reading = decodeLastSeen(value);
        // Silent past forgetAfter: the model would forget it at once, and the hash must not grow forever.
        if (!reading || reading.at < forgetBefore) stale.push(field, value);
        // The page gets the reading only for a device new to the model (else it holds it, or later ones).
        else taken.add(fromWire(reading, { catchUp: true, withRecent: monitor.fleet.device(reading.d) === undefined }));
      }
      health.observe(taken);
      counts.readingsApplied += taken.readings.length;
      if (stale.length > 0) await pruneLastSeen([keys.lastSeen], stale);
    } while (cursor !== '0' && !closed);
  }

  async function catchUp(): Promise<void> {
    const seen = epoch;
    // Subscribed before reading: what is published from here on arrives, what was before is read.
    await subscriber.subscribe(keys.writtenChannel, keys.alertsChannel);
    await flushUnsent();
    const now = clock.now();
    await readSilences(now);
    await readAcks();
    await readLastSeen(now);
    if (seen !== epoch || closed) return;
    caughtUp = true;
    counts.catchUps++;
    monitor.setLinks({ peers: true });
    logger.info({ devices: monitor.fleet.deviceCount, memberId }, 'fleet: caught up with the other ingestors');
  }

  function resync(): Promise<void> {
    if (resyncing) {
      resyncAgain = true;
      return resyncing;
    }
    resyncing = (async () => {
      do {
        resyncAgain = false;
        try {
          await catchUp();
        } catch (err) {
          if (closed) break;
          warn(err, 'fleet: catching up with the other ingestors failed; trying again');
          resyncAgain = true;
          await new Promise((resolve) => setTimeout(resolve, FLEET_SYNC_DEFAULTS.retryMs).unref());
        }
      } while (resyncAgain && !closed);
      resyncing = undefined;
    })();
    return resyncing;
  }

  // ---- connection events ----

  function onMessage(channel: string, message: string): void {
    if (closed) return;
    try {
      if (channel === keys.writtenChannel) takeWritten(message);
      else if (channel === keys.alertsChannel) takeAlertsMessage(message);
    } catch (err) {
      warn(err, 'fleet: message from another ingestor not applied');
    }
  }

  function onLost(): void {
    epoch++;
    if (!caughtUp || closed) return;
    caughtUp = false;
    // Until caught up again, silence from devices other members write says nothing: alerts wait.
    monitor.setLinks({ peers: false });
    logger.warn({ memberId }, 'fleet: lost Redis; device alerts are held until caught up again');
  }

  function onReady(): void {
    if (started && !closed) void resync();
  }

  return {
    publishWritten(written) {
      if (closed) return;
      try {
        const readings = written.readings.map((reading, i) => toWire({ reading, recent: written.recent[i] }, policy));
        if (readings.length === 0) return;
        // Redis away: no queue of every chunk in memory, only each device's newest, sent on return.
        if (redis.status !== 'ready') newestPerDevice(readings, unsent);
        else void sendWritten(readings, false);
      } catch (err) {
        warn(err, 'fleet: written readings not shared with the other ingestors');
      }
    },
    connected: () => caughtUp,
    stats: () => ({ ...counts }),
    async start() {
      if (started) return;
      started = true;
      subscriber.on('message', onMessage);
      subscriber.on('close', onLost);
      subscriber.on('ready', onReady);
      redis.on('close', onLost);
      redis.on('ready', onReady);
      unwatch = alerts.watch(onAlertEvent);
      alerts.useSilenceIds(fleetSilenceIds(clock));
      health.routeNotifications(claimAndSend);
      monitor.setLinks({ peers: false });
      await resync();
    },
    async close() {
      if (closed) return;
      closed = true;
      subscriber.off('message', onMessage);
      subscriber.off('close', onLost);
      subscriber.off('ready', onReady);
      redis.off('close', onLost);
      redis.off('ready', onReady);
      unwatch?.();
      alerts.useSilenceIds(undefined);
      health.routeNotifications(undefined);
      await within(Promise.all([...inFlight]), FLEET_SYNC_DEFAULTS.closeWaitMs);
      if (started) await within(subscriber.unsubscribe(keys.writtenChannel, keys.alertsChannel).catch(() => undefined), FLEET_SYNC_DEFAULTS.closeWaitMs);
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
