// A device's chart data for a time range (GET /api/devices/:id/series?range=1h): which store
// answers is chosen here, per range. Long ranges read a rollup measurement when one is configured
// and the sink can be read back (the embedded SQLite sink); otherwise raw points from the database,
// thinned to at most `maxPoints` per metric; with a sink that cannot be read (InfluxDB,
// VictoriaMetrics) only what memory holds (recent.ts), and the answer says from when it covers.
import { z } from 'zod';
import type { OpsServer } from '@ferry/runtime';
import type { Point, PointQuery } from '@ferry/sinks';
import type { RecentReading } from './recent.js';
import type { RollupWindowInfo } from './rollup.js';

export const SERIES_RANGES = { '15m': 15 * 60_000, '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 } as const;
export type SeriesRange = keyof typeof SERIES_RANGES;

/** Ranges this long or longer read a rollup when there is one. */
const ROLLUP_FROM_MS = SERIES_RANGES['24h'];
/** Raw points read for one answer at most; more is reported as `truncated`. */
const RAW_READ_CAP = 100_000;

/** [ts, value] or, for rollups, [ts, mean, min, max]. */
export type SeriesPoint = readonly [number, number] | readonly [number, number, number | null, number | null];

export interface SeriesAnswer {
  readonly deviceId: string;
  readonly range: SeriesRange;
  readonly from: number;
  readonly to: number;
  /** Where the points came from; 'none' when no store can answer. */
  readonly source: 'rollup' | 'database' | 'memory' | 'none';
  /** The rollup window, when source is 'rollup'. */
  readonly window: string | null;
  /** Points were averaged into buckets this long (ms) to stay under maxPoints; null when not. */
  readonly bucketMs: number | null;
  /** More raw points than are read for one answer: the newest are missing. */
  readonly truncated: boolean;
  /** From when the answer covers (memory holds only the last readings of a device). */
  readonly coveredFrom: number | null;
  readonly series: Record<string, SeriesPoint[]>;
}

export interface SeriesDeps {
  /** Reads the sink back; undefined when it cannot be read (SqliteSink.query). */
  readonly read: ((query: PointQuery) => Point[]) | undefined;
  readonly recent: ((deviceId: string, sinceMs: number, limit: number) => readonly RecentReading[]) | undefined;
  readonly rollupWindows: () => readonly RollupWindowInfo[];
  readonly measurement: string;
  readonly deviceTag: string;
  readonly now: () => number;
}

const querySchema = z.object({
  range: z.enum(Object.keys(SERIES_RANGES) as [SeriesRange, ...SeriesRange[]]).default('1h'),
  maxPoints: z.coerce.number().int().min(10).max(5000).default(1000),
});

/** The finest window giving at most maxPoints over the range, else the coarsest. */
export function pickRollupWindow(windows: readonly RollupWindowInfo[], rangeMs: number, maxPoints: number): RollupWindowInfo | undefined {
  const sorted = [...windows].sort((a, b) => a.windowMs - b.windowMs);
  return sorted.find((w) => rangeMs / w.windowMs <= maxPoints) ?? sorted.at(-1);
}

/**
 * Averages [ts, value] points into buckets of `bucketMs` (the bucket's mean at its mean time).
 * Empty buckets stay empty, so a gap stays a gap.
 */
export function thin(points: readonly (readonly [number, number])[], from: number, bucketMs: number): [number, number][] {
  const out: [number, number][] = [];
  let bucket = -1;
  let sumTs = 0;
  let sum = 0;
  let n = 0;
  const flush = (): void => {
    if (n > 0) out.push([Math.round(sumTs / n), sum / n]);
    sumTs = sum = n = 0;
  };
  for (const [ts, v] of points) {
    const b = Math.floor((ts - from) / bucketMs);
    if (b !== bucket) {
      flush();
      bucket = b;
    }
    sumTs += ts;
    sum += v;
    n++;
  }
  flush();
  return out;
}

function numericFields(fields: Readonly<Record<string, unknown>>): [string, number][] {
  const out: [string, number][] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (typeof v === 'number' && Number.isFinite(v)) out.push([k, v]);
    else if (typeof v === 'bigint') out.push([k, Number(v)]);
    else if (typeof v === 'boolean') out.push([k, v ? 1 : 0]);
  }
  return out;
}

const ROLLUP_FIELD = /^(.*)_(mean|min|max)$/;

