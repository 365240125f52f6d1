// Scale-out: everything an ingestor shares with the others of its deployment through Redis
// (`state.redisUrl`), opened in one place: membership, gateway leases, the shared dedupe stores and
// admission. ingestor.ts asks for it only when Redis is configured. docs/scaling.md has the model.
import { randomBytes } from 'node:crypto';
import { FerryError } from '@ferry/protocol';
import type { Clock, Logger } from '@ferry/runtime';
import type { DeviceIdentity } from '../device-dedupe.js';
import type { SharedStateLoader } from '../pipeline.js';
import { createAdmission } from './admission.js';
import type { Admission, AdmissionDrop, AdmissionMode } from './admission.js';
import { createMembership } from './members.js';
import type { Membership } from './members.js';
import { createSourceLeases } from './leases.js';
import type { SourceLeases } from './leases.js';
import { preferredOwner } from './rendezvous.js';
import { connectRedis } from './redis.js';
import type { RedisClient } from './redis.js';
import { openSharedDedupeStore } from './shared-dedupe.js';
import { openSharedDeviceDedupeStore } from './shared-device-dedupe.js';
import { openSharedRollupStore } from './shared-rollups.js';
import type { SharedRollupStore } from './shared-rollups.js';
import { openSharedIntentLog } from './shared-intents.js';
import type { SharedIntentLog } from './shared-intents.js';
import { fleetCounts } from './fleet-accounting.js';
import { createFleetSync } from './fleet-sync.js';
import type { FleetSync, FleetSyncHealth } from './fleet-sync.js';
import type { WrittenObservations } from '../health.js';
import type { FleetCounts } from './fleet-accounting.js';
import type { SharedDedupeStore, SharedDeviceDedupeStore } from './types.js';

export interface ClusterStateOptions {
  readonly ingestorId: string;
  readonly redisUrl: string;
  readonly keyPrefix: string;
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  readonly windowPerGateway: number;
  readonly deviceWindowMs: number;
  readonly deviceWindowMaxEntries: number;
  /** `shared` behind an MQTT 5 shared subscription, `leases` when every ingestor gets every batch. */
  readonly mode: AdmissionMode;
  readonly clock: Clock;
  readonly logger: Logger;
}

/** What the pipeline offers admission. */
export interface AdmittedPipeline {
  accept(topic: string, payload: Buffer): unknown;
  inFlight(gatewayId: string): number;
}

export interface ClusterStats {
  readonly memberId: string;
  readonly mode: AdmissionMode;
  readonly members: readonly string[];
  /** Gateways this ingestor holds the lease of now. */
  readonly gatewaysHeld: number;
  /** Batches waiting for a lease. */
  readonly waiting: number;
  /** Batches left to other ingestors (never acked here; their gateways resend). */
  readonly dropped: Readonly<Record<AdmissionDrop, number>>;
  /** Batches given up unacked because the gateway's lease lapsed while their records were read (their gateways resend). */
  readonly lapsedBeforeWrite: number;
  /** Acks not sent because their records did not reach Redis. */
  readonly acksWithheld: number;
}

