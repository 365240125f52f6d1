// Explicit, configurable limits on what a device may send. Both the gateway and the
// ingestor enforce them, so a reading that passed one passes the other.
import { z } from 'zod';

export const limitsSchema = z
  .object({
    /** Largest device payload accepted, in bytes. */
    maxPayloadBytes: z.number().int().positive().default(64 * 1024),
    /** Most metrics in one reading. */
    maxMetricsPerReading: z.number().int().positive().default(256),
    /** Most tags in one reading. */
    maxTagsPerReading: z.number().int().nonnegative().default(32),
    /** Longest metric, tag or device name, in characters. */
    maxNameLength: z.number().int().positive().default(128),
    /** Longest tag value or string metric value, in characters. */
    maxStringValueLength: z.number().int().positive().default(1024),
    /** How far ahead of the receiver's clock a device timestamp may be. */
    maxFutureSkewMs: z.number().int().nonnegative().default(5 * 60_000),
    /** How far behind the receiver's clock a device timestamp may be (a backlog can be old). */
    maxPastAgeMs: z.number().int().nonnegative().default(365 * 24 * 3_600_000),
  })
  .strict();

export type Limits = z.infer<typeof limitsSchema>;

export const defaultLimits: Limits = limitsSchema.parse({});
