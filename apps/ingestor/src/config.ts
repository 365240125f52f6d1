// The ingestor's configuration, validated by zod; a bad value stops the start naming the field.
import { join } from 'node:path';
import { z } from 'zod';
import { ID_PATTERN, limitsSchema, measurementProblem, tagProblem } from '@ferry/protocol';
import { devicePatternsSchema } from '@ferry/decoders';
import { logLevelSchema, opsHttpSchema, parseConfig, refineOpsHttp } from '@ferry/runtime';
import { defaultPointMapping, sinkConfigSchema } from '@ferry/sinks';
import { healthConfigSchema } from './health.js';
import { ingestorProcessingSchema } from './process-config.js';

const backoffSchema = z
  .object({
    initialMs: z.number().int().positive().default(500),
    maxMs: z.number().int().positive().default(30_000),
    factor: z.number().min(1).default(2),
  })
  .strict();

/** A name checked against the database's name rules (@ferry/protocol names.ts) at start-up, not at the first write. */
function dbName(check: (name: string) => string | undefined) {
  return z.string().superRefine((name, ctx) => {
    const problem = check(name);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });
}
const measurementName = dbName(measurementProblem);
const tagKey = dbName((key) => tagProblem(key, ''));

const mappingSchema = z
  .object({
    measurement: measurementName.default(defaultPointMapping.measurement),
    statusMeasurement: measurementName.default(defaultPointMapping.statusMeasurement),
    deviceTag: tagKey.default(defaultPointMapping.deviceTag),
    gatewayTag: tagKey.default(defaultPointMapping.gatewayTag),
    staticTags: z
      .record(z.string(), z.string())
      .superRefine((tags, ctx) => {
        for (const [key, value] of Object.entries(tags)) {
          const problem = tagProblem(key, value);
          if (problem) ctx.addIssue({ code: 'custom', message: problem, path: [key] });
        }
      })
      .default({}),
  })
  .strict();

const httpSchema = opsHttpSchema
  .extend({
    /** API tokens; with none, /api answers loopback callers only (docs/health.md). Each also opens /metrics. */
    // `name` is who acts with the token (an ack, a silence): `token-1`, `token-2`... when not given.
    tokens: z
      .array(z.object({ token: z.string().min(16, 'an API token is at least 16 characters'), role: z.enum(['admin', 'read']), name: z.string().min(1).max(100).optional() }).strict())
      .default([])
      .transform((tokens) => tokens.map((t, i) => ({ ...t, name: t.name ?? `token-${i + 1}` }))),
    /** Grafana as an operator's browser reaches it: the ops view links devices and gateways to its dashboards. */
    grafanaUrl: z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL such as http://localhost:3000' }).optional(),
  })
  .strict();