/** One device's series over a range, from the best store for it. Pure apart from the reads it is given. */
export function deviceSeries(deps: SeriesDeps, deviceId: string, range: SeriesRange, maxPoints: number): SeriesAnswer {
  const to = deps.now();
  const rangeMs = SERIES_RANGES[range];
  const from = to - rangeMs;
  const base = { deviceId, range, from, to, window: null, bucketMs: null, truncated: false, coveredFrom: from };
  const window = rangeMs >= ROLLUP_FROM_MS && deps.read ? pickRollupWindow(deps.rollupWindows(), rangeMs, maxPoints) : undefined;
  if (window && deps.read) {
    const points = deps.read({ measurement: window.measurement, tags: { [deps.deviceTag]: deviceId }, from: BigInt(from) * 1_000_000n, limit: RAW_READ_CAP });
    const byMetric = new Map<string, Map<number, { mean?: number; min?: number; max?: number }>>();
    for (const p of points) {
      const ts = Number(p.timestampNs / 1_000_000n);
      for (const [field, v] of numericFields(p.fields)) {
        const m = ROLLUP_FIELD.exec(field);
        if (!m?.[1] || !m[2]) continue;
        const perTs = byMetric.get(m[1]) ?? byMetric.set(m[1], new Map()).get(m[1])!;
        const at = perTs.get(ts) ?? perTs.set(ts, {}).get(ts)!;
        at[m[2] as 'mean' | 'min' | 'max'] = v;
      }
    }
    // A device without rollup points in the range (its metrics are not rolled up) falls through to raw.
    if (byMetric.size > 0) {
      const series: Record<string, SeriesPoint[]> = {};
      for (const [metric, perTs] of byMetric) {
        series[metric] = [...perTs]
          .filter(([, p]) => p.mean !== undefined)
          .sort((a, b) => a[0] - b[0])
          .map(([ts, p]) => [ts, p.mean!, p.min ?? null, p.max ?? null] as const);
      }
      return { ...base, source: 'rollup', window: window.window, truncated: points.length >= RAW_READ_CAP, series };
    }
  }

  let raw: Map<string, [number, number][]>;
  let source: SeriesAnswer['source'];
  let truncated = false;
  let coveredFrom: number | null = from;
  if (deps.read) {
    const points = deps.read({ measurement: deps.measurement, tags: { [deps.deviceTag]: deviceId }, from: BigInt(from) * 1_000_000n, limit: RAW_READ_CAP });
    truncated = points.length >= RAW_READ_CAP;
    raw = new Map();
    for (const p of points) {
      const ts = Number(p.timestampNs / 1_000_000n);
      for (const [k, v] of numericFields(p.fields)) (raw.get(k) ?? raw.set(k, []).get(k)!).push([ts, v]);
    }
    source = 'database';
  } else if (deps.recent) {
    const readings = deps.recent(deviceId, rangeMs, RAW_READ_CAP).filter((r) => r.kind === 'telemetry');
    raw = new Map();
    for (const r of readings) for (const [k, v] of numericFields(r.metrics)) (raw.get(k) ?? raw.set(k, []).get(k)!).push([r.ts, v]);
    source = 'memory';
    // Memory keeps the last readings only: before the oldest held, nothing is known.
    coveredFrom = readings[0]?.ts ?? null;
  } else {
    return { ...base, source: 'none', coveredFrom: null, series: {} };
  }
  const longest = Math.max(0, ...[...raw.values()].map((pts) => pts.length));
  const bucketMs = longest > maxPoints ? Math.ceil(rangeMs / maxPoints) : null;
  const series: Record<string, SeriesPoint[]> = {};
  for (const [metric, pts] of raw) series[metric] = bucketMs === null ? pts : thin(pts, from, bucketMs);
  return { ...base, source, bucketMs, truncated, coveredFrom, series };
}

export function addSeriesRoutes(app: OpsServer['app'], deps: SeriesDeps & { readonly known: (deviceId: string) => boolean }): void {
  app.get<{ Params: { id: string } }>('/api/devices/:id/series', async (req, reply) => {
    const parsed = querySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    if (!deps.known(req.params.id)) return reply.code(404).send({ error: 'unknown device' });
    return deviceSeries(deps, req.params.id, parsed.data.range, parsed.data.maxPoints);
  });
}

/** The sink's read path when it has one (SqliteSink.query); InfluxDB and VictoriaMetrics are not read back. */
export function sinkReader(sink: unknown): SeriesDeps['read'] {
  const query = (sink as { query?: unknown }).query;
  return typeof query === 'function' ? (q: PointQuery) => (query as (q: PointQuery) => Point[]).call(sink, q) : undefined;
}
