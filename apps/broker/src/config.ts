// The broker's configuration. Sections are separate objects so that TLS, a credential file,
// ACLs and durable persistence can each be added as one more key without reshaping the rest.
import { z } from 'zod';
import { isLoopbackHost, logLevelSchema, opsHttpSchema, refineOpsHttp } from '@ferry/runtime';

const portSchema = z.number().int().min(0).max(65535);

export const brokerListenSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    /** 0 picks a free port (tests, the demo). */
    port: portSchema.default(1884),
  })
  .strict();

export const brokerHttpSchema = opsHttpSchema;

export const brokerUserSchema = z
  .object({
    username: z.string().min(1),
    password: z.string().min(1),
  })
  .strict();

export const brokerAuthSchema = z
  .object({
    /** Users in the config itself (plain passwords; prefer passwordFile). */
    users: z.array(brokerUserSchema).min(1).optional(),
    /** A credential file of scrypt hashes, managed by `ferry broker passwd`. */
    passwordFile: z.string().min(1).optional(),
    /**
     * Anonymous clients are refused unless this is true. `auth: { allowAnonymous: true }` alone is
     * how a broker listening beyond loopback is run open on purpose.
     */
    allowAnonymous: z.boolean().default(false),
  })
  .strict()
  .refine((a) => a.users !== undefined || a.passwordFile !== undefined || a.allowAnonymous, {
    message: 'auth needs users or passwordFile (or allowAnonymous: true to run open on purpose)',
  });

export const brokerTlsSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: portSchema.default(8883),
    /** PEM files. */
    cert: z.string().min(1),
    key: z.string().min(1),
    /** CA bundle that client certificates must chain to; with requireClientCert. */
    ca: z.string().min(1).optional(),
    /** Refuse TLS clients without a certificate signed by `ca`; such a client's username is its certificate CN. */
    requireClientCert: z.boolean().default(false),
  })
  .strict()
  .refine((t) => !t.requireClientCert || t.ca !== undefined, { message: 'requireClientCert needs ca', path: ['ca'] });

export const brokerWebSocketSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: portSchema.default(8080),
    path: z.string().startsWith('/').default('/mqtt'),
  })
  .strict();

export const brokerLimitsSchema = z
  .object({
    /** MQTT connections open at once over all listeners; more are closed on accept. */
    maxConnections: z.number().int().positive().default(10_000),
    /** Per-client publish rate (token bucket); a client over it is disconnected. */
    publishRate: z.object({ perSecond: z.number().positive(), burst: z.number().int().positive() }).strict().optional(),
    /** Bytes waiting on a subscriber's socket beyond which its connection is closed (it stopped reading). */
    maxQueuedBytes: z.number().int().positive().default(8 * 1024 * 1024),
    /** How long aedes waits for a backed-up socket to drain before closing it. */
    drainTimeoutMs: z.number().int().positive().default(10_000),
    /** Largest keepalive a client may ask for, in seconds; 0 or more is refused. Unset: any. */
    maxKeepaliveSeconds: z.number().int().positive().optional(),
  })
  .strict();

export const brokerPersistenceSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('memory') }).strict(),
  z
    .object({
      type: z.literal('sqlite'),
      /** Database file; defaults to <dataDir>/broker.db. */
      path: z.string().min(1).optional(),
      /**
       * full (default): every commit a PUBACK waits for is fsynced, so a power cut loses nothing the
       * broker acknowledged; normal: commits survive kill -9, a power cut may lose the last ones.
       */
      synchronous: z.enum(['full', 'normal']).default('full'),
    })
    .strict(),
]);


