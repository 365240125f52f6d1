// Stage 6, roll up: readings the database confirmed feed tumbling windows (@ferry/processing), and
// each window, once complete, is written as one point of `<measurement>_<window>` (e.g.
// telemetry_1m) with fields `<metric>_<aggregate>` at the window start. A late reading within
// allowedLatenessMs corrects its window: the same point (measurement, tags, timestamp) is written
// again and the database overwrites it.
//
// Durability (docs/processing.md): the open windows of every series touched by a confirmed chunk,
// and the rollup points that chunk completed, are saved in dedupe.db in the SAME SQLite
// transaction that records the chunk's gateway seqs. So after a kill -9 either both happened (the
// resent batch is a duplicate and never reaches the windows again) or neither did (the resent
// batch is new and is counted once). Completed points wait in the `rollup_outbox` table until the
// database confirmed them; a restart writes what is left there again (an overwrite at worst).
//
// Series: (gateway tag, device, metric, window). Partitioning by gateway (partition.ts) keeps all
// of a series on one ingestor, so no two ingestors ever write partial windows of one series.
import type Database from 'better-sqlite3';
import type { Reading } from '@ferry/protocol';
import { compileGlob, formatDuration, ReasonCounts, TumblingWindows } from '@ferry/processing';
import type { WindowAggregate } from '@ferry/processing';
import type { Clock, Logger } from '@ferry/runtime';
import type { Point, PointMapping, Sink } from '@ferry/sinks';
import { createWriter } from './write.js';
import type { WritePolicy, Writer, WriterEvents } from './write.js';
import type { IngestorProcessingConfig, RollupRule } from './process-config.js';

/** A reading the database confirmed (as written, after the pipelines), with the gateway tag of its point. */
export interface ConfirmedReading {
  readonly gatewayTag: string;
  readonly reading: Reading;
  /**
   * For a reading no dedupe.db record covers (a direct device's): its identity, saved with the
   * windows so that a journal row taken again after a crash is not counted twice.
   */
  readonly once?: string;
}

export interface RollupStats {
  /** Series (gateway, device, metric, window) with windows in memory. */
  readonly series: number;
  /** Rollup points completed and not yet confirmed by the database. */
  readonly outbox: number;
  /** Rollup points the database confirmed (this run). */
  readonly written: number;
  /** Rollup points the database refused (this run). */
  readonly rejected: number;
  /** windows (first emissions), corrected, dropped_late, percentiles_skipped, state_discarded. */
  readonly counts: Readonly<Record<string, number>>;
}

export interface RollupWindowInfo {
  readonly measurement: string;
  readonly windowMs: number;
  readonly window: string;
}

export interface Rollups {
  /** The part of a reading written raw: metrics of rules with keepRaw=false taken out; null when none is left. */
  rawPart(reading: Reading): Reading | null;
  /**
   * Adds confirmed readings to their windows and saves the windows and the completed points in one
   * transaction of `db` together with `alsoRecord` (the dedupe record). If anything throws, nothing
   * is saved, the windows in memory are reloaded from the database, and the error is rethrown.
   */
  commit<T>(readings: readonly ConfirmedReading[], alsoRecord: () => T): T;
  /** Closes the windows of series quiet for closeIdleAfterMs (when configured). */
  closeIdle(now: number): void;
  /** Writes the rollup points left in the outbox by the last run; starts the idle timer. */
  start(): void;
  stop(timeoutMs: number): Promise<boolean>;
  /** Rollup measurements, one per configured window length. */
  windows(): readonly RollupWindowInfo[];
  stats(): RollupStats;
}

export interface RollupOptions {
  readonly config: IngestorProcessingConfig;
  /** The dedupe store's connection: the windows are saved in its transaction. */
  readonly db: Database.Database;
  readonly sink: Sink;
  readonly mapping: PointMapping;
  readonly write: WritePolicy;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly events?: WriterEvents;
}

/** The measurement a window length's rollups are written to: `<measurement>_<window>`, e.g. telemetry_1m. */
export function rollupMeasurementName(measurement: string, windowMs: number): string {
  return `${measurement}_${formatDuration(windowMs)}`;
}

