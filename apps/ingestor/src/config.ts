// The ingestor's configuration, validated by zod; a bad value stops the start naming the field.
import { join } from 'node:path';
import { z } from 'zod';
import { ID_PATTERN, limitsSchema } from '@ferry/protocol';
import { parseConfig } from '@ferry/runtime';
import { defaultPointMapping, sinkConfigSchema } from '@ferry/sinks';

const backoffSchema = z
  .object({
    initialMs: z.number().int().positive().default(500),
    maxMs: z.number().int().positive().default(30_000),
    factor: z.number().min(1).default(2),
  })
  .strict();

const mappingSchema = z
  .object({
    measurement: z.string().min(1).default(defaultPointMapping.measurement),
    statusMeasurement: z.string().min(1).default(defaultPointMapping.statusMeasurement),
    deviceTag: z.string().min(1).default(defaultPointMapping.deviceTag),
    gatewayTag: z.string().min(1).default(defaultPointMapping.gatewayTag),
    staticTags: z.record(z.string(), z.string()).default({}),
  })
  .strict();

const httpSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65_535).default(0),
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
        /** How long ready() waits to be connected and subscribed. */
        readyTimeoutMs: z.number().int().positive().default(15_000),
      })
      .strict(),
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
    /** Largest batch envelope accepted, in bytes. */
    maxBatchBytes: z.number().int().positive().default(4 * 1024 * 1024),
    http: z.union([z.literal(false), httpSchema]).prefault({}),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict()
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
