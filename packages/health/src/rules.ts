// The alert rules file and the health defaults: zod schemas, so a typo names the field.
import { z } from 'zod';
import { FerryError } from '@ferry/protocol';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration: milliseconds as a number, or text like `90s`, `5m`, `1h`. */
export const durationSchema = z.union([
  z.number().int().nonnegative(),
  z
    .string()
    .regex(/^\d+(ms|s|m|h|d)$/, 'a duration is a number of ms or text like "30s", "5m", "1h"')
    .transform((text) => {
      const match = /^(\d+)(ms|s|m|h|d)$/.exec(text);
      return Number(match?.[1]) * (UNITS[match?.[2] ?? 'ms'] ?? 1);
    }),
]);

export function parseDuration(value: number | string): number {
  const parsed = durationSchema.safeParse(value);
  if (!parsed.success) throw new FerryError('FERRY_ERR_CONFIG_INVALID', `bad duration ${JSON.stringify(value)}`);
  return parsed.data;
}

const matchSchema = z
  .object({
    /** Glob on the device id (`*` matches anything). */
    deviceId: z.string().min(1).optional(),
    gatewayId: z.string().min(1).optional(),
    profile: z.string().min(1).optional(),
  })
  .strict();

const base = {
  name: z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'a rule name is 1-100 letters, digits, _ . : -'),
  severity: z.enum(['info', 'warning', 'critical']).default('warning'),
  /** How long the condition must hold before the alert fires. */
  for: durationSchema.default(0),
  /** Hysteresis in time: how long the condition must stay clear before the alert resolves. */
  keepFiringFor: durationSchema.default(0),
  match: matchSchema.optional(),
  summary: z.string().max(500).optional(),
};

export const alertRuleSchema = z.discriminatedUnion('kind', [
  /** The device is offline (status, Last Will or inactivity) or flapping. Unreachable devices are the gateway's alert. */
  z.object({ ...base, kind: z.literal('device-offline') }).strict(),
  /** No data for `after`, whatever status messages say. */
  z.object({ ...base, kind: z.literal('device-stale'), after: durationSchema }).strict(),
  /** A numeric metric crosses a bound; `clear` is the bound it must cross back (hysteresis in value). */
  z
    .object({
      ...base,
      kind: z.literal('metric-threshold'),
      metric: z.string().min(1),
      op: z.enum(['<', '<=', '>', '>=']),
      value: z.number(),
      clear: z.number().optional(),
    })
    .strict(),
  /** The message rate falls below `fraction` of the device's own learned rate. */
  z.object({ ...base, kind: z.literal('rate-drop'), fraction: z.number().gt(0).lt(1).default(0.5), minSamples: z.number().int().positive().default(10) }).strict(),
  /** The share of expected readings received is below `below` (0..1). */
  z
    .object({
      ...base,
      kind: z.literal('completeness'),
      below: z.number().gt(0).max(1),
      clear: z.number().gt(0).max(1).optional(),
      minSamples: z.number().int().positive().default(20),
    })
    .strict(),
  z.object({ ...base, kind: z.literal('gateway-offline') }).strict(),
  /** The oldest unsent reading in a gateway's outbox is older than `olderThan`. */
  z.object({ ...base, kind: z.literal('gateway-backlog'), olderThan: durationSchema }).strict(),
  /**
   * A gateway's disk is nearly full: less than `freeBelow` of its filesystem free (it clears above
   * `clear`), or outbox commits failing on a full disk (devices are not being acknowledged).
   */
  z
    .object({ ...base, kind: z.literal('gateway-disk'), freeBelow: z.number().gt(0).lt(1).default(0.1), clear: z.number().gt(0).lt(1).optional() })
    .strict(),
  /** A gateway reported newly dropped readings within `within`. */
  z.object({ ...base, kind: z.literal('gateway-dropped'), within: durationSchema.default(600_000) }).strict(),
  /** The ingestor's dead letters grew by at least `increase` within `within`. */
  z.object({ ...base, kind: z.literal('deadletters-rising'), increase: z.number().int().positive(), within: durationSchema.default(600_000) }).strict(),
]);

export type AlertRuleInput = z.input<typeof alertRuleSchema>;
export type AlertRule = z.infer<typeof alertRuleSchema>;
export type AlertRuleKind = AlertRule['kind'];
export type Severity = AlertRule['severity'];

