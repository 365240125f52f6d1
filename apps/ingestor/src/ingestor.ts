// createIngestor: wires the stores, the sink, the pipeline, MQTT and the ops server. The CLI only
// parses config and calls this; tests start it in-process on port 0.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ErrorCode } from '@ferry/protocol';
import { FerryError, parseUplinkTopic } from '@ferry/protocol';
import { abortable, abortReason, LogThrottle, createLogger, createOpsServer, opsTokens, createRegistry, DiskFullState, isDiskFull, systemClock } from '@ferry/runtime';
import type { Clock, Logger, OpsServer, Registry } from '@ferry/runtime';
import { createSqliteDeadLetterStore } from '@ferry/deadletter';
import type { DeadLetterStore } from '@ferry/deadletter';
import { createSink } from '@ferry/sinks';
import type { Sink } from '@ferry/sinks';
import { parseIngestorConfig } from './config.js';
import type { IngestorConfig, IngestorConfigInput } from './config.js';
import { openDedupeStore } from './dedupe.js';
import { openSqliteIntentLog } from './intents.js';
import type { IntentLog } from './intents.js';
import type { DedupeStore } from './dedupe.js';
import { Accounting } from './accounting.js';
import type { GatewayAccount } from './accounting.js';
import { createPipeline } from './pipeline.js';
import type { Pipeline, ReplayResult } from './pipeline.js';
import { createIngestorMetrics } from './metrics.js';
import { GatewayStatuses } from './statuses.js';
import { GatewayHistory } from './gateway-history.js';
import { addGatewayRoutes } from './gateway-api.js';
import type { GatewayStatusEntry } from './statuses.js';
import { createUplink } from './uplink.js';
import type { Uplink } from './uplink.js';
import { addOpsRoutes } from './http.js';
import { createIngestorHealth } from './health.js';
import type { IngestorHealth } from './health.js';
import type { HealthMonitor } from '@ferry/health';
import { addApiAuth, addDashboardRoutes, addHealthRoutes, sinkReadings } from './ops-api.js';
import { gatewaysWithFreshness } from './freshness.js';
import type { Freshness } from './freshness.js';
import { openDeviceDedupeStore } from './device-dedupe.js';
import type { DeviceDedupeStore } from './device-dedupe.js';
import { compileDeviceTopics } from './direct.js';
import type { DeviceTopics } from './direct.js';
import { openDeviceJournal } from './journal.js';
import type { DeviceJournal } from './journal.js';
import { createDirectIntake } from './intake.js';
import type { DirectIntake } from './intake.js';
import { ownsSource } from './partition.js';
import { redactUrl } from './redact.js';
import { openClusterState } from './cluster/cluster-state.js';
import type { ClusterState, ClusterStats } from './cluster/cluster-state.js';
import { registerClusterMetrics } from './cluster/cluster-metrics.js';
import { createReadingProcessor } from './process.js';
import { createRollups } from './rollup.js';
import type { Rollups } from './rollup.js';
import { addProcessingRoutes, createProcessingMetrics } from './process-ops.js';
import { addSeriesRoutes, sinkReader } from './series.js';
import { createGatewayDeadLetters } from './gateway-deadletters.js';
import type { GatewayReplayAnswer } from './gateway-deadletters.js';

export interface IngestorDeps {
  readonly logger?: Logger;
  readonly clock?: Clock;
  readonly registry?: Registry;
  /** An already built sink; the caller keeps ownership and closes it. Otherwise built from config.sink. */
  readonly sink?: Sink;
}

