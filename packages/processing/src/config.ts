// The `processing` configuration section: pipelines of steps, chosen per metric (and device) by
// glob. Validated once at start; a bad step stops the start naming the field.
import { z } from 'zod';
import { FerryError } from '@ferry/protocol';
import { parseDuration } from './duration.js';
import { AGGREGATES } from './rollup.js';
import { UNITS, unitMismatch } from './units.js';

const finite = () => z.number().refine(Number.isFinite, 'must be a finite number');
const positiveInt = () => z.number().int().positive();
/** Every step may write a flag on the reading for each value it changes or removes. */
const flag = z.boolean().default(false);

const rangeStep = z
  .object({
    op: z.literal('range'),
    min: finite().optional(),
    max: finite().optional(),
    action: z.enum(['drop', 'clamp', 'flag']).default('drop'),
    flag,
  })
  .strict()
  .refine((s) => s.min !== undefined || s.max !== undefined, { message: 'give min, max or both', path: ['min'] })
  .refine((s) => s.min === undefined || s.max === undefined || s.min <= s.max, { message: 'min must not exceed max', path: ['max'] });

const hampelStep = z
  .object({
    op: z.literal('hampel'),
    window: z.number().int().min(3).max(1000).default(7),
    threshold: z.number().positive().default(3),
    minDeviation: z.number().nonnegative().default(0),
    action: z.enum(['drop', 'replace', 'flag']).default('replace'),
    flag,
  })
  .strict();

const medianStep = z
  .object({ op: z.literal('median'), window: z.number().int().min(1).max(1000).default(5), flag })
  .strict();

const stuckStep = z
  .object({
    op: z.literal('stuck'),
    samples: z.number().int().min(2).optional(),
    durationMs: positiveInt().optional(),
    tolerance: z.number().nonnegative().default(0),
    action: z.enum(['drop', 'flag']).default('flag'),
    flag,
  })
  .strict()
  .refine((s) => s.samples !== undefined || s.durationMs !== undefined, { message: 'give samples, durationMs or both', path: ['samples'] });

const unitStep = z
  .object({ op: z.literal('unit'), from: z.string(), to: z.string(), flag })
  .strict()
  .superRefine((s, ctx) => {
    const problem = unitMismatch(s.from, s.to);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, path: [UNITS[s.from] ? 'to' : 'from'] });
  });

const skewStep = z
  .object({ op: z.literal('skew'), offsetMs: z.number().int(), deviceTimeOnly: z.boolean().default(true), flag })
  .strict();

const rollupStep = z
  .object({
    op: z.literal('rollup'),
    window: z.union([z.string(), positiveInt()]).transform((w, ctx) => {
      const ms = typeof w === 'number' ? w : parseDuration(w);
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: `"${String(w)}" is not a duration like '1m', '1h', '30s', '500ms', '1d'` });
        return z.NEVER;
      }
      return ms;
    }),
    allowedLatenessMs: z.number().int().nonnegative().default(0),
    aggregates: z.array(z.enum(AGGREGATES)).min(1).default([...AGGREGATES]),
    /** Measurement the rollup readings are written to; default `rollup_<window>`, e.g. `rollup_1m`. */
    measurement: z.string().min(1).optional(),
    /** Pass the raw samples on to the next step (and the database) too. */
    keepRaw: z.boolean().default(true),
    maxValuesPerWindow: positiveInt().max(10_000_000).default(10_000),
    flag,
  })
  .strict();

const rateStep = z
  .object({
    op: z.literal('rate'),
    counterBits: z.union([z.literal(32), z.literal(64)]).optional(),
    perMs: positiveInt().default(1000),
    onReset: z.enum(['skip', 'fromZero']).default('skip'),
    as: z.string().min(1).optional(),
    flag,
  })
  .strict();

const integrateStep = z
  .object({
    op: z.literal('integrate'),
    maxGapMs: positiveInt(),
    unitMs: positiveInt().default(3_600_000),
    scale: finite().default(1),
    output: z.enum(['interval', 'cumulative']).default('interval'),
    as: z.string().min(1).optional(),
    flag,
  })
  .strict();

const deadbandStep = z
  .object({
    op: z.literal('deadband'),
    abs: z.number().nonnegative().optional(),
    rel: z.number().nonnegative().optional(),
    heartbeatMs: positiveInt().optional(),
    flag,
  })
  .strict()
  .refine((s) => s.abs !== undefined || s.rel !== undefined, { message: 'give abs, rel or both', path: ['abs'] });

const emaStep = z
  .object({
    op: z.literal('ema'),
    alpha: z.number().gt(0).max(1).optional(),
    timeConstantMs: z.number().positive().optional(),
    flag,
  })
  .strict()
  .refine((s) => (s.alpha === undefined) !== (s.timeConstantMs === undefined), {
    message: 'give exactly one of alpha and timeConstantMs',
    path: ['alpha'],
  });

const smaStep = z
  .object({
    op: z.literal('sma'),
    samples: positiveInt().max(100_000).optional(),
    durationMs: positiveInt().optional(),
    flag,
  })
  .strict()
  .refine((s) => (s.samples === undefined) !== (s.durationMs === undefined), {
    message: 'give exactly one of samples and durationMs',
    path: ['samples'],
  });

export const stepSchema = z.discriminatedUnion('op', [
  rangeStep,
  hampelStep,
  medianStep,
  stuckStep,
  unitStep,
  skewStep,
  rollupStep,
  rateStep,
  integrateStep,
  deadbandStep,
  emaStep,
  smaStep,
]);
export type StepConfig = z.infer<typeof stepSchema>;
export type StepOp = StepConfig['op'];

export const pipelineSchema = z
  .object({
    match: z
      .object({
        /** Metric name or glob (`*`, `?`). */
        metric: z.string().min(1),
        /** Device id glob; every device when absent. */
        device: z.string().min(1).optional(),
      })
      .strict(),
    steps: z.array(stepSchema).min(1),
  })
  .strict();
export type PipelineConfig = z.infer<typeof pipelineSchema>;

export const processingConfigSchema = z
  .object({
    /** The first pipeline whose match fits a series runs on it; other series pass untouched. */
    pipelines: z.array(pipelineSchema).default([]),
  })
  .strict();
export type ProcessingConfig = z.infer<typeof processingConfigSchema>;
export type ProcessingConfigInput = z.input<typeof processingConfigSchema>;

/**
 * Validates the `processing` section. Throws FERRY_ERR_CONFIG_INVALID naming each bad field by
 * its full path, e.g. `processing.pipelines.0.steps.1.max`.
 */
export function parseProcessingConfig(input: unknown, prefix = 'processing'): ProcessingConfig {
  const result = processingConfigSchema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => ({
    field: [prefix, ...i.path.map(String)].filter((p) => p !== '').join('.'),
    message: i.message,
    code: i.code,
  }));
  throw new FerryError(
    'FERRY_ERR_CONFIG_INVALID',
    `invalid processing config: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`,
    { fields: issues.map((i) => i.field), issues },
  );
}