const deviceOverrideSchema = z
  .object({
    timeoutMs: durationSchema.optional(),
    expectedIntervalMs: durationSchema.optional(),
    profile: z.string().min(1).optional(),
  })
  .strict();

export const healthDefaultsSchema = z
  .object({
    /** Inactivity timeout before anything is learned about a device. */
    timeoutMs: durationSchema.default(600_000),
    /** Floor for a learned timeout. */
    minTimeoutMs: durationSchema.default(60_000),
    /** A learned timeout is this many of the device's own reporting intervals. */
    intervalFactor: z.number().min(1).default(3),
    /** Readings needed before the interval is trusted. */
    learnAfter: z.number().int().positive().default(5),
    /** Suspect after this share of the timeout without word. */
    suspectFraction: z.number().gt(0).lt(1).default(0.5),
    flapWindowMs: durationSchema.default(900_000),
    /** Online/offline changes within the window that make a device flapping. */
    flapTransitions: z.number().int().min(2).default(4),
    /** A gateway is offline once quiet for this many of its status intervals (its status says how often it publishes). */
    gatewayIntervalFactor: z.number().min(2).default(3),
    /** Floor for that timeout: a gateway publishing every second is not dropped for one slow second. */
    gatewayMinTimeoutMs: durationSchema.default(5_000),
    /** The timeout for a gateway whose status does not say its interval (a gateway older than that field). */
    gatewayTimeoutMs: durationSchema.default(60_000),
    /** After a restart or a lost broker/database link, alerts wait this long (no notification storm). */
    graceMs: durationSchema.default(120_000),
    historyLimit: z.number().int().positive().default(20),
    /** A device not heard from for this long is forgotten (its state and its stored row); likewise a gateway with no devices left. */
    forgetAfter: durationSchema.default(30 * 86_400_000),
    /** Devices tracked at most: messages from further devices are not tracked, only counted (`refused`). */
    maxDevices: z.number().int().positive().default(50_000),
    /** Gateways tracked at most: statuses of further gateways are not tracked, only counted (`refusedGateways`). */
    maxGateways: z.number().int().positive().default(10_000),
    fields: z
      .object({
        battery: z.array(z.string()).default(['battery', 'battery_pct', 'bat', 'batt']),
        rssi: z.array(z.string()).default(['rssi', 'signal', 'linkquality']),
        firmware: z.array(z.string()).default(['firmware', 'fw', 'fw_version', 'firmware_version']),
      })
      .strict()
      .default({ battery: ['battery', 'battery_pct', 'bat', 'batt'], rssi: ['rssi', 'signal', 'linkquality'], firmware: ['firmware', 'fw', 'fw_version', 'firmware_version'] }),
    profiles: z.record(z.string(), deviceOverrideSchema.omit({ profile: true })).default({}),
    devices: z.record(z.string(), deviceOverrideSchema).default({}),
  })
  .strict();

export type HealthDefaultsInput = z.input<typeof healthDefaultsSchema>;
export type HealthDefaults = z.infer<typeof healthDefaultsSchema>;

export const rulesFileSchema = z.object({ rules: z.array(alertRuleSchema) }).strict();

/** Parses rules (inline config or a rules file's content); duplicate names are an error. */
export function parseRules(input: unknown, where = 'health.rules'): AlertRule[] {
  const parsed = z.array(alertRuleSchema).safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `${where}${issue?.path.length ? `.${issue.path.join('.')}` : ''}: ${issue?.message ?? 'invalid'}`, {
      issues: parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
    });
  }
  const seen = new Set<string>();
  for (const rule of parsed.data) {
    if (seen.has(rule.name)) throw new FerryError('FERRY_ERR_CONFIG_INVALID', `${where}: rule name "${rule.name}" is used twice`);
    seen.add(rule.name);
  }
  return parsed.data;
}

export function parseHealthDefaults(input: unknown = {}): HealthDefaults {
  const parsed = healthDefaultsSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `health.defaults${issue?.path.length ? `.${issue.path.join('.')}` : ''}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

/** A glob with `*` as the only wildcard. */
export function globMatcher(glob: string): (value: string) => boolean {
  if (!glob.includes('*')) return (value) => value === glob;
  const re = new RegExp(`^${glob.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  return (value) => re.test(value);
}