export interface IngestorStats {
  /** Readings received in accepted batches (this run). */
  readonly received: number;
  readonly written: number;
  readonly duplicates: number;
  readonly rejected: number;
  readonly rejectedByCode: Readonly<Partial<Record<ErrorCode, number>>>;
  /** Received and not settled yet; received = written + rejected + duplicates + inFlight. */
  readonly inFlight: number;
  /** Batch messages accepted into the pipeline. */
  readonly batches: number;
  /** Batches dropped unacked because the in-memory queue was full; their gateways resend them. */
  readonly shed: number;
  /** Envelopes whose readings could not be read at all (dead-lettered whole). */
  readonly envelopesRejected: number;
  readonly acksSent: number;
  /** Dead letters filed by this run. */
  readonly deadLetters: number;
  /** Dead letters held in the store now, all runs. */
  readonly deadLettersHeld: number;
  readonly sinkUp: boolean;
  readonly mqttConnected: boolean;
  readonly pendingBatches: number;
  readonly queuedPoints: number;
  readonly replays: number;
  /** Per source: each gateway, and '/direct' (DIRECT_SOURCE) for devices that publish directly. */
  readonly byGateway: Readonly<Record<string, GatewayAccount>>;
  /** Readings recognised by the device's own identity (a device's republish). */
  readonly deviceDuplicates: number;
  /** Direct-device messages journaled and not yet settled. */
  readonly journalRows: number;
  /** With state.redisUrl: this ingestor's part of the deployment (members, gateways held, batches left to others). */
  readonly cluster?: ClusterStats;
  /** Messages ignored because another partition owns their gateway or device. */
  readonly notOwned: number;
  /** The latest status each gateway published, with its age (`stale` once the next one is overdue). */
  readonly gateways: Readonly<Record<string, GatewayStatusEntry & Freshness>>;
}

export interface Ingestor {
  /**
   * Stores open, HTTP bound, MQTT connected and subscribed; rejects with FERRY_ERR_NOT_READY after
   * broker.readyTimeoutMs, or at once when close() is called meanwhile.
   */
  ready(): Promise<void>;
  /**
   * Stops taking batches, waits (bounded) for in-flight writes and their acks, closes everything.
   * During ready() it ends the start-up waits first (the broker, the database's first answer).
   */
  close(): Promise<void>;
  readonly httpUrl: string | undefined;
  readonly config: IngestorConfig;
  stats(): IngestorStats;
  readonly deadLetters: DeadLetterStore;
  /** Device and gateway health and alerts; undefined when config.health.enabled is false. */
  readonly health: HealthMonitor | undefined;
  /**
   * Re-runs one dead-lettered reading through validate -> dedupe -> write; marks it replayed on
   * success. A letter a gateway reported is replayed by that gateway (gateway-deadletters.ts).
   */
  replay(id: number, waitMs?: number): Promise<ReplayResult | GatewayReplayAnswer>;
}

/** How long an HTTP replay waits for the database before answering 202 (the write still lands later). */
const REPLAY_WAIT_MS = 10_000;
/** How long close waits for outgoing acks to reach the broker. */
const ACK_FLUSH_MS = 2_000;


