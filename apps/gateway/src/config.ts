// The gateway's configuration: one zod schema with defaults; types come from it.
import { z } from 'zod';
import { isLoopbackHost, logLevelSchema, opsHttpSchema, refineOpsHttp } from '@ferry/runtime';
import { parseDuration, pipelineSchema } from '@ferry/processing/schema';
import { gatewayIdSchema, limitsSchema } from '@ferry/protocol';
import { devicePatternsSchema } from '@ferry/decoders';

const port = z.number().int().min(0).max(65_535);

/**
 * The embedded device listener. Secure by default, as the Ferry broker and Mosquitto 2 are: an
 * address beyond loopback needs credentials (`passwordFile` or `username`/`password`) or an
 * explicit `allowAnonymous: true`.
 */
const listenSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    /** 0 picks an ephemeral port (tests). */
    port: port.default(1883),
    /** One account shared by every device: it cannot tell devices apart, so deviceMustMatchUser cannot apply. */
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    /** Per-device accounts in the broker's scrypt format, written by `ferry broker passwd add <deviceId> --file <path>`; re-read when it changes. */
    passwordFile: z.string().min(1).optional(),
    /** Devices that send no username connect (those that send one are still checked). */
    allowAnonymous: z.boolean().default(false),
    /**
     * A device logged in as user X may publish only as device X (the `{deviceId}` of its topic, and
     * the device id of every reading). Default: on with `passwordFile`; it needs per-device accounts.
     */
    deviceMustMatchUser: z.boolean().optional(),
    /** Users that publish for many devices (Zigbee2MQTT, OpenMQTTGateway, Telegraf): exempt from deviceMustMatchUser. */
    bridgeUsers: z.array(z.string().min(1)).default([]),
  })
  .strict()
  .superRefine((l, ctx) => {
    if (l.password !== undefined && l.username === undefined) {
      ctx.addIssue({ code: 'custom', path: ['username'], message: 'a password without a username would leave the listener open: set username too' });
    }
    if (l.username !== undefined && l.passwordFile !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['passwordFile'], message: 'set either passwordFile (an account per device) or username/password (one shared account), not both' });
    }
    if (l.deviceMustMatchUser === true && l.passwordFile === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['deviceMustMatchUser'],
        message: 'deviceMustMatchUser needs an account per device: set passwordFile (a shared username/password cannot tell devices apart)',
      });
    }
    if (l.username === undefined && l.passwordFile === undefined && !l.allowAnonymous && !isLoopbackHost(l.host)) {
      ctx.addIssue({
        code: 'custom',
        path: ['host'],
        message: `${l.host} is reachable beyond this host, so anonymous devices are refused: set devices.listen.passwordFile (accounts from \`ferry broker passwd\`) or username/password, or devices.listen.allowAnonymous: true to run open on purpose`,
      });
    }
  });

const mqttUrl = z.string().refine((value) => {
  try {
    return ['mqtt:', 'mqtts:', 'tcp:', 'tls:', 'ssl:', 'ws:', 'wss:'].includes(new URL(value).protocol);
  } catch {
    return false;
  }
}, 'expected an MQTT URL such as mqtt://127.0.0.1:1883 or mqtts://broker.example:8883');

const attachSchema = z
  .object({
    url: mqttUrl,
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    /** Fixed so the broker keeps this gateway's session (and queued messages) across restarts. */
    clientId: z.string().min(1).optional(),
    qos: z.union([z.literal(0), z.literal(1), z.literal(2)]).default(1),
    /**
     * Retained messages replayed on subscribe are a device's last state, possibly hours old, and
     * carry no time of their own for flat payloads: by default they are not taken as readings.
     */
    acceptRetained: z.boolean().default(false),
  })
  .strict();

/**
 * Edge processing (docs/processing.md): pipelines per metric, run before the outbox (only their
 * output is stored) or before the uplink (raw readings stored, processed as batches are built).
 */
const edgeProcessingSchema = z
  .object({
    before: z.enum(['outbox', 'uplink']).default('outbox'),
    pipelines: z.array(pipelineSchema).default([]),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.before !== 'uplink') return;
    // Before the uplink a reading sent keeps the seq of its outbox row, which is what the
    // ingestor dedupes a resend by: steps that make readings of their own have no such row.
    p.pipelines.forEach((pipeline, i) =>
      pipeline.steps.forEach((step, k) => {
        if (step.op === 'rollup' || step.op === 'skew') {
          ctx.addIssue({
            code: 'custom',
            path: ['pipelines', i, 'steps', k, 'op'],
            message: `'${step.op}' makes readings without an outbox row of their own: use it with before: 'outbox' (or at the ingestor)`,
          });
        }
      }),
    );
  });