export const brokerConfigSchema = z
  .object({
    /** The plain TCP listener; false turns it off. */
    listen: z.union([brokerListenSchema, z.literal(false)]).prefault({}),
    /** The MQTT-over-TLS listener, off unless configured. */
    tls: brokerTlsSchema.optional(),
    /** The MQTT-over-WebSocket listener, off unless configured. */
    websocket: brokerWebSocketSchema.optional(),
    /**
     * A Mosquitto-style ACL file (see docs/broker.md). A broker with users needs one, or `acl: off`
     * to let every client use every topic on purpose.
     */
    aclFile: z.string().min(1).optional(),
    acl: z.literal('off').optional(),
    limits: brokerLimitsSchema.prefault({}),
    /**
     * Cluster mode: brokers sharing this Redis relay each other's publishes and share sessions
     * (mqemitter-redis + aedes-persistence-redis); `persistence` must then be left unset.
     */
    cluster: z.object({ redisUrl: z.string().startsWith('redis://') }).strict().optional(),
    /** The ops endpoint (/healthz, /metrics); false turns it off. */
    http: z.union([brokerHttpSchema, z.literal(false)]).prefault({}),
    auth: brokerAuthSchema.optional(),
    /** Directory for the broker's state; with it, persistence defaults to SQLite at <dataDir>/broker.db. */
    dataDir: z.string().min(1).optional(),
    /** Sessions, retained messages and queued QoS 1/2 messages: in memory (lost on restart) or SQLite. */
    persistence: brokerPersistenceSchema.optional(),
    /**
     * Largest PUBLISH payload accepted, in bytes. A gateway batch envelope is far larger than a
     * device reading, so this is sized for batches; a larger publish closes the connection
     * (MQTT 3.1.1 has no way to refuse one message).
     */
    maxPayloadBytes: z.number().int().positive().default(4 * 1024 * 1024),
    logLevel: logLevelSchema.default('info'),
  })
  .strict()
  .superRefine((config, ctx) => {
    refineOpsHttp(ctx, config.http);
    // Several users without an ACL could each read and wipe the others' data (one site
    // subscribing to every site's batches, publishing another's acks): refused unless said on purpose.
    const hasUsers = config.auth !== undefined && (config.auth.users !== undefined || config.auth.passwordFile !== undefined);
    if (hasUsers && config.aclFile === undefined && config.acl !== 'off') {
      ctx.addIssue({
        code: 'custom',
        path: ['aclFile'],
        message:
          'auth has users but no ACL, so every user could read and publish every topic (one site the batches and acks of another): set aclFile to an ACL file (docs/broker.md "ACL file"; docker/config/acl.conf gives each gateway its own topics), or acl: off to run without ACLs on purpose',
      });
    }
    if (config.aclFile !== undefined && config.acl === 'off') {
      ctx.addIssue({ code: 'custom', path: ['acl'], message: 'acl: off contradicts aclFile: set one of them' });
    }
    // Secure by default, as Mosquitto 2 is: without `auth` the broker serves loopback only. A
    // listener others can reach needs credentials, a client-certificate TLS listener, or an
    // explicit `auth: { allowAnonymous: true }`.
    if (config.auth) return;
    const open: string[] = [];
    if (config.listen !== false && !isLoopbackHost(config.listen.host)) open.push(`listen.host ${config.listen.host}`);
    if (config.tls && !config.tls.requireClientCert && !isLoopbackHost(config.tls.host)) open.push(`tls.host ${config.tls.host}`);
    if (config.websocket && !isLoopbackHost(config.websocket.host)) open.push(`websocket.host ${config.websocket.host}`);
    if (open.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['auth'],
        message: `${open.join(', ')} is reachable beyond this host, so anonymous access is off: set auth.users or auth.passwordFile (or auth.allowAnonymous: true to run open on purpose)`,
      });
    }
  });


export type BrokerConfig = z.infer<typeof brokerConfigSchema>;
export type BrokerConfigInput = z.input<typeof brokerConfigSchema>;
export type BrokerUser = z.infer<typeof brokerUserSchema>;
export type BrokerPersistenceConfig = z.infer<typeof brokerPersistenceSchema>;
