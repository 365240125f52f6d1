// The ingestor's `processing` section: per-metric pipelines run on each reading before its raw
// point is written (cleaning, filtering), and continuous rollups written to their own measurements.
// Validated at start with the rest of the config; a bad step names its field.
import { z } from 'zod';
import { AGGREGATES, parseDuration, pipelineSchema } from '@ferry/processing';

/** Steps the ingestor does not run in `pipelines`: rollups have their own section, skew its own policy (skew.ts). */
const NOT_IN_INGESTOR_PIPELINES = new Set(['rollup', 'skew']);

const windowSchema = z.union([z.string(), z.number().int().positive()]).transform((w, ctx) => {
  const ms = typeof w === 'number' ? w : parseDuration(w);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${String(w)}" is not a duration like '1m', '1h', '30s', '1d'` });
    return z.NEVER;
  }
  return ms;
});

export const rollupRuleSchema = z
  .object({
    /** Metric name or glob (`*`, `?`), and optionally a device id glob; the first rule matching a metric applies. */
    match: z.object({ metric: z.string().min(1), device: z.string().min(1).optional() }).strict(),
    /** Tumbling windows, aligned to the epoch like InfluxQL GROUP BY time(): e.g. ['1m', '1h']. */
    windows: z.array(windowSchema).min(1),
    aggregates: z.array(z.enum(AGGREGATES)).min(1).default(['count', 'sum', 'mean', 'min', 'max']),
    /**
     * How long after a window ended (in event time: the series' newest reading) a late reading still
     * corrects it; the window is then written again at the same point. Later readings are counted
     * `dropped_late` and only written raw.
     */
    allowedLatenessMs: z.number().int().nonnegative().default(60_000),
    /** Write the matched metrics' raw values too; false writes only the rollups. */
    keepRaw: z.boolean().default(true),
    /** Values kept per window for percentiles; over it a window has no percentiles. */
    maxValuesPerWindow: z.number().int().positive().max(1_000_000).default(10_000),
  })
  .strict();
export type RollupRule = z.output<typeof rollupRuleSchema>;

export const ingestorProcessingSchema = z
  .object({
    /** @ferry/processing pipelines run before the raw point is written (range, hampel, median, stuck, unit, rate, integrate, deadband, ema, sma). */
    pipelines: z.array(pipelineSchema).default([]),
    rollups: z.array(rollupRuleSchema).default([]),
    /**
     * Off by default: windows close in event time, when a newer reading of the series arrives.
     * When set, a series quiet for this long has its windows closed by the wall clock; a reading
     * older than that arriving later (a gateway's backlog) is then only written raw.
     */
    closeIdleAfterMs: z.number().int().positive().optional(),
    /** Field on the raw point listing what the pipelines changed (`<metric>:<reason>`), for steps with `flag: true`. */
    flagField: z.string().min(1).default('ferry_flags'),
  })
  .strict()
  .superRefine((p, ctx) => {
    p.pipelines.forEach((pipeline, i) =>
      pipeline.steps.forEach((step, j) => {
        if (NOT_IN_INGESTOR_PIPELINES.has(step.op)) {
          ctx.addIssue({
            code: 'custom',
            message: step.op === 'rollup' ? 'the ingestor runs rollups from processing.rollups' : 'the ingestor corrects clock skew with skew.policy',
            path: ['pipelines', i, 'steps', j, 'op'],
          });
        }
      }),
    );
  });
export type IngestorProcessingConfig = z.output<typeof ingestorProcessingSchema>;