export interface ClusterState {
  readonly memberId: string;
  readonly redis: RedisClient;
  readonly dedupe: SharedDedupeStore;
  readonly deviceDedupe: SharedDeviceDedupeStore;
  /** Rollup windows of the gateways held, saved with their records (shared-rollups.ts). */
  readonly rollups: SharedRollupStore;
  /** Write intents, so a gateway taken over mid-write is not written twice (shared-intents.ts). */
  readonly intents: SharedIntentLog;
  readonly loader: SharedStateLoader;
  readonly membership: Membership;
  readonly leases: SourceLeases;
  /** Connects admission to the pipeline; before the first admit(). */
  attach(pipeline: AdmittedPipeline): void;
  /** A gateway batch from the broker: taken once this ingestor holds the gateway, else left to the holder. */
  admit(gatewayId: string, topic: string, payload: Buffer): void;
  /** Sends an ack once every record made so far is in Redis, then lets the gateway's lease go if it is quiet. */
  ackAfterRecords(gatewayId: string, send: () => void): void;
  /** Waits (at most timeoutMs) for the acks waiting on their records. */
  acksSent(timeoutMs: number): Promise<void>;
  /** A batch ended without an ack (failed, or dropped at a stop). */
  released(gatewayId: string): void;
  /** One fleet view: this ingestor's health model hears what the others wrote (fleet-sync.ts). */
  attachHealth(health: FleetSyncHealth): void;
  /** What this ingestor wrote, for the others' health models. */
  publishWritten(written: WrittenObservations): void;
  /** Subscribes and catches up with the fleet; before the health model starts. */
  startFleet(): Promise<void>;
  /** Before the health model closes: notifications waiting on a claim still go out. */
  closeFleet(): Promise<void>;
  /**
   * Whether this ingestor can take batches now (its broker connection is up). While it cannot it
   * leaves the members and lets its gateways go (those with batches in flight once acked), so the
   * others take them over: a broker lost by one ingestor stops no gateway.
   */
  setActive(active: boolean): void;
  /** Readings written, rejected per gateway, across every ingestor. */
  fleetCounts(): Promise<FleetCounts>;
  stats(): ClusterStats;
  /** First heartbeat answered (Redis reachable). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

export function openClusterState(options: ClusterStateOptions): ClusterState {
  const { clock, logger, keyPrefix } = options;
  // A restarted ingestor is a new member: its old leases expire rather than being taken back
  // mid-write by a process that knows nothing of them.
  const memberId = `${options.ingestorId}#${randomBytes(4).toString('hex')}`;
  const clusterLogger = logger.child({ component: 'cluster', memberId });
  const redis = connectRedis({ url: options.redisUrl, name: 'state', logger: clusterLogger, clock });
  const membership = createMembership({ redis, keyPrefix, memberId, heartbeatMs: options.heartbeatMs, clock, logger: clusterLogger });
  const leases = createSourceLeases({ redis, keyPrefix, memberId, leaseMs: options.leaseMs, clock, logger: clusterLogger });
  const dedupe = openSharedDedupeStore({ redis, keyPrefix, windowPerGateway: options.windowPerGateway, logger: clusterLogger });
  let attached: AdmittedPipeline | undefined;
  const rollups = openSharedRollupStore({
    redis,
    keyPrefix,
    memberId,
    dedupe,
    logger: clusterLogger,
    busy: (gatewayId) => (attached?.inFlight(gatewayId) ?? 0) > 0,
    leaseHeld: (gatewayId) => leases.holds(gatewayId),
  });
  const intents = openSharedIntentLog({
    redis,
    keyPrefix,
    memberId,
    clock,
    logger: clusterLogger,
    afterRecords: () => dedupe.flush(),
    isLive: (member) => membership.live().includes(member),
  });
  const deviceDedupe = openSharedDeviceDedupeStore({ redis, keyPrefix, windowMs: options.deviceWindowMs, maxEntries: options.deviceWindowMaxEntries, logger: clusterLogger });
  const dropped: Record<AdmissionDrop, number> = { 'not-preferred': 0, 'lease-busy': 0, closing: 0 };
  let acksWithheld = 0;
  const acking = new Set<Promise<void>>();
  let admission: Admission | undefined;
  let fleet: FleetSync | undefined;
  let isActive = true;
  let fleetSubscriber: RedisClient | undefined;

  // Records cached while this ingestor held a gateway may be stale once another took it over.
  // Each drop starts a new tenure of the gateway here: a prefetch begun in an earlier one is stale.
  const tenures = new Map<string, number>();
  const tenureOf = (gatewayId: string): number => tenures.get(gatewayId) ?? 0;
  const forget = (gatewayId: string): void => {
    tenures.set(gatewayId, tenureOf(gatewayId) + 1);
    dedupe.evict(gatewayId);
    deviceDedupe.evict(gatewayId);
    rollups.evict(gatewayId);
    intents.evict(gatewayId);
  };
  /** The tenure whose write intents were loaded, per gateway: once per takeover, not per batch. */
  const intentsLoaded = new Map<string, number>();
  const loadIntents = async (gatewayId: string, tenure: number): Promise<void> => {
    if (intentsLoaded.get(gatewayId) === tenure) return;
    await intents.load(gatewayId);
    intentsLoaded.set(gatewayId, tenure);
  };
  /** Nothing of the gateway in flight here any more (its records answered): its batch note goes. */
  const endBatchesIfIdle = (gatewayId: string): void => {
    if ((attached?.inFlight(gatewayId) ?? 0) === 0) intents.endBatches(gatewayId);
  };
  let lapsedBeforeWrite = 0;
  leases.onLost((gatewayId) => {
    clusterLogger.warn({ gatewayId }, 'gateway lease lost (not renewed in time or taken over); its next batches go to the holder');
    forget(gatewayId);
  });
  membership.onChange((members) => {
    clusterLogger.info({ members }, 'ingestors of the deployment changed');
    admission?.rebalance();
  });

