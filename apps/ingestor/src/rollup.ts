// Stage 6, roll up: readings the database confirmed feed tumbling windows (@ferry/processing), and
// each window, once complete, is written as one point of `<measurement>_<window>` (e.g.
// telemetry_1m) with fields `<metric>_<aggregate>` at the window start. A late reading within
// allowedLatenessMs corrects its window: the same point (measurement, tags, timestamp) is written
// again and the database overwrites it.
//
// Durability (docs/processing.md): the open windows of every series touched by a confirmed chunk,
// and the rollup points that chunk completed, are saved by a rollup state store (rollup-store.ts)
// atomically with the chunk's gateway-seq dedupe records: in the same SQLite transaction of
// dedupe.db with one ingestor, in the same Redis script call with several (cluster/shared-rollups.ts).
// So after a kill -9 either both happened (the resent batch is a duplicate and never reaches the
// windows again) or neither did (the resent batch is new and is counted once). Completed points
// wait in the store's rollup outbox until the database confirmed them; a restart (or the next
// holder of the gateway) writes what is left there again (an overwrite at worst).
//
// Series: (gateway tag, device, metric, window). A gateway is processed by one ingestor at a time
// (partition.ts, or its lease in Redis), so no two ingestors ever write partial windows of one series.
import type Database from 'better-sqlite3';
import type { Reading } from '@ferry/protocol';
import { compileGlob, formatDuration, ReasonCounts, TumblingWindows } from '@ferry/processing';
import type { WindowAggregate } from '@ferry/processing';
import type { Clock, Logger } from '@ferry/runtime';
import type { PointMapping, Sink } from '@ferry/sinks';
import { openSqliteRollupStore } from './rollup-store.js';
import type { RollupPointItem, RollupSave, RollupStateStore } from './rollup-store.js';
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
  /** windows (first emissions), corrected, dropped_late, percentiles_skipped, state_discarded, not_held. */
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
   * Adds confirmed readings to their windows and saves the windows and the completed points
   * atomically with `alsoRecord` (the dedupe record): one transaction of dedupe.db, or one Redis
   * script call (rollup-store.ts). If anything throws, nothing is saved, the windows in memory are
   * reloaded from the store, and the error is rethrown.
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
  /**
   * Where the windows and the outbox are saved. Default: the SQLite store on `db` (the dedupe
   * store's connection, so the windows are saved in its transaction).
   */
  readonly store?: RollupStateStore | undefined;
  /** The dedupe store's connection, for the default SQLite store. */
  readonly db?: Database.Database | undefined;
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
  /** Saves so far (rollup-store.ts): the next save is one more. */
  version: number;
}

const NS_PER_MS = 1_000_000n;
/**
 * Series kept in memory. Every series is saved whenever it changes, so memory is only a cache:
 * beyond this the least recently used are dropped and load again from the store when a reading
 * comes (a quiet series that was dropped is then not closed by closeIdleAfterMs).
 */
const MAX_CACHED_SERIES = 200_000;
const SEP = '\u0000';

/** How long a direct reading's identity is kept: its longest window and lateness, and an hour for a journal taken again after a long restart. */
export function onceRetentionMs(config: IngestorProcessingConfig): number {
  return Math.max(0, ...config.rollups.map((r) => Math.max(...r.windows) + r.allowedLatenessMs)) + 3_600_000;
}

