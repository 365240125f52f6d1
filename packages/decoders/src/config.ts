// What a device pattern entry may say about the format of the messages it matches: the one
// definition behind the gateway's `devices.patterns` and the ingestor's `direct.patterns`.
import { z } from 'zod';
import { compilePattern, DEFAULT_DEVICE_PATTERNS } from '@ferry/protocol';

export const FORMAT_NAMES = [
  'ferry',
  'flat',
  'tasmota',
  'shelly-gen1',
  'shelly-gen2',
  'esphome',
  'homeassistant',
  'omg-ble',
  'influx-line',
  'ttn-v3',
  'sparkplug-b',
  'thingsboard',
  'scalar',
] as const;

export const formatNameSchema = z.enum(FORMAT_NAMES);
export type FormatName = z.infer<typeof formatNameSchema>;

/** How a field's value is read: decided per field by configuration, never by looking at one message. */
export const coercionRuleSchema = z.enum(['number', 'string', 'boolean']);
export type CoercionRule = z.infer<typeof coercionRuleSchema>;

/** The unit of numeric device timestamps; `auto` tells them apart by magnitude. */
export const timestampUnitSchema = z.enum(['auto', 's', 'ms', 'us', 'ns', 'iso']);
export type TimestampUnit = z.infer<typeof timestampUnitSchema>;

/**
 * A metric name for a bare scalar payload: literal text with `{N}` placeholders, each replaced by
 * topic level N (1 = the first level, -1 = the last): `{-1}`, `sensor_{3}`, `temperature`.
 */
const SCALAR_PLACEHOLDER = /\{(-?\d+)\}/g;

export const scalarConfigSchema = z
  .object({
    metric: z.string().min(1).max(200),
    /** How the payload text is read: the rule is configuration, never guessed from one message. */
    type: coercionRuleSchema,
  })
  .strict();
export type ScalarConfig = z.infer<typeof scalarConfigSchema>;

/** What a pattern does with what it matches: decode it by its format, or count it as ignored. */
export const patternActionSchema = z.enum(['decode', 'ignore']);
export type PatternAction = z.infer<typeof patternActionSchema>;

/** The topic levels `{N}` names in a scalar metric template, in order of appearance. */
export function scalarPlaceholders(metric: string): number[] {
  return [...metric.matchAll(SCALAR_PLACEHOLDER)].map((m) => Number(m[1]));
}

/** The metric name a scalar template gives for a topic; undefined when the topic lacks a level it names. */
export function scalarMetricName(metric: string, topic: string): string | undefined {
  const levels = topic.split('/');
  let missing = false;
  const name = metric.replace(SCALAR_PLACEHOLDER, (_whole, n: string) => {
    const index = Number(n);
    const level = index > 0 ? levels[index - 1] : levels[levels.length + index];
    if (level === undefined || level.length === 0) missing = true;
    return level ?? '';
  });
  return missing ? undefined : name;
}

/**
 * An ignore pattern need not name a device (`shellies/announce`, `homeassistant/#`): then it is a
 * plain MQTT filter of literals, `+` and a final `#` (which, as in MQTT, also matches the parent).
 */
