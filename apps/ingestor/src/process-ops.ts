// What processing shows an operator: Prometheus counters of the values the pipelines removed or
// changed (per operator and reason) and of the rollups, and the API routes the dashboard charts
// a device's rolled-up series from.
import { z } from 'zod';
import { Counter, Gauge } from '@ferry/runtime';
import type { OpsServer, Registry } from '@ferry/runtime';
import type { Point, PointQuery } from '@ferry/sinks';
import type { ReadingProcessor } from './process.js';
import type { Rollups } from './rollup.js';

export interface ProcessingMetricSources {
  readonly processor: ReadingProcessor | undefined;
  /** Undefined when there are no rollups, or once the stores are closed. */
  readonly rollups: () => Rollups | undefined;
}

export function createProcessingMetrics(registry: Registry, sources: ProcessingMetricSources): void {
  const { processor } = sources;
  if (processor) {
    new Counter({
      name: 'ferry_ingestor_processing_values_total',
      help: 'Values seen (reason="in") and removed or changed by the processing pipelines, per operator and reason',
      labelNames: ['op', 'reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [op, reasons] of Object.entries(processor.stats().ops)) {
          for (const [reason, n] of Object.entries(reasons)) this.inc({ op, reason }, n);
        }
      },
    });
    new Counter({
      name: 'ferry_ingestor_processing_readings_emptied_total',
      help: 'Readings all of whose metrics the pipelines removed (nothing raw written)',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(processor.stats().readings.emptied);
      },
    });
  }
  new Counter({
    name: 'ferry_ingestor_rollup_windows_total',
    help: 'Rollup windows by outcome: windows (first emission), corrected (late reading), dropped_late, percentiles_skipped',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [outcome, n] of Object.entries(sources.rollups()?.stats().counts ?? {})) this.inc({ outcome }, n);
    },
  });
  new Gauge({
    name: 'ferry_ingestor_rollup_outbox_points',
    help: 'Rollup points completed and not yet confirmed by the database',
    registers: [registry],
    collect() {
      this.set(sources.rollups()?.stats().outbox ?? 0);
    },
  });
}

export interface ProcessingRoutesDeps {
  readonly processor: ReadingProcessor | undefined;
  readonly rollups: Rollups | undefined;
  /** Read when it can be queried (the embedded SQLite sink, SqliteSink.query). */
  readonly sink: unknown;
  readonly deviceTag: string;
  readonly now: () => number;
}

const rollupQuerySchema = z.object({
  sinceMs: z.coerce.number().int().positive().max(30 * 86_400_000).default(3_600_000),
  limit: z.coerce.number().int().positive().max(5000).default(500),
});

/**
 * GET /api/processing: pipeline and rollup counts. GET /api/devices/:id/rollups: the device's
 * rollup points per configured window (`points` null when the sink cannot be read back).
 */
export function addProcessingRoutes(app: OpsServer['app'], deps: ProcessingRoutesDeps): void {
  const { rollups } = deps;
  app.get('/api/processing', async () => ({ pipelines: deps.processor?.stats() ?? null, rollups: rollups ? { ...rollups.stats(), windows: rollups.windows() } : null }));

  const query = (deps.sink as { query?: unknown }).query;
  const read = typeof query === 'function' ? (q: PointQuery) => (query as (q: PointQuery) => Point[]).call(deps.sink, q) : undefined;
  app.get<{ Params: { id: string } }>('/api/devices/:id/rollups', async (req, reply) => {
    const parsed = rollupQuerySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    const from = BigInt(deps.now() - parsed.data.sinceMs) * 1_000_000n;
    const windows = (rollups?.windows() ?? []).map((w) => ({
      ...w,
      points: read
        ? read({ measurement: w.measurement, tags: { [deps.deviceTag]: req.params.id }, from, limit: parsed.data.limit }).map((p) => ({
            ts: Number(p.timestampNs / 1_000_000n),
            tags: p.tags,
            fields: p.fields,
          }))
        : null,
    }));
    return { deviceId: req.params.id, windows };
  });
}