  const loader: SharedStateLoader = {
    prefetch(gatewayId: string, seqs: readonly number[], identities: readonly DeviceIdentity[]) {
      const tenure = tenureOf(gatewayId);
      return Promise.all([
        dedupe.prefetch(gatewayId, seqs),
        deviceDedupe.prefetch(identities),
        loadIntents(gatewayId, tenure),
        rollups.load(gatewayId),
        intents.noteBatch(gatewayId, seqs),
      ]).then(() => {
        // The batch was taken under the gateway's lease, but the records may come back after the
        // lease lapsed (Redis slow or away) and another ingestor took the gateway's resend: written
        // now, the batch would land beside that copy. Given up instead; the gateway resends it.
        if (leases.holds(gatewayId) && tenureOf(gatewayId) === tenure) return;
        lapsedBeforeWrite++;
        throw new FerryError('FERRY_ERR_NOT_READY', `the lease of gateway ${gatewayId} lapsed while its batch's records were read from Redis; the batch is left for the gateway to resend`, { gatewayId });
      });
    },
  };

  return {
    memberId,
    redis,
    dedupe,
    deviceDedupe,
    rollups,
    intents,
    loader,
    membership,
    leases,
    attach(pipeline) {
      attached = pipeline;
      admission = createAdmission({
        mode: options.mode,
        leases,
        preferred: (gatewayId) => preferredOwner(gatewayId, membership.live()) === memberId,
        accept: (topic, payload) => void pipeline.accept(topic, payload),
        inFlight: (gatewayId) => pipeline.inFlight(gatewayId),
        onTaken: forget,
        waitMs: options.leaseMs * 2,
        lingerMs: 200,
        clock,
        logger: clusterLogger,
        onDrop: (why, n) => {
          dropped[why] += n;
        },
      });
    },
    admit(gatewayId, topic, payload) {
      if (!admission) throw new Error('cluster admission used before attach()');
      admission.admit(gatewayId, topic, payload);
    },
    ackAfterRecords(gatewayId, send) {
      const sending: Promise<void> = Promise.all([dedupe.flush(), deviceDedupe.flush()]).then(
        () => {
          send();
          endBatchesIfIdle(gatewayId);
          admission?.settled(gatewayId);
        },
        (err: unknown) => {
          acksWithheld++;
          clusterLogger.error({ err, gatewayId }, 'records not stored in Redis; the ack is withheld and the gateway resends');
          admission?.settled(gatewayId);
        },
      );
      acking.add(sending);
      void sending.finally(() => acking.delete(sending));
    },
    async acksSent(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all([...acking]), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    },
    released(gatewayId) {
      endBatchesIfIdle(gatewayId);
      admission?.settled(gatewayId);
    },
    attachHealth(health) {
      fleetSubscriber = connectRedis({ url: options.redisUrl, name: 'fleet events', logger: clusterLogger, clock });
      fleet = createFleetSync({ redis, subscriber: fleetSubscriber, keyPrefix, memberId, health, clock, logger: clusterLogger });
    },
    publishWritten(written) {
      fleet?.publishWritten(written);
    },
    startFleet: () => fleet?.start() ?? Promise.resolve(),
    async closeFleet() {
      await fleet?.close();
      fleetSubscriber?.disconnect();
    },
    setActive(active) {
      // Every failed reconnect closes again: one change, one line.
      if (active === isActive) return;
      isActive = active;
      if (active) membership.resume();
      else membership.pause();
      admission?.setActive(active);
      if (!active) clusterLogger.warn({ gatewaysHeld: leases.held().length }, 'broker connection lost: leaving the members and letting the gateways go to the others');
      else clusterLogger.info('broker connection back: a member again');
    },
    fleetCounts: () => fleetCounts(redis, keyPrefix),
    stats() {
      return {
        memberId,
        mode: options.mode,
        members: membership.live(),
        gatewaysHeld: leases.held().length,
        waiting: admission?.waiting ?? 0,
        dropped: { ...dropped },
        lapsedBeforeWrite,
        acksWithheld,
      };
    },
    ready: () => membership.ready(),
    async close() {
      admission?.close();
      // Records still on their way first (bounded): a gateway taken over must find them.
      await Promise.race([Promise.all([dedupe.flush(), deviceDedupe.flush()]).catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
      // Then the leases, so the others take the gateways over at once, then membership.
      await leases.close().catch((err: unknown) => clusterLogger.warn({ err }, 'leases not released; they expire by themselves'));
      await membership.close().catch((err: unknown) => clusterLogger.warn({ err }, 'membership not left; it times out by itself'));
      dedupe.close();
      deviceDedupe.close();
      redis.disconnect();
    },
  };
}