export const ingestorConfigSchema = z
  .object({
    ingestorId: z.string().regex(ID_PATTERN, 'an ingestor id is 1-128 characters without / # + or control characters').default('ingestor-1'),
    /** Holds dedupe.db, deadletters.db and, for the default sink, points.db. */
    dataDir: z.string().min(1),
    broker: z
      .object({
        url: z.string().regex(/^(mqtts?|wss?|tcp|ssl):\/\/./, 'expected a broker URL such as mqtt://127.0.0.1:1883'),
        username: z.string().optional(),
        password: z.string().optional(),
        /** Fixed, so the broker keeps the persistent session; default ferry-ingestor-<ingestorId>. */
        clientId: z.string().min(1).max(128).optional(),
        /**
         * How long ready() waits to be connected and subscribed. Generous: a broker that is still
         * starting, or is busy handing this session its queued backlog (after a crash), is not a
         * reason to give up; the client reconnects and resubscribes meanwhile.
         */
        readyTimeoutMs: z.number().int().positive().default(120_000),
        /**
         * MQTT 5 shared-subscription group (e.g. `ferry-ingestors`): every ingestor of the group
         * subscribes to `$share/<group>/...` and the broker gives each message to one of them.
         * Needs an MQTT 5 broker (Mosquitto 2); setting it switches the connection to MQTT 5.
         */
        sharedGroup: z.string().regex(ID_PATTERN, 'a share group name has no / # + or control characters').optional(),
      })
      .strict(),
    /**
     * Static partition for brokers without shared subscriptions (aedes, MQTT 3.1.1): every
     * ingestor subscribes to everything and keeps only the gateways (and direct devices) whose
     * id hashes to `index` modulo `count`. All `count` ingestors must run for all data to flow.
     */
    partition: z
      .object({ index: z.number().int().nonnegative(), count: z.number().int().positive() })
      .strict()
      .refine((p) => p.index < p.count, { message: 'partition.index must be below partition.count', path: ['index'] })
      .optional(),
    /**
     * State shared by several ingestors (docs/scaling.md). With `redisUrl` the gateway-seq dedupe
     * records, device identities, fleet accounting, device health and alert acks and silences live
     * in Redis, and every gateway is processed by one ingestor at a time, the holder of its lease.
     * Without it one process keeps its state in SQLite under dataDir.
     */
    state: z
      .object({
        /** e.g. redis://:password@redis:6379/0; run Redis with appendonly yes and appendfsync always (docs/scaling.md). */
        redisUrl: z.string().regex(/^rediss?:\/\/./, 'expected a Redis URL such as redis://127.0.0.1:6379').optional(),
        /** Every key of this deployment starts with it, so one Redis can serve several. */
        keyPrefix: z.string().regex(/^[A-Za-z0-9_.:{}-]{1,64}$/, 'a key prefix is 1-64 letters, digits or _ . : { } -').default('ferry:'),
        /** How long a gateway stays with an ingestor that stopped renewing its lease (died or lost Redis). */
        leaseMs: z.number().int().min(1_000).max(600_000).default(5_000),
        /** How often an ingestor says it is alive; one missing three heartbeats is taken for dead. */
        heartbeatMs: z.number().int().min(100).max(60_000).default(1_000),
        /** Gateway seqs per gateway whose records Redis keeps (the newest). */
        windowPerGateway: z.number().int().positive().default(200_000),
      })
      .strict()
      .refine((s) => s.heartbeatMs * 3 <= s.leaseMs, { message: 'state.leaseMs must be at least three state.heartbeatMs', path: ['leaseMs'] })
      .prefault({}),
    /**
     * Devices that publish straight to the cloud broker (no gateway). Absent: not subscribed.
     * Their QoS 1 publishes are PUBACKed only once journaled in <dataDir>/journal.db.
     */
    direct: z
      .object({
        /** Topic patterns and their formats, exactly as a gateway's `devices.patterns` (docs/devices.md). */
        patterns: devicePatternsSchema,
        /** Value of the gateway tag on these readings' points. */
        gatewayTag: z.string().min(1).default('direct'),
        /** Journal rows held (received, not yet written); at the bound PUBACKs stop and the broker holds the rest. */
        maxJournalRows: z.number().int().positive().default(1_000_000),
        /** Readings taken from the journal into memory at once. */
        maxInMemory: z.number().int().positive().default(20_000),
        /** `full` (default): a commit the PUBACK waits for survives a power cut, at one fsync per commit; `normal`: a process crash (kill -9) only. */
        synchronous: z.enum(['normal', 'full']).default('full'),
      })
      .strict()
      .optional(),
    skew: z
      .object({
        /**
         * A device time outside limits.maxFutureSkewMs / maxPastAgeMs is: `deadletter` (refused,
         * kept in the dead-letter store), `clamp` (written at its receive time, the device time
         * kept in field `ferry_device_ts_ms`) or `flag` (written at the device time with field
         * `ferry_ts_skewed=true`).
         */
        policy: z.enum(['deadletter', 'clamp', 'flag']).default('deadletter'),
      })
      .strict()
      .prefault({}),
    /** Where readings go; default the embedded SQLite sink at <dataDir>/points.db. */
    sink: sinkConfigSchema.optional(),
    mapping: mappingSchema.prefault({}),
    limits: limitsSchema.prefault({}),
    write: z
      .object({
        /** Most points in one database write; readings of many batches are coalesced up to it. */
        maxPoints: z.number().int().positive().default(5000),
        /** Longest a point waits for others to join its write. */
        lingerMs: z.number().int().nonnegative().default(50),
        /** Writes outstanding at once. */
        maxInFlight: z.number().int().positive().default(2),
        retry: backoffSchema.prefault({}),
        /** On close, how long to wait for in-flight writes before giving up on them (they are not acked). */
        closeTimeoutMs: z.number().int().nonnegative().default(5000),
      })
      .strict()
      .prefault({}),
    dedupe: z
      .object({
        /**
         * Per gateway, seqs within this distance of the highest seen are remembered (a count of
         * seqs, not time). Older resends are written again, which overwrites the same point.
         */
        windowPerGateway: z.number().int().positive().default(1_000_000),
        /**
         * How long a device reading's own identity (deviceSeq and/or device time plus content) is
         * remembered, to catch a device's republish that got a second gateway seq, or a direct
         * device's republish after a lost PUBACK.
         */
        deviceWindowMs: z.number().int().positive().default(3_600_000),
        /** Most device identities held; beyond it the oldest are discarded and counted. */
        deviceWindowMaxEntries: z.number().int().positive().default(1_000_000),
      })
      .strict()
      .prefault({}),
    queue: z
      .object({
        /** Batches held in memory waiting for their ack; beyond it new batches are shed unacked. */
        maxBatches: z.number().int().positive().default(1000),
        /** Readings held in memory across those batches. */
        maxReadings: z.number().int().positive().default(200_000),
      })
      .strict()
      .prefault({}),
    deadLetters: z
      .object({
        /** Entries kept; beyond it the oldest are discarded and counted. */
        maxEntries: z.number().int().positive().default(100_000),
      })
      .strict()
      .prefault({}),
    /** Cleaning/filtering pipelines before the raw write, and continuous rollups (docs/processing.md). */
    processing: ingestorProcessingSchema.prefault({}),
    /** Largest batch envelope accepted, in bytes. */
    maxBatchBytes: z.number().int().positive().default(4 * 1024 * 1024),
    /**
     * Take v1 batch envelopes (no nonce) from gateways not yet upgraded. Their acks are forgeable
     * by batch id alone; turn this on only while a fleet moves to v2 (docs/protocol.md, "Versions").
     */
    acceptBatchesWithoutNonce: z.boolean().default(false),
    http: z.union([z.literal(false), httpSchema]).prefault({}),
    health: healthConfigSchema.prefault({}),
    logLevel: logLevelSchema.default('info'),
  })
  .strict()
  .superRefine((c, ctx) => {
    refineOpsHttp(ctx, c.http, c.http === false ? 0 : c.http.tokens.length);
    if (c.state.redisUrl !== undefined) {
      // Leases in Redis decide which ingestor takes a gateway: a static partition would fight them.
      if (c.partition !== undefined) ctx.addIssue({ code: 'custom', message: 'with state.redisUrl gateways are shared out by leases in Redis: remove partition', path: ['partition'] });
      // Not shared yet: a direct device's journal and identities live in one process. (Rollup
      // windows are: they move with the gateway's lease, cluster/shared-rollups.ts.)
      if (c.direct !== undefined) ctx.addIssue({ code: 'custom', message: 'direct devices are not yet shared through Redis: take them with an ingestor without state.redisUrl (docs/scaling.md)', path: ['direct'] });
    }
    // Without Redis a shared subscription hands a device's batches to any ingestor of the group:
    // each would hold part of every window and they would overwrite each other's rollup points.
    // With it, a gateway's lease keeps its batches, and its windows, on one ingestor at a time.
    if (c.processing.rollups.length > 0 && c.broker.sharedGroup !== undefined && c.state.redisUrl === undefined) {
      ctx.addIssue({ code: 'custom', message: 'rollups need every reading of a device on one ingestor: with broker.sharedGroup set state.redisUrl (leases keep a gateway on one ingestor), or use partition (by gateway)', path: ['processing', 'rollups'] });
    }
  })
  .transform((c) => ({
    ...c,
    broker: { ...c.broker, clientId: c.broker.clientId ?? `ferry-ingestor-${c.ingestorId}` },
    sink: c.sink ?? sinkConfigSchema.parse({ type: 'sqlite', path: join(c.dataDir, 'points.db') }),
  }));

export type IngestorConfig = z.output<typeof ingestorConfigSchema>;
export type IngestorConfigInput = z.input<typeof ingestorConfigSchema>;

/** Validates config; throws FERRY_ERR_CONFIG_INVALID naming each bad field. */
export function parseIngestorConfig(input: unknown): IngestorConfig {
  return parseConfig(ingestorConfigSchema, input, 'ingestor config');
}