export function createIngestor(input: IngestorConfigInput, deps: IngestorDeps = {}): Ingestor {
  const config = parseIngestorConfig(input);
  const logger = (deps.logger ?? createLogger({ level: config.logLevel })).child({ component: 'ingestor', ingestorId: config.ingestorId });
  const clock = deps.clock ?? systemClock;
  // Fields the name rules refuse come with every reading of a misbehaving old gateway: one line per 10 s.
  const namesLog = new LogThrottle(clock, 10_000);
  // Process metrics too (memory, CPU, event-loop lag, GC), under their standard unprefixed names.
  const registry = deps.registry ?? createRegistry({ defaultMetrics: true, prefix: '' });

  try {
    mkdirSync(config.dataDir, { recursive: true });
  } catch (err) {
    throw new FerryError('FERRY_ERR_STORAGE', `data dir ${config.dataDir} cannot be created: ${(err as Error).message}`, { dataDir: config.dataDir });
  }
  // A full disk under the data dir: which stores' writes fail for lack of space (reported in
  // /healthz and metrics). Nothing is acked meanwhile: every write that failed is tried again (the
  // writer retries, gateways resend, the broker redelivers), and the first that goes through ends it.
  const diskFull = new DiskFullState(clock);
  const storage = (store: string, err?: unknown): void => {
    if (err === undefined) {
      if (diskFull.succeeded(store)) logger.info({ store, dataDir: config.dataDir }, 'writes to the data dir go through again; acks resume');
      return;
    }
    const verdict = diskFull.failed(store, err);
    if (verdict === 'other') return;
    metrics.storageFull(store);
    // Once per episode: a full disk fails every commit, and a line per commit would only add to it.
    if (verdict === 'began') {
      logger.error(
        { store, dataDir: config.dataDir, err: diskFull.report().lastError },
        'disk full: nothing is acked until writes go through again; gateways keep the readings and resend them',
      );
    }
  };
  /** The embedded sink writes to the data dir's disk; a remote database's errors are its own. */
  const localSink = deps.sink === undefined && config.sink.type === 'sqlite';

  // With Redis the dedupe records are shared by every ingestor of the deployment (cluster/).
  const cluster: ClusterState | undefined =
    config.state.redisUrl === undefined
      ? undefined
      : openClusterState({
          ingestorId: config.ingestorId,
          redisUrl: config.state.redisUrl,
          keyPrefix: config.state.keyPrefix,
          leaseMs: config.state.leaseMs,
          heartbeatMs: config.state.heartbeatMs,
          windowPerGateway: config.state.windowPerGateway,
          deviceWindowMs: config.dedupe.deviceWindowMs,
          deviceWindowMaxEntries: config.dedupe.deviceWindowMaxEntries,
          mode: config.broker.sharedGroup === undefined ? 'leases' : 'shared',
          clock,
          logger,
        });
  const dedupe: DedupeStore = cluster?.dedupe ?? openDedupeStore({ path: join(config.dataDir, 'dedupe.db'), windowPerGateway: config.dedupe.windowPerGateway });
  // Write intents live beside the records they end with: in Redis with the cluster, else in dedupe.db.
  const intents: IntentLog | undefined =
    cluster?.intents ?? (dedupe.database ? openSqliteIntentLog({ db: dedupe.database, clock, floorOf: (source) => dedupe.windowFloor?.(source) }) : undefined);
  if (intents && intents.suspects.size > 0) {
    logger.warn({ runs: intents.suspects.size }, 'the last run stopped with writes in flight: those readings are looked up in the database before they are written again');
  }
  let deadLetters: DeadLetterStore;
  let sink: Sink;
  let deviceDedupe: DeviceDedupeStore | undefined;
  let journal: DeviceJournal | undefined;
  let deviceTopics: DeviceTopics | undefined;
  try {
    deviceDedupe =
      cluster?.deviceDedupe ??
      openDeviceDedupeStore({
        path: join(config.dataDir, 'device-dedupe.db'),
        windowMs: config.dedupe.deviceWindowMs,
        maxEntries: config.dedupe.deviceWindowMaxEntries,
      });
    if (config.direct) {
      deviceTopics = compileDeviceTopics(config.direct.patterns);
      journal = openDeviceJournal({
        path: join(config.dataDir, 'journal.db'),
        maxRows: config.direct.maxJournalRows,
        synchronous: config.direct.synchronous,
        onCommit: (err) => storage('journal', err),
      });
    }
    deadLetters = createSqliteDeadLetterStore({ path: join(config.dataDir, 'deadletters.db'), maxEntries: config.deadLetters.maxEntries, clock });
    sink = deps.sink ?? createSink(config.sink, { logger });
    // Readings of the last run's writes in flight come back first: identify the database now.
    if (intents && intents.suspects.size > 0) sink.present?.([]).catch(() => undefined);
  } catch (err) {
    dedupe.close();
    deviceDedupe?.close();
    journal?.close();
    void cluster?.close();
    throw err;
  }
  const deviceStore: DeviceDedupeStore = deviceDedupe;
  const ownsSink = deps.sink === undefined;
  const processor = createReadingProcessor(config.processing, clock);
  let rollups: Rollups | undefined;
  if (config.processing.rollups.length > 0) {
    try {
      // Saved with the seqs' records: in dedupe.db's transaction, or in Redis's record script call with the cluster (rollup-store.ts).
      if (!cluster && !dedupe.database) throw new FerryError('FERRY_ERR_STORAGE', 'rollups need the SQLite dedupe store');
      rollups = createRollups({ config: config.processing, store: cluster?.rollups, db: dedupe.database, sink, mapping: config.mapping, write: config.write, clock, logger });
    } catch (err) {
      dedupe.close();
      deviceStore.close();
      journal?.close();
      deadLetters.close();
      if (ownsSink) void sink.close().catch(() => undefined);
      throw err;
    }
  }

  const accounting = new Accounting();
  // Backlog and drops per gateway over the last 24 h, for the gateway page (bounded, in memory).
  const gatewayHistory = new GatewayHistory();
  const statuses = new GatewayStatuses(gatewayHistory);
  const health: IngestorHealth | undefined = config.health.enabled
    ? createIngestorHealth({
        config: config.health,
        dataDir: config.dataDir,
        brokerUrl: config.broker.url,
        brokerAuth: { username: config.broker.username, password: config.broker.password },
        clock,
        logger,
        links: () => ({ broker: uplink?.connected ?? false, sink: sinkUp }),
        deadLetters: () => (storesClosed ? 0 : deadLetters.counts().held),
        registry,
        onSaved: (err) => storage('health', err),
      })
    : undefined;
  if (cluster && health) cluster.attachHealth(health);
  const counters = { acksSent: 0, deadLetters: 0, shed: 0, envelopesRejected: 0, batches: 0, replays: 0, deviceDuplicates: 0, notOwned: 0 };
  let sinkUp = false;
  let uplink: Uplink | undefined;
  let intake: DirectIntake | undefined;
  let ops: OpsServer | undefined;
  let readying: Promise<void> | undefined;
  let closing: Promise<void> | undefined;
  let storesClosed = false;
  let shedding = false;
  /** Aborted by close(): a stop must not wait for the broker's start-up timeout. */
  const startAbort = new AbortController();
  let pinging: Promise<boolean> | undefined;

  /** Asks the database whether it is up; one question at a time, shared by /healthz, the dashboard and the start. */
  function pingSink(): Promise<boolean> {
    pinging ??= sink
      .ping()
      .catch(() => false)
      .then((up) => {
        sinkUp = up;
        return up;
      })
      .finally(() => {
        pinging = undefined;
      });
    return pinging;
  }

  const metrics = createIngestorMetrics(registry, {
    accounting,
    sinkUp: () => sinkUp,
    mqttConnected: () => uplink?.connected ?? false,
    pending: () => {
      const s = pipeline.state();
      return { batches: s.pendingBatches, readings: s.pendingReadings };
    },
    consumerLagSeconds: () => {
      const oldest = pipeline.state().oldestPendingAt;
      return oldest === undefined ? 0 : Math.max(0, clock.now() - oldest) / 1000;
    },
    journalRows: () => (storesClosed ? 0 : (journal?.rows ?? 0)),
    storageFull: () => diskFull.full,
  });
  createProcessingMetrics(registry, { processor, rollups: () => (storesClosed ? undefined : rollups) });
  if (cluster) registerClusterMetrics(registry, () => cluster.stats());

  const pipeline: Pipeline = createPipeline({
    limits: config.limits,
    mapping: config.mapping,
    maxBatchBytes: config.maxBatchBytes,
    acceptBatchesWithoutNonce: config.acceptBatchesWithoutNonce,
    queue: config.queue,
    write: config.write,
    sink,
    dedupe,
    deviceDedupe: deviceStore,
    skewPolicy: config.skew.policy,
    direct: deviceTopics && config.direct ? { topics: deviceTopics, gatewayTag: config.direct.gatewayTag } : undefined,
    deadLetters,
    accounting,
    processor,
    rollups,
    intents,
    clock,
    logger,
    sendAck: (ack) => {
      const send = (): void => {
        if (!uplink) {
          logger.error({ gatewayId: ack.gatewayId, batchId: ack.batchId }, 'ack with no broker connection; the gateway will resend');
          return;
        }
        uplink.publishAck(ack);
      };
      // Shared state: the gateway deletes what an ack names, so its records must be in Redis first.
      if (cluster) cluster.ackAfterRecords(ack.gatewayId, send);
      else send();
    },
    shared: cluster?.loader,
    events: {
      released: (gatewayId) => cluster?.released(gatewayId),
      batch(result, readings) {
        metrics.batch(result, readings);
        if (result === 'accepted') {
          counters.batches++;
          shedding = false;
        } else if (result === 'shed') {
          counters.shed++;
          // Once per episode, not once per batch: under overload this would flood the log.
          if (!shedding) logger.warn({ shed: counters.shed }, 'batch queue full; shedding batches unacked, their gateways will resend them');
          shedding = true;
        } else if (result === 'envelope-invalid') counters.envelopesRejected++;
      },
      deadLettered(code, count) {
        counters.deadLetters += count;
        metrics.deadLettered(code, count);
      },
      pruned: (count) => metrics.pruned(count),
      devicePruned: (count) => metrics.devicePruned(count),
      batchLag: (ms) => metrics.batchLag(ms),
      storage: (store, err) => storage(store, err),
      skewed: (how) => metrics.skewed(how),
      namesDropped(problems) {
        metrics.namesDropped(problems.length);
        const verdict = namesLog.hit();
        if (verdict.log) logger.warn({ problems: problems.slice(0, 5), suppressed: verdict.suppressed }, 'fields or tags the database refuses were left out of a point (a gateway older than the name rules sent them)');
      },
      deviceDuplicate(origin) {
        counters.deviceDuplicates++;
        metrics.deviceDuplicate(origin);
      },
      written(points, seconds) {
        metrics.written(points, seconds);
        if (localSink) storage('sink');
      },
      readingsWritten: (items) => {
        // Observed once per chunk: the fleet sync shares what the model took (it exists only with health).
        const written = health?.observeWritten(items);
        if (written) cluster?.publishWritten(written);
      },
      recovered(points) {
        metrics.recovered(points);
        logger.info({ points }, 'readings of a write in flight when the last run stopped are in the database already; not written again');
      },
      retry(err, attempt, delayMs, stage) {
        metrics.retry(stage);
        if (stage === 'sink' && localSink) storage('sink', err);
        // A full disk is logged once per episode (storage above), not once per retry.
        if ((stage === 'confirm' || stage === 'intent' || localSink) && isDiskFull(err)) return;
        const message = err instanceof Error ? err.message : String(err);
        if (stage === 'sink') logger.warn({ err: message, attempt, delayMs, sink: sink.description }, 'database write failed; retrying, nothing acked meanwhile');
        else if (stage === 'present') logger.warn({ err: message, attempt, delayMs, sink: sink.description }, 'database could not be asked which readings of an interrupted write it holds; retrying');
        else if (stage === 'intent') logger.error({ err: message, attempt, delayMs }, 'write intent could not be stored; the chunk waits');
        else logger.error({ err: message, attempt, delayMs }, 'local storage failed after a write; writing the chunk again');
      },
      sinkState(up) {
        if (up !== sinkUp) logger.info({ sink: sink.description, up }, up ? 'database reachable' : 'database unreachable');
        sinkUp = up;
      },
    },
  });

  cluster?.attach(pipeline);

  const gatewayLetters = createGatewayDeadLetters({
    store: deadLetters,
    publish: (gatewayId, message, done) => (uplink ? uplink.publishDeadLetterControl(gatewayId, message, done) : done(new Error('no broker connection'))),
    owns: (gatewayId) => ownsSource(config.partition, gatewayId),
    ...{ clock, logger, registry },
  });

  function stats(): IngestorStats {
    const t = accounting.totals();
    const s = pipeline.state();
    return {
      received: t.received,
      written: t.written,
      duplicates: t.duplicates,
      rejected: t.rejected,
      rejectedByCode: t.rejectedByCode,
      inFlight: t.inFlight,
      batches: counters.batches,
      shed: counters.shed,
      envelopesRejected: counters.envelopesRejected,
      acksSent: counters.acksSent,
      deadLetters: counters.deadLetters,
      deadLettersHeld: storesClosed ? 0 : deadLetters.counts().held,
      sinkUp,
      mqttConnected: uplink?.connected ?? false,
      pendingBatches: s.pendingBatches,
      queuedPoints: s.queuedPoints,
      replays: counters.replays,
      byGateway: Object.fromEntries(accounting.byGateway()),
      deviceDuplicates: counters.deviceDuplicates,
      journalRows: storesClosed ? 0 : (journal?.rows ?? 0),
      notOwned: counters.notOwned,
      gateways: gatewaysWithFreshness(statuses.snapshot(), clock.now()),
      ...(cluster ? { cluster: cluster.stats() } : {}),
    };
  }

  async function replay(id: number, waitMs = REPLAY_WAIT_MS): Promise<ReplayResult | GatewayReplayAnswer> {
    const entry = storesClosed ? undefined : deadLetters.get(id);
    if (entry?.source.gatewayLetterId !== undefined) {
      const answer = await gatewayLetters.replay(entry, waitMs);
      logger.info({ ...answer }, 'gateway dead letter replay');
      return answer;
    }
    const result = await pipeline.replay(id, waitMs);
    if (result.outcome === 'written' || result.outcome === 'duplicate') counters.replays++;
    logger.info({ ...result }, 'dead letter replayed');
    return result;
  }

  async function start(): Promise<void> {
    if (config.http !== false) {
      ops = createOpsServer({
        host: config.http.host,
        port: config.http.port,
        registry,
        tokens: opsTokens(config.http, config.http.tokens.map((t) => t.token)),
        health: async () => {
          await pingSink();
          const mqttConnected = uplink?.connected ?? false;
          const s = pipeline.state();
          const disk = diskFull.report();
          // With shared state, Redis down holds every batch and ack (they wait, nothing is lost): not ok meanwhile.
          const redisUp = cluster === undefined || cluster.redis.status === 'ready';
          return {
            ok: sinkUp && mqttConnected && !disk.full && redisUp,
            ingestorId: config.ingestorId,
            mqtt: { connected: mqttConnected, url: redactUrl(config.broker.url) },
            ...(cluster ? { redis: { connected: redisUp, url: redactUrl(config.state.redisUrl ?? '') } } : {}),
            sink: { up: sinkUp, description: sink.description },
            storage: { full: disk.full, since: disk.since, lastError: disk.lastError, lastErrorAt: disk.lastErrorAt, stores: disk.stores, failures: disk.failures },
            pendingBatches: s.pendingBatches,
            inFlight: accounting.totals().inFlight,
          };
        },
      });
      addApiAuth(ops.app, config.http.tokens);
      if (health) {
        addHealthRoutes(ops.app, {
          monitor: health.monitor,
          tokens: config.http.tokens,
          recent: (deviceId, sinceMs, limit) => health.recentReadings(deviceId, sinceMs, limit),
          mapping: config.mapping,
          readings: sinkReadings(sink, config.mapping.deviceTag, () => clock.now()),
          // What /healthz checks, asked now: never "up" before the first connection.
          links: async () => {
            const sinkNow = await pingSink();
            return { broker: uplink?.connected ?? false, sink: sinkNow };
          },
          now: () => clock.now(),
          grafanaUrl: config.http.grafanaUrl,
        });
        addDashboardRoutes(ops.app);
        addSeriesRoutes(ops.app, {
          read: sinkReader(sink),
          recent: (deviceId, sinceMs, limit) => health.recentReadings(deviceId, sinceMs, limit),
          rollupWindows: () => rollups?.windows() ?? [],
          measurement: config.mapping.measurement,
          deviceTag: config.mapping.deviceTag,
          now: () => clock.now(),
          known: (deviceId) => health.monitor.fleet.device(deviceId) !== undefined,
        });
      }
      addGatewayRoutes(ops.app, {
        history: gatewayHistory,
        latest: (id) => statuses.get(id),
        known: (id) => health !== undefined && (health.monitor.fleet.gateway(id) !== undefined || health.monitor.fleet.devicesOf(id) > 0),
        now: () => clock.now(),
        grafanaUrl: config.http.grafanaUrl,
      });
      addOpsRoutes(ops.app, { deadLetters, stats, gateways: () => gatewaysWithFreshness(statuses.snapshot(), clock.now()), replay: (id) => replay(id), gatewayDeadLetters: () => gatewayLetters.counts(), fleetCounts: cluster ? () => cluster.fleetCounts() : undefined });
      addProcessingRoutes(ops.app, { processor, rollups, sink, deviceTag: config.mapping.deviceTag, now: () => clock.now() });
      await ops.listen();
    }
    // A database that accepts connections and does not answer yet holds this for its timeout.
    await abortable(pingSink(), startAbort.signal, 'asking the database whether it is up');
    if (startAbort.signal.aborted) throw abortReason(startAbort.signal, 'starting the ingestor');
    // Gateways are shared out among the live ingestors: this one must be among them first.
    if (cluster) {
      logger.info({ redis: redactUrl(config.state.redisUrl ?? ''), memberId: cluster.memberId }, 'waiting for redis (shared state)');
      await abortable(cluster.ready(), startAbort.signal, 'waiting for redis (shared state)');
    }
    // Rollup points completed by the last run and not confirmed then are written again first.
    rollups?.start();
    if (journal) {
      intake = createDirectIntake({ journal, pipeline, maxInMemory: config.direct?.maxInMemory ?? 20_000, logger });
      intake.start();
    }
    const directJournal = journal;
    const topics = deviceTopics;
    uplink = createUplink({
      url: config.broker.url,
      clientId: config.broker.clientId,
      username: config.broker.username,
      password: config.broker.password,
      logger,
      sharedGroup: config.broker.sharedGroup,
      onBatch: (topic, payload) => {
        const gatewayId = parseUplinkTopic(topic)?.gatewayId;
        if (cluster && gatewayId !== undefined) {
          cluster.admit(gatewayId, topic, payload);
          return;
        }
        if (gatewayId !== undefined && !ownsSource(config.partition, gatewayId)) {
          counters.notOwned++;
          return;
        }
        pipeline.accept(topic, payload);
      },
      ...(directJournal && topics
        ? {
            deviceFilters: topics.filters,
            // Never an uplink topic, whatever the patterns: batches keep their own path.
            isDeviceTopic: (topic: string) => parseUplinkTopic(topic) === undefined && topics.match(topic) !== undefined,
            onDevice: (topic: string, payload: Buffer, done: (err?: Error) => void) => {
              const routingKey = topics.match(topic)?.routingKey;
              if (routingKey !== undefined && !ownsSource(config.partition, routingKey)) {
                counters.notOwned++;
                metrics.directMessage('not-owned');
                done();
                return;
              }
              directJournal.append(topic, payload, clock.now(), (err) => {
                metrics.directMessage(err ? 'failed' : 'journaled');
                // A full disk is logged once per episode (storage above), not once per message.
                if (err && !isDiskFull(err)) logger.error({ err: err.message, topic }, 'device message not journaled; not PUBACKed, the broker will deliver it again');
                done(err);
              });
            },
          }
        : {}),
      onStatus: (topic, payload) => {
        statuses.apply(topic, payload, clock.now());
        health?.observeStatusMessage(topic, payload);
      },
      onDeadLetters: (topic, payload) => gatewayLetters.receive(topic, payload),
      onConnection: (up) => cluster?.setActive(up),
      onAckSent: () => {
        counters.acksSent++;
        metrics.ackSent();
      },
    });
    logger.info({ broker: redactUrl(config.broker.url), timeoutMs: config.broker.readyTimeoutMs }, 'waiting for the broker');
    await uplink.ready(config.broker.readyTimeoutMs, startAbort.signal);
    if (cluster) await abortable(cluster.startFleet(), startAbort.signal, 'catching up with the other ingestors (fleet view)');
    await health?.start();
    logger.info({ broker: redactUrl(config.broker.url), sink: sink.description, httpUrl: ops?.url }, 'ingestor ready');
  }

  async function shutdown(): Promise<void> {
    // Journal rows taken and unsettled stay in the journal; the next run takes them again.
    intake?.stop();
    const drained = await pipeline.stop(config.write.closeTimeoutMs);
    // Acks wait for their records to reach Redis; they go out before the broker connection does.
    await cluster?.acksSent(ACK_FLUSH_MS);
    if (!drained) logger.warn({ inFlight: accounting.totals().inFlight }, 'closing with writes unconfirmed; they were not acked and will be resent');
    const errors: unknown[] = [];
    const step = async (what: string, fn: () => unknown): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
        logger.error({ err, what }, 'error while closing');
      }
    };
    gatewayLetters.close();
    await step('mqtt', () => uplink?.close(ACK_FLUSH_MS));
    await step('fleet', () => cluster?.closeFleet());
    await step('health', () => health?.close());
    await step('http', () => ops?.close());
    if (ownsSink) await step('sink', () => sink.close());
    storesClosed = true;
    await step('cluster', () => cluster?.close());
    await step('dedupe', () => dedupe.close());
    await step('device dedupe', () => deviceStore.close());
    await step('journal', () => journal?.close());
    await step('deadletters', () => deadLetters.close());
    if (errors.length > 0) throw errors[0];
  }

  return {
    config,
    deadLetters,
    health: health?.monitor,
    get httpUrl() {
      return ops?.url;
    },
    stats,
    replay,
    ready() {
      if (closing) return Promise.reject(new FerryError('FERRY_ERR_NOT_READY', 'the ingestor is closed'));
      readying ??= start();
      return readying;
    },
    close() {
      closing ??= (async () => {
        // A ready() still under way is ended at its current wait and allowed to fail first, so
        // nothing opens after close and a stop never waits for a start-up timeout.
        startAbort.abort(new Error('close() called'));
        await readying?.catch(() => undefined);
        await shutdown();
      })();
      return closing;
    },
  };
}
