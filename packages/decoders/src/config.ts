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
] as const;

export const formatNameSchema = z.enum(FORMAT_NAMES);
export type FormatName = z.infer<typeof formatNameSchema>;

/** How a field's value is read: decided per field by configuration, never by looking at one message. */
export const coercionRuleSchema = z.enum(['number', 'string', 'boolean']);
export type CoercionRule = z.infer<typeof coercionRuleSchema>;

/** The unit of numeric device timestamps; `auto` tells them apart by magnitude. */
export const timestampUnitSchema = z.enum(['auto', 's', 'ms', 'us', 'ns', 'iso']);
export type TimestampUnit = z.infer<typeof timestampUnitSchema>;

export const formatConfigSchema = z
  .object({
    pattern: z.string().min(1),
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
      compilePattern(value.pattern, value.kind);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['pattern'], message: (err as Error).message });
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
