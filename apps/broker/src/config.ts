// The broker's configuration. Sections are separate objects so that TLS, a credential file,
// ACLs and durable persistence can each be added as one more key without reshaping the rest.
import { z } from 'zod';

const portSchema = z.number().int().min(0).max(65535);

export const brokerListenSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    /** 0 picks a free port (tests, the demo). */
    port: portSchema.default(1884),
  })
  .strict();

export const brokerHttpSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: portSchema.default(0),
  })
  .strict();

export const brokerUserSchema = z
  .object({
    username: z.string().min(1),
    password: z.string().min(1),
  })
  .strict();

export const brokerAuthSchema = z
  .object({
    /** When auth is configured, anonymous clients are refused. */
    users: z.array(brokerUserSchema).min(1),
  })
  .strict();

export const logLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export const brokerConfigSchema = z
  .object({
    listen: brokerListenSchema.prefault({}),
    /** The ops endpoint (/healthz, /metrics); false turns it off. */
    http: z.union([brokerHttpSchema, z.literal(false)]).prefault({}),
    auth: brokerAuthSchema.optional(),
    /**
     * Largest PUBLISH payload accepted, in bytes. A gateway batch envelope is far larger than a
     * device reading, so this is sized for batches; a larger publish closes the connection
     * (MQTT 3.1.1 has no way to refuse one message).
     */
    maxPayloadBytes: z.number().int().positive().default(4 * 1024 * 1024),
    logLevel: logLevelSchema.default('info'),
  })
  .strict();

export type BrokerConfig = z.infer<typeof brokerConfigSchema>;
export type BrokerConfigInput = z.input<typeof brokerConfigSchema>;
export type BrokerUser = z.infer<typeof brokerUserSchema>;