export const gatewayConfigSchema = z
  .object({
    gatewayId: gatewayIdSchema,
    /** Holds outbox.db and deadletters.db; created when missing. */
    dataDir: z.string().min(1),
    devices: z
      .object({
        listen: z.union([z.literal(false), listenSchema]).prefault({}),
        /** How payloads on each topic pattern are read (docs/devices.md); shared with the ingestor's `direct.patterns`. */
        patterns: devicePatternsSchema,
        attach: attachSchema.optional(),
      })
      .strict()
      .prefault({})
      .refine((d) => d.listen !== false || d.attach !== undefined, {
        message: 'nothing receives device messages: set devices.listen or devices.attach',
        path: ['listen'],
      }),
    uplink: z
      .object({
        url: mqttUrl,
        username: z.string().min(1).optional(),
        password: z.string().optional(),
        /** Default `ferry-gw-<gatewayId>`; fixed so the broker keeps the session and queued acks. */
        clientId: z.string().min(1).optional(),
        /** CA certificate for mqtts: PEM text, or the path of a PEM file. */
        ca: z.string().min(1).optional(),
        rejectUnauthorized: z.boolean().default(true),
        /** A batch not acked within this is sent again (the ingestor dedupes by seq). */
        ackTimeoutMs: z.number().int().positive().default(15_000),
        keepaliveSec: z.number().int().min(0).max(65_535).default(30),
        /** Reconnect delay grows from min to max with jitter (see backoffDelay). */
        reconnectMinMs: z.number().int().positive().default(500),
        reconnectMaxMs: z.number().int().positive().default(30_000),
      })
      .strict(),
    batch: z
      .object({
        maxReadings: z.number().int().positive().default(1000),
        maxBytes: z.number().int().positive().default(256 * 1024),
        /** How long a partial batch waits for more readings. */
        lingerMs: z.number().int().nonnegative().default(20),
        maxInFlight: z.number().int().positive().default(8),
        compression: z.enum(['none', 'gzip']).default('none'),
      })
      .strict()
      .prefault({}),
    outbox: z
      .object({
        /** What a power cut can lose at each level: see SqliteOutboxOptions.synchronous in outbox.ts. */
        synchronous: z.enum(['normal', 'full']).default('full'),
        /** Bounds: rows, bytes (payloads plus a fixed cost a row) and how long a reading is held. */
        maxRows: z.number().int().positive().default(5_000_000),
        /**
         * A number, or `auto` (the default): the outbox may keep the pages it has and grow into
         * `diskShare` of the filesystem's free space, re-checked as it changes, so `whenFull`
         * acts before the disk fills instead of commits failing (docs/durability.md, "A full disk").
         */
        maxBytes: z.union([z.number().int().positive(), z.literal('auto')]).default('auto'),
        /** With `maxBytes: auto`: the share of the free space the outbox may grow into. */
        diskShare: z.number().gt(0).max(0.95).default(0.5),
        /**
         * A file of this many bytes kept beside the outbox and given up when the disk is full, so
         * acked rows can still be deleted and the backlog drains; 0 turns it off. At most 5% of a
         * small filesystem.
         */
        reserveBytes: z.number().int().nonnegative().default(8 * 1024 * 1024),
        /** Default 30 days; readings held longer than this (from their receive time) are dropped as `outbox_age`. */
        maxAgeMs: z.number().int().positive().default(30 * 24 * 3600 * 1000),
        /**
         * `drop-oldest` keeps the newest readings; `refuse-new` withholds PUBACKs so devices keep
         * theirs; `compact` folds the oldest unsent readings into summaries per series and interval
         * (docs/durability.md, "Compaction") and drops the oldest only when that cannot free enough.
         */
        whenFull: z.enum(['drop-oldest', 'refuse-new', 'compact']).default('drop-oldest'),
        compaction: z
          .object({
            /** Length of the interval one summary covers, e.g. '1m', '15m', '1h'. */
            interval: z
              .string()
              .default('1m')
              .refine((v) => parseDuration(v) !== undefined, "expected a duration such as '30s', '1m', '1h'"),
          })
          .strict()
          .prefault({}),
        /** A group commit waits this long for more readings before its transaction. */
        commitLingerMs: z.number().int().nonnegative().default(5),
        commitMaxReadings: z.number().int().positive().default(1000),
      })
      .strict()
      .prefault({}),
    drain: z
      .object({
        /** A backlog of at least this many unsent readings is drained live first, with progress logged. */
        aboveReadings: z.number().int().positive().default(5_000),
        /** Send readings that arrive during a drain ahead of the backlog (docs/durability.md). */
        liveFirst: z.boolean().default(true),
        logIntervalMs: z.number().int().positive().default(5_000),
      })
      .strict()
      .prefault({}),
    deadLetters: z
      .object({
        maxEntries: z.number().int().positive().default(100_000),
        /** How often letters not yet reported upstream are looked for, and counts re-sent while any are held. */
        reportIntervalMs: z.number().int().positive().default(30_000),
      })
      .strict()
      .prefault({}),
    limits: limitsSchema.prefault({}),
    processing: edgeProcessingSchema.optional(),
    http: z.union([z.literal(false), opsHttpSchema]).prefault({}),
    statusIntervalMs: z.number().int().positive().default(10_000),
    logLevel: logLevelSchema.default('info'),
  })
  .strict()
  .superRefine((c, ctx) => {
    refineOpsHttp(ctx, c.http);
    // Before the uplink, pipelines rebuild batches from outbox rows in seq order: summaries would
    // run through them as if they were device readings.
    if (c.outbox.whenFull === 'compact' && c.processing?.before === 'uplink' && c.processing.pipelines.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['outbox', 'whenFull'],
        message: "'compact' cannot be used with processing.before: 'uplink'; use before: 'outbox', or whenFull 'drop-oldest'",
      });
    }
  });

export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;
export type GatewayConfigInput = z.input<typeof gatewayConfigSchema>;