export function compileIgnoreFilter(pattern: string): { readonly filter: string; match(topic: string): boolean } {
  const levels = pattern.split('/');
  levels.forEach((level, i) => {
    if (level === '#' && i !== levels.length - 1) throw new Error(`pattern "${pattern}": # must be the last level`);
    if (level !== '+' && level !== '#' && /[+#{}]/.test(level)) throw new Error(`pattern "${pattern}": unknown placeholder in level "${level}"`);
  });
  return {
    filter: pattern,
    match(topic) {
      const parts = topic.split('/');
      for (let i = 0; i < levels.length; i++) {
        const level = levels[i];
        if (level === '#') return true;
        const part = parts[i];
        if (part === undefined) return false;
        if (level !== '+' && level !== part) return false;
      }
      return parts.length === levels.length;
    },
  };
}

export function namesDevice(pattern: string): boolean {
  return pattern.split('/').some((l) => l === '{deviceId}' || l === '{deviceId#}');
}

export const formatConfigSchema = z
  .object({
    pattern: z.string().min(1),
    /** `ignore`: messages on the pattern are neither stored nor dead-lettered, only counted by `reason`. Default `decode`. */
    action: patternActionSchema.optional(),
    /** Why the pattern is ignored (e.g. `home assistant discovery`); the pattern itself when not given. */
    reason: z.string().min(1).max(100).optional(),
    /** For format `scalar`: the metric a bare payload (`21.5`, `ON`, `Normal`) is written as, and its type. */
    scalar: scalarConfigSchema.optional(),
    format: formatNameSchema.default('ferry'),
    /** `status` makes every message on the pattern an availability message. */
    kind: z.enum(['telemetry', 'status']).default('telemetry'),
    /** Per-field overrides of the format's defaults, keyed by the metric name Ferry writes. */
    coerce: z.record(z.string().min(1), coercionRuleSchema).optional(),
    /** Unit of numeric timestamps in the payload; default per format (see docs/devices.md). */
    timestampUnit: timestampUnitSchema.optional(),
    /** Take the device id from this payload field (dotted path; a tag name for influx-line) instead of the topic. */
    deviceIdField: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((value, ctx) => {
    try {
      if (value.action === 'ignore' && !namesDevice(value.pattern)) compileIgnoreFilter(value.pattern);
      else compilePattern(value.pattern, value.kind);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['pattern'], message: (err as Error).message });
    }
    if (value.reason !== undefined && value.action !== 'ignore') {
      ctx.addIssue({ code: 'custom', path: ['reason'], message: 'reason is only read with action "ignore"' });
    }
    if (value.action === 'ignore') return;
    if (value.format === 'scalar' && value.scalar === undefined) {
      ctx.addIssue({ code: 'custom', path: ['scalar'], message: 'format "scalar" needs scalar: { metric, type } (e.g. { "metric": "{-1}", "type": "number" })' });
    }
    if (value.format !== 'scalar' && value.scalar !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['scalar'], message: `scalar is only read by format "scalar", not "${value.format}"` });
    }
    if (value.format === 'scalar' && value.deviceIdField !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['deviceIdField'], message: 'a bare scalar payload has no field to take the device id from' });
    }
    if (value.scalar !== undefined) {
      const levels = value.pattern.split('/');
      const open = levels.some((l) => l === '#' || l === '{deviceId#}');
      for (const n of scalarPlaceholders(value.scalar.metric)) {
        if (n === 0) ctx.addIssue({ code: 'custom', path: ['scalar', 'metric'], message: 'topic levels count from 1 (or from -1 at the end); {0} names none' });
        else if (!open && Math.abs(n) > levels.length) {
          ctx.addIssue({ code: 'custom', path: ['scalar', 'metric'], message: `{${n}} names a topic level beyond the ${levels.length} levels of "${value.pattern}"` });
        }
      }
      if (/[{}]/.test(value.scalar.metric.replace(SCALAR_PLACEHOLDER, ''))) {
        ctx.addIssue({ code: 'custom', path: ['scalar', 'metric'], message: 'placeholders are {N} with N a topic level number, e.g. {-1} for the last level' });
      }
    }
  });

export type FormatConfig = z.infer<typeof formatConfigSchema>;
export type FormatConfigInput = z.input<typeof formatConfigSchema>;

/** Ferry's own topics and JSON: what a gateway or an ingestor reads when no patterns are configured. */
export const DEFAULT_PATTERN_CONFIGS: readonly FormatConfig[] = [
  { pattern: DEFAULT_DEVICE_PATTERNS.telemetry, kind: 'telemetry', format: 'ferry' },
  { pattern: DEFAULT_DEVICE_PATTERNS.status, kind: 'status', format: 'ferry' },
];

/** A list of pattern entries (first match decodes), defaulting to Ferry's own topics. */
export const devicePatternsSchema = z
  .array(formatConfigSchema)
  .min(1)
  .default(() => DEFAULT_PATTERN_CONFIGS.map((p) => ({ ...p })));