interface CompiledRule {
  readonly rule: RollupRule;
  readonly metric: (name: string) => boolean;
  readonly device: (id: string) => boolean;
}

interface Series {
  readonly key: string;
  readonly windows: TumblingWindows;
  readonly windowMs: number;
  readonly measurement: string;
  readonly gatewayTag: string;
  readonly deviceId: string;
  readonly metric: string;
  /** Wall-clock time of its last reading, for closeIdle. */
  touchedAt: number;
}

interface OutboxItem {
  readonly key: string;
  readonly version: number;
  readonly point: Point;
}

const NS_PER_MS = 1_000_000n;
/**
 * Series kept in memory. Every series is saved whenever it changes, so memory is only a cache:
 * beyond this the least recently used are dropped and load again from dedupe.db when a reading
 * comes (a quiet series that was dropped is then not closed by closeIdleAfterMs).
 */
const MAX_CACHED_SERIES = 200_000;
const SEP = '\u0000';

export function createRollups(options: RollupOptions): Rollups {
  const { config, db, mapping, clock, logger } = options;
  const rules: CompiledRule[] = config.rollups.map((rule) => ({
    rule,
    metric: compileGlob(rule.match.metric),
    device: rule.match.device === undefined ? () => true : compileGlob(rule.match.device),
  }));
  const counts = new ReasonCounts();
  /** Whether any rule takes its metrics out of the raw point: if none, rawPart costs nothing. */
  const rollupOnly = rules.some((r) => !r.rule.keepRaw);
  db.exec(`
    CREATE TABLE IF NOT EXISTS rollup_series (
      key TEXT PRIMARY KEY,
      state TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS rollup_once (
      key TEXT PRIMARY KEY,
      at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS rollup_once_at ON rollup_once (at);
    CREATE TABLE IF NOT EXISTS rollup_outbox (
      key TEXT PRIMARY KEY,
      version INTEGER NOT NULL,
      point TEXT NOT NULL
    ) WITHOUT ROWID;
  `);
  const selectSeries = db.prepare<[string], { state: string }>('SELECT state FROM rollup_series WHERE key = ?');
  const upsertSeries = db.prepare<[string, string]>('INSERT INTO rollup_series (key, state) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET state = excluded.state');
  const upsertOutbox = db.prepare<[string, number, string]>(
    'INSERT INTO rollup_outbox (key, version, point) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET version = excluded.version, point = excluded.point',
  );
  const deleteOutbox = db.prepare<[string, number]>('DELETE FROM rollup_outbox WHERE key = ? AND version = ?');
  const selectOutbox = db.prepare<[], { key: string; version: number; point: string }>('SELECT key, version, point FROM rollup_outbox');
  const insertOnce = db.prepare<[string, number]>('INSERT INTO rollup_once (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING');
  const deleteOnceBefore = db.prepare<[number]>('DELETE FROM rollup_once WHERE at < ?');
  /**
   * How long a direct reading's identity is kept: past its longest window and lateness a copy
   * would be dropped late anyway; the hour covers a journal taken again after a long restart.
   */
  const onceRetentionMs = Math.max(0, ...config.rollups.map((r) => Math.max(...r.windows) + r.allowedLatenessMs)) + 3_600_000;
  let oncePrunedAt = 0;
  const countOutbox = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM rollup_outbox');
  const deleteConfirmed = db.transaction((items: readonly OutboxItem[]) => {
    for (const item of items) deleteOutbox.run(item.key, item.version);
  });

  /** Metric -> the rule that applies (null: none), per device; rules match by glob, so the answer is cached. */
  const ruleCache = new Map<string, CompiledRule | null>();
  const ruleFor = (deviceId: string, metric: string): CompiledRule | null => {
    const cacheKey = `${deviceId}\u0000${metric}`;
    let rule = ruleCache.get(cacheKey);
    if (rule === undefined) {
      rule = rules.find((r) => r.metric(metric) && r.device(deviceId)) ?? null;
      // A pure cache, bounded like the series.
      if (ruleCache.size >= MAX_CACHED_SERIES) ruleCache.clear();
      ruleCache.set(cacheKey, rule);
    }
    return rule;
  };
  /** (gateway, device, metric) -> its series, one per window length of its rule. */
  const series = new Map<string, readonly Series[]>();
  let seriesCount = 0;
  let written = 0;
  let rejected = 0;

  function seriesOf(rule: RollupRule, gatewayTag: string, deviceId: string, metric: string): readonly Series[] {
    const key = `${gatewayTag}${SEP}${deviceId}${SEP}${metric}`;
    let list = series.get(key);
    if (!list) {
      list = rule.windows.map((windowMs) => loadSeries(rule, `${key}${SEP}${windowMs}`, windowMs, gatewayTag, deviceId, metric));
      series.set(key, list);
      seriesCount += list.length;
    }
    return list;
  }

  /** Drops cached series (after a failed commit, or over the bound); the file keeps them. */
  function forget(dropped: Iterable<Series>): void {
    for (const s of dropped) {
      const key = s.key.slice(0, s.key.lastIndexOf(SEP));
      const list = series.get(key);
      if (list && series.delete(key)) seriesCount -= list.length;
    }
  }

  function loadSeries(rule: RollupRule, key: string, windowMs: number, gatewayTag: string, deviceId: string, metric: string): Series {
    const opts = { windowMs, allowedLatenessMs: rule.allowedLatenessMs, aggregates: rule.aggregates, maxValuesPerWindow: rule.maxValuesPerWindow };
    const row = selectSeries.get(key);
    const windows = new TumblingWindows(opts, counts);
    if (row) {
      try {
        windows.loadState(JSON.parse(row.state));
      } catch (err) {
        // Saved under another configuration (e.g. percentiles added): the series starts afresh
        // rather than failing every commit that touches it.
        counts.add('state_discarded');
        logger.warn({ err, series: key }, 'saved rollup windows do not fit the configuration; starting the series afresh');
      }
    }
    return { key, windows, windowMs, measurement: rollupMeasurementName(mapping.measurement, windowMs), gatewayTag, deviceId, metric, touchedAt: clock.now() };
  }

  function pointOf(s: Series, w: WindowAggregate): OutboxItem {
    const fields: Record<string, number> = {};
    for (const [aggregate, value] of Object.entries(w.values)) fields[`${s.metric}_${aggregate}`] = value;
    const tags: Record<string, string> = { ...mapping.staticTags, [mapping.deviceTag]: s.deviceId, [mapping.gatewayTag]: s.gatewayTag };
    return {
      key: `${s.key}${SEP}${w.windowStart}`,
      version: w.revision,
      point: { measurement: s.measurement, tags, fields, timestampNs: BigInt(w.windowStart) * NS_PER_MS },
    };
  }

  const serializePoint = (p: Point): string => JSON.stringify({ ...p, timestampNs: p.timestampNs.toString() });
  const parsePoint = (text: string): Point => {
    const p = JSON.parse(text) as Omit<Point, 'timestampNs'> & { timestampNs: string };
    return { ...p, timestampNs: BigInt(p.timestampNs) };
  };

  /** Saves the touched series and the points they completed, in the caller's transaction. */
  function save(touched: ReadonlySet<Series>, items: readonly OutboxItem[]): void {
    for (const s of touched) upsertSeries.run(s.key, JSON.stringify(s.windows.saveState()));
    for (const item of items) upsertOutbox.run(item.key, item.version, serializePoint(item.point));
  }

  const writer: Writer<OutboxItem> = createWriter<OutboxItem>({
    sink: options.sink,
    // One chunk at a time: a window's correction must never land before its first version.
    policy: { ...options.write, maxInFlight: 1 },
    clock,
    events: options.events ?? {},
    confirm(chunk, result) {
      const refused = new Set(result.rejected.map((r) => r.index));
      for (const r of result.rejected) logger.error({ point: chunk[r.index]?.key, reason: r.reason }, 'database refused a rollup point');
      // Refused points are removed too: a 400 is not retried.
      deleteConfirmed(chunk);
      written += chunk.length - refused.size;
      rejected += refused.size;
    },
  });

  let idleTimer: NodeJS.Timeout | undefined;

  function closeIdle(now: number): void {
    const after = config.closeIdleAfterMs;
    if (after === undefined) return;
    const touched = new Set<Series>();
    const items: OutboxItem[] = [];
    for (const s of [...series.values()].flat()) {
      if (now - s.touchedAt < after) continue;
      const done = s.windows.advance(now - after);
      if (done.length === 0) continue;
      touched.add(s);
      for (const w of done) items.push(pointOf(s, w));
    }
    if (touched.size === 0) return;
    try {
      db.transaction(() => save(touched, items))();
    } catch (err) {
      forget(touched);
      logger.error({ err }, 'could not save closed rollup windows; they close again later');
      return;
    }
    writer.push(items);
  }

  return {
    rawPart(reading) {
      if (!rollupOnly || reading.kind !== 'telemetry') return reading;
      let metrics: Record<string, Reading['metrics'][string]> | undefined;
      for (const metric in reading.metrics) {
        const value = reading.metrics[metric];
        if (typeof value !== 'number' || ruleFor(reading.deviceId, metric)?.rule.keepRaw !== false) continue;
        metrics ??= { ...reading.metrics };
        delete metrics[metric];
      }
      if (!metrics) return reading;
      return Object.keys(metrics).length === 0 ? null : { ...reading, metrics };
    },

    commit<T>(readings: readonly ConfirmedReading[], alsoRecord: () => T): T {
      const touched = new Set<Series>();
      const items: OutboxItem[] = [];
      const now = clock.now();
      const run = db.transaction(() => {
        if (now - oncePrunedAt > 60_000) {
          deleteOnceBefore.run(now - onceRetentionMs);
          oncePrunedAt = now;
        }
        for (const { gatewayTag, reading, once } of readings) {
          if (reading.kind !== 'telemetry') continue;
          if (once !== undefined && insertOnce.run(once, now).changes === 0) continue;
          for (const metric in reading.metrics) {
            const value = reading.metrics[metric];
            if (typeof value !== 'number') continue;
            const compiled = ruleFor(reading.deviceId, metric);
            if (!compiled) continue;
            for (const s of seriesOf(compiled.rule, gatewayTag, reading.deviceId, metric)) {
              s.touchedAt = now;
              touched.add(s);
              for (const w of s.windows.push({ ts: reading.ts, value })) items.push(pointOf(s, w));
            }
          }
        }
        save(touched, items);
        return alsoRecord();
      });
      let result: T;
      try {
        result = run();
      } catch (err) {
        // The windows in memory moved ahead of the database: drop them, they reload from it.
        forget(touched);
        throw err;
      }
      writer.push(items);
      // Only after the commit: a series dropped mid-transaction would reload its state from before it.
      if (seriesCount > MAX_CACHED_SERIES) {
        // The least recently touched tenth goes, so this sort runs once per many commits.
        const oldest = [...series.values()].sort((a, b) => a[0]!.touchedAt - b[0]!.touchedAt);
        forget(oldest.slice(0, Math.ceil(oldest.length / 10)).map((list) => list[0]!));
      }
      return result;
    },

    closeIdle,

    start() {
      const left = selectOutbox.all().map((row) => ({ key: row.key, version: row.version, point: parsePoint(row.point) }));
      if (left.length > 0) logger.info({ points: left.length }, 'writing rollup points left from the last run');
      writer.push(left);
      const after = config.closeIdleAfterMs;
      if (after !== undefined) {
        idleTimer = setInterval(() => closeIdle(clock.now()), Math.max(1000, Math.min(after, 60_000)));
        idleTimer.unref();
      }
    },

    async stop(timeoutMs) {
      if (idleTimer) clearInterval(idleTimer);
      return writer.stop(timeoutMs);
    },

    windows() {
      const lengths = [...new Set(config.rollups.flatMap((r) => r.windows))].sort((a, b) => a - b);
      return lengths.map((windowMs) => ({ windowMs, window: formatDuration(windowMs), measurement: rollupMeasurementName(mapping.measurement, windowMs) }));
    },

    stats() {
      return { series: seriesCount, outbox: countOutbox.get()?.n ?? 0, written, rejected, counts: counts.snapshot() };
    },
  };
}