export function createRollups(options: RollupOptions): Rollups {
  const { config, mapping, clock, logger } = options;
  const store: RollupStateStore = options.store ?? sqliteStoreOf(options.db, config);
  const rules: CompiledRule[] = config.rollups.map((rule) => ({
    rule,
    metric: compileGlob(rule.match.metric),
    device: rule.match.device === undefined ? () => true : compileGlob(rule.match.device),
  }));
  const counts = new ReasonCounts();
  /** Whether any rule takes its metrics out of the raw point: if none, rawPart costs nothing. */
  const rollupOnly = rules.some((r) => !r.rule.keepRaw);

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

  /** Drops cached series (after a failed commit, or over the bound); the store keeps them. */
  function forget(dropped: Iterable<Series>): void {
    for (const s of dropped) {
      const key = s.key.slice(0, s.key.lastIndexOf(SEP));
      const list = series.get(key);
      if (list && series.delete(key)) seriesCount -= list.length;
    }
  }

  function loadSeries(rule: RollupRule, key: string, windowMs: number, gatewayTag: string, deviceId: string, metric: string): Series {
    const opts = { windowMs, allowedLatenessMs: rule.allowedLatenessMs, aggregates: rule.aggregates, maxValuesPerWindow: rule.maxValuesPerWindow };
    const saved = store.series(key, gatewayTag);
    const windows = new TumblingWindows(opts, counts);
    if (saved) {
      try {
        windows.loadState(JSON.parse(saved.state));
      } catch (err) {
        // Saved under another configuration (e.g. percentiles added): the series starts afresh
        // rather than failing every commit that touches it.
        counts.add('state_discarded');
        logger.warn({ err, series: key }, 'saved rollup windows do not fit the configuration; starting the series afresh');
      }
    }
    return {
      key,
      windows,
      windowMs,
      measurement: rollupMeasurementName(mapping.measurement, windowMs),
      gatewayTag,
      deviceId,
      metric,
      touchedAt: clock.now(),
      version: saved?.version ?? 0,
    };
  }

  function pointOf(s: Series, w: WindowAggregate): RollupPointItem {
    const fields: Record<string, number> = {};
    for (const [aggregate, value] of Object.entries(w.values)) fields[`${s.metric}_${aggregate}`] = value;
    const tags: Record<string, string> = { ...mapping.staticTags, [mapping.deviceTag]: s.deviceId, [mapping.gatewayTag]: s.gatewayTag };
    return {
      key: `${s.key}${SEP}${w.windowStart}`,
      version: w.revision,
      gatewayTag: s.gatewayTag,
      point: { measurement: s.measurement, tags, fields, timestampNs: BigInt(w.windowStart) * NS_PER_MS },
    };
  }

  /** What the store saves for the touched series: their state, one version on. */
  function saveOf(touched: ReadonlySet<Series>, items: readonly RollupPointItem[]): RollupSave {
    return {
      series: [...touched].map((s) => ({ key: s.key, gatewayTag: s.gatewayTag, saved: { state: JSON.stringify(s.windows.saveState()), version: ++s.version } })),
      points: items,
    };
  }

  const writer: Writer<RollupPointItem> = createWriter<RollupPointItem>({
    sink: options.sink,
    // One chunk at a time: a window's correction must never land before its first version.
    policy: { ...options.write, maxInFlight: 1 },
    clock,
    events: options.events ?? {},
    confirm(chunk, result) {
      const refused = new Set(result.rejected.map((r) => r.index));
      for (const r of result.rejected) logger.error({ point: chunk[r.index]?.key, reason: r.reason }, 'database refused a rollup point');
      // Refused points are removed too: a 400 is not retried.
      store.confirmed(chunk);
      written += chunk.length - refused.size;
      rejected += refused.size;
    },
  });

  store.listen({
    leftover(items) {
      if (items.length === 0) return;
      logger.info({ points: items.length }, 'writing rollup points another ingestor left for a gateway taken over');
      writer.push(items);
    },
    evicted(gatewayTag) {
      // Another ingestor may move these series now: what is in memory here goes stale.
      const prefix = `${gatewayTag}${SEP}`;
      for (const [key, list] of series) {
        if (key.startsWith(prefix) && series.delete(key)) seriesCount -= list.length;
      }
    },
  });

  let idleTimer: NodeJS.Timeout | undefined;

  function closeIdle(now: number): void {
    const after = config.closeIdleAfterMs;
    if (after === undefined) return;
    const touched = new Set<Series>();
    const items: RollupPointItem[] = [];
    for (const s of [...series.values()].flat()) {
      if (now - s.touchedAt < after || !store.holds(s.gatewayTag)) continue;
      const done = s.windows.advance(now - after);
      if (done.length === 0) continue;
      touched.add(s);
      for (const w of done) items.push(pointOf(s, w));
    }
    if (touched.size === 0) return;
    try {
      store.commit(() => saveOf(touched, items), () => undefined);
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
      const items: RollupPointItem[] = [];
      const now = clock.now();
      const build = (): RollupSave => {
        for (const { gatewayTag, reading, once } of readings) {
          if (reading.kind !== 'telemetry') continue;
          // A gateway whose lease went elsewhere while this chunk was written: its holder has the
          // windows now (docs/scaling.md, what window remains).
          if (!store.holds(gatewayTag)) {
            counts.add('not_held');
            continue;
          }
          if (once !== undefined && !store.claimOnce(once, now)) continue;
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
        return saveOf(touched, items);
      };
      let result: T;
      try {
        result = store.commit(build, alsoRecord);
      } catch (err) {
        // The windows in memory moved ahead of the store: drop them, they reload from it.
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
      const left = store.leftover();
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
      return { series: seriesCount, outbox: store.outboxSize(), written, rejected, counts: counts.snapshot() };
    },
  };
}

function sqliteStoreOf(db: Database.Database | undefined, config: IngestorProcessingConfig): RollupStateStore {
  if (!db) throw new Error('createRollups needs a store or the dedupe store\'s SQLite connection');
  return openSqliteRollupStore({ db, onceRetentionMs: onceRetentionMs(config) });
}
