// A processing pipeline: each numeric metric of a reading runs through the steps of the first
// pipeline whose match fits its series (device + metric); other metrics pass untouched. This
// is what the gateway (before the outbox or the uplink) and the ingestor (before writing) call.
//
// Operators keep state per series, created on the series' first reading. A metric a step
// removes leaves the reading; a reading left with no metric is not emitted (counted `emptied`).
// A step that moves a timestamp (skew) puts its metric in a reading of its own at the new time.
// Rollups come out as extra readings: ts = window start, seq 0, tag ROLLUP_MEASUREMENT_TAG
// naming the measurement, fields `<metric>_<aggregate>`; a corrected window repeats the same
// (measurement, device, start) and so overwrites the first write.
import type { MetricValue, Reading } from '@ferry/protocol';
import { parseProcessingConfig, type StepConfig, type StepOp } from './config.js';
import { formatDuration } from './duration.js';
import { TumblingWindows, type WindowAggregate } from './rollup.js';
import { isRemoved, ReasonCounts, type Clock, type Sample, type SeriesOperator } from './sample.js';
import { compileGlob } from './series-match.js';
import { createOperator, createWindows } from './steps.js';

/** Tag on a rollup reading naming the measurement it belongs in; the writer moves it there. */
export const ROLLUP_MEASUREMENT_TAG = 'ferry_rollup';

/** The measurement a rollup reading is meant for, or undefined for any other reading. */
export function rollupMeasurement(reading: Reading): string | undefined {
  return reading.tags?.[ROLLUP_MEASUREMENT_TAG];
}

export interface PipelineStats {
  readonly readings: {
    /** Readings given to process(). */
    readonly in: number;
    /** Readings returned by process(), rollups excluded. */
    readonly out: number;
    /** Readings all of whose metrics were removed. */
    readonly emptied: number;
    /** Rollup readings returned by process() and flush(). */
    readonly rollups: number;
  };
  /** Series (device + metric) with operator state. */
  readonly series: number;
  /** Per operator kind: `in` (samples seen) and its reasons, e.g. range.above_max, deadband.suppressed. */
  readonly ops: Readonly<Record<string, Readonly<Record<string, number>>>>;
}

/** One series' operator state, as saved for a restart. */
export interface SeriesSnapshot {
  readonly deviceId: string;
  readonly metric: string;
  /** JSON: the state of each step, and a fingerprint of the pipeline it was made by. */
  readonly state: string;
}

export interface PipelineOptions {
  /** Remember which series changed, for takeChangedState(); off by default (it costs a set insert a sample). */
  readonly trackState?: boolean;
}

export interface Pipeline {
  /** Runs one reading through its pipelines; returns what to pass on (possibly nothing), rollups last. */
  process(reading: Reading): Reading[];
  /** Treats `now` (default: the clock) as the watermark of every series; returns the rollups that completes. */
  flush(now?: number): Reading[];
  stats(): PipelineStats;
  /**
   * The state of every series process() or flush() touched since the last call (needs
   * `trackState`). Saved in the same transaction as the readings it produced, a restart that
   * restores it continues exactly where the pipeline stopped.
   */
  takeChangedState(): SeriesSnapshot[];
  /**
   * Restores saved series. A snapshot made by a pipeline configured differently (steps or match
   * changed) or that does not parse is discarded: that series starts afresh.
   */
  restoreState(snapshots: Iterable<SeriesSnapshot>): { restored: number; discarded: number };
  /** Forgets the state of every series (counts are kept), e.g. before restoring the last saved state. */
  resetState(): void;
}

/** FNV-1a of the pipeline's configuration: saved state is only taken back by the same pipeline. */
function fingerprint(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

interface CompiledStep {
  readonly config: StepConfig;
  readonly counts: ReasonCounts;
  /** Samples that entered this step; a plain field, as it is bumped for every sample. */
  seen: number;
}

interface CompiledPipeline {
  readonly fingerprint: string;
  readonly metric: (name: string) => boolean;
  readonly device: (id: string) => boolean;
  readonly steps: readonly CompiledStep[];
}

interface SeriesState {
  readonly deviceId: string;
  readonly metric: string;
  readonly fingerprint: string;
  readonly steps: readonly CompiledStep[];
  readonly ops: readonly (SeriesOperator | TumblingWindows)[];
  /** The metric name as it enters each step (rate and integrate may rename it with `as`). */
  readonly names: readonly string[];
  readonly outputName: string;
  tags: Readonly<Record<string, string>> | undefined;
}

interface RollupEmission {
  readonly series: SeriesState;
  readonly step: number;
  readonly window: WindowAggregate;
}

interface MutableReading {
  seq: number;
  deviceId: string;
  kind: 'telemetry';
  ts: number;
  tsSource: 'gateway';
  receivedAt: number;
  metrics: Record<string, MetricValue>;
  tags: Record<string, string>;
  flags: string[];
}

/** A metrics object without a prototype, so a metric named `__proto__` stays a metric. */
function newMetrics(): Record<string, MetricValue> {
  return Object.create(null) as Record<string, MetricValue>;
}

/**
 * Validates `config` (the `processing` section; FERRY_ERR_CONFIG_INVALID names the bad field) and
 * builds the pipeline. The clock stamps `receivedAt` on rollup readings and is flush()'s default time.
 */
export function createPipeline(config: unknown, clock: Clock, options: PipelineOptions = {}): Pipeline {
  const parsed = parseProcessingConfig(config);
  const countsByOp = new Map<StepOp, ReasonCounts>();
  const countsFor = (op: StepOp): ReasonCounts => {
    let c = countsByOp.get(op);
    if (!c) countsByOp.set(op, (c = new ReasonCounts()));
    return c;
  };
  const pipelines: CompiledPipeline[] = parsed.pipelines.map((p) => {
    const device = p.match.device === undefined ? () => true : compileGlob(p.match.device);
    return {
      fingerprint: fingerprint(JSON.stringify(p)),
      metric: compileGlob(p.match.metric),
      device,
      steps: p.steps.map((s) => ({ config: s, counts: countsFor(s.op), seen: 0 })),
    };
  });
  const changed: Set<SeriesState> | undefined = options.trackState ? new Set() : undefined;
  // device -> metric -> state; null: no pipeline matches (cached too, so unmatched metrics cost a lookup).
  const seriesByDevice = new Map<string, Map<string, SeriesState | null>>();
  const totals = { in: 0, out: 0, emptied: 0, rollups: 0 };
  let seriesCount = 0;

  function seriesFor(deviceId: string, metric: string): SeriesState | null {
    let byMetric = seriesByDevice.get(deviceId);
    if (!byMetric) seriesByDevice.set(deviceId, (byMetric = new Map<string, SeriesState | null>()));
    let series = byMetric.get(metric);
    if (series !== undefined) return series;
    series = null;
    const pipeline = pipelines.find((p) => p.metric(metric) && p.device(deviceId));
    if (pipeline) {
      const names: string[] = [];
      let name = metric;
      const ops = pipeline.steps.map(({ config, counts }) => {
        names.push(name);
        if (config.op === 'rollup') return createWindows(config, counts);
        if ((config.op === 'rate' || config.op === 'integrate') && config.as !== undefined) name = config.as;
        return createOperator(config, counts);
      });
      series = { deviceId, metric, fingerprint: pipeline.fingerprint, steps: pipeline.steps, ops, names, outputName: name, tags: undefined };
      seriesCount++;
    }
    byMetric.set(metric, series);
    return series;
  }

  function rollupReadings(emissions: readonly RollupEmission[]): Reading[] {
    const byKey = new Map<string, MutableReading>();
    const receivedAt = clock.now();
    for (const { series, step, window } of emissions) {
      const config = series.steps[step]!.config as Extract<StepConfig, { op: 'rollup' }>;
      const measurement = config.measurement ?? `rollup_${formatDuration(config.window)}`;
      const key = `${series.deviceId}\u0000${measurement}\u0000${window.windowStart}`;
      let reading = byKey.get(key);
      if (!reading) {
        reading = {
          seq: 0,
          deviceId: series.deviceId,
          kind: 'telemetry',
          ts: window.windowStart,
          tsSource: 'gateway',
          receivedAt,
          metrics: {},
          tags: { ...series.tags, [ROLLUP_MEASUREMENT_TAG]: measurement },
          flags: ['rollup'],
        };
        byKey.set(key, reading);
      }
      const name = series.names[step]!;
      for (const [aggregate, value] of Object.entries(window.values)) reading.metrics[`${name}_${aggregate}`] = value;
      if (window.revision > 0 && !reading.flags.includes('rollup_corrected')) reading.flags.push('rollup_corrected');
    }
    totals.rollups += byKey.size;
    return [...byKey.values()];
  }

  function process(reading: Reading): Reading[] {
    totals.in++;
    if (reading.kind !== 'telemetry' || pipelines.length === 0) {
      totals.out++;
      return [reading];
    }
    // Built only once a metric is actually processed: untouched readings pass as the same object.
    let metrics: Record<string, MetricValue> | undefined;
    let flags: string[] | undefined;
    let shifted: Map<number, { metrics: Record<string, MetricValue>; flags: string[] }> | undefined;
    let emissions: RollupEmission[] | undefined;
    for (const metric in reading.metrics) {
      const value = reading.metrics[metric]!;
      const series = typeof value === 'number' ? seriesFor(reading.deviceId, metric) : null;
      if (!series) {
        if (metrics) metrics[metric] = value;
        continue;
      }
      if (!metrics) {
        metrics = newMetrics();
        for (const earlier in reading.metrics) {
          if (earlier === metric) break;
          metrics[earlier] = reading.metrics[earlier]!;
        }
      }
      series.tags = reading.tags;
      changed?.add(series);
      let sample: Sample = { ts: reading.ts, value: value as number, source: reading.tsSource };
      let removal: string | undefined;
      for (let k = 0; k < series.ops.length; k++) {
        const step = series.steps[k]!;
        const op = series.ops[k]!;
        step.seen++;
        if (op instanceof TumblingWindows) {
          const done = op.push(sample);
          for (const window of done) (emissions ??= []).push({ series, step: k, window });
          if (step.config.op === 'rollup' && !step.config.keepRaw) {
            step.counts.add('rolled_up');
            removal = step.config.flag ? 'rolled_up' : '';
            break;
          }
          continue;
        }
        const result = op.push(sample);
        if (isRemoved(result)) {
          removal = step.config.flag ? result.removed : '';
          break;
        }
        sample = result;
      }
      if (removal !== undefined) {
        if (removal !== '') (flags ??= []).push(`${metric}:${removal}`);
        continue;
      }
      const metricFlags = sample.flags?.map((f) => `${metric}:${f}`);
      if (sample.ts === reading.ts) {
        metrics[series.outputName] = sample.value;
        if (metricFlags) (flags ??= []).push(...metricFlags);
      } else {
        shifted ??= new Map();
        let group = shifted.get(sample.ts);
        if (!group) shifted.set(sample.ts, (group = { metrics: newMetrics(), flags: [] }));
        group.metrics[series.outputName] = sample.value;
        if (metricFlags) group.flags.push(...metricFlags);
      }
    }
    if (!metrics) {
      totals.out++;
      return [reading];
    }
    const out: Reading[] = [];
    const derive = (ts: number, m: Record<string, MetricValue>, f: readonly string[] | undefined): Reading => {
      const r: Reading = { ...reading, ts, metrics: m };
      if (f && f.length > 0) r.flags = [...(reading.flags ?? []), ...f];
      return r;
    };
    const baseHasMetrics = Object.keys(metrics).length > 0;
    if (baseHasMetrics) out.push(derive(reading.ts, metrics, flags));
    if (shifted) {
      let first = !baseHasMetrics;
      for (const ts of [...shifted.keys()].sort((a, b) => a - b)) {
        const group = shifted.get(ts)!;
        // Flags of removed metrics ride on the first reading that survives.
        out.push(derive(ts, group.metrics, first && flags ? [...flags, ...group.flags] : group.flags));
        first = false;
      }
    }
    if (out.length === 0) totals.emptied++;
    totals.out += out.length;
    if (emissions) out.push(...rollupReadings(emissions));
    return out;
  }

  function flush(now: number = clock.now()): Reading[] {
    const emissions: RollupEmission[] = [];
    for (const byMetric of seriesByDevice.values()) {
      for (const series of byMetric.values()) {
        if (!series) continue;
        series.ops.forEach((op, step) => {
          if (!(op instanceof TumblingWindows)) return;
          const done = op.advance(now);
          if (done.length > 0) changed?.add(series);
          for (const window of done) emissions.push({ series, step, window });
        });
      }
    }
    return emissions.length > 0 ? rollupReadings(emissions) : [];
  }

  function stats(): PipelineStats {
    const ops: Record<string, Record<string, number>> = {};
    for (const [op, counts] of countsByOp) ops[op] = { in: 0, ...counts.snapshot() };
    for (const pipeline of pipelines) for (const step of pipeline.steps) ops[step.config.op]!.in! += step.seen;
    return { readings: { ...totals }, series: seriesCount, ops };
  }

  function takeChangedState(): SeriesSnapshot[] {
    if (!changed || changed.size === 0) return [];
    const out: SeriesSnapshot[] = [];
    for (const series of changed) {
      const state = JSON.stringify({ p: series.fingerprint, tags: series.tags ?? null, ops: series.ops.map((op) => op.saveState?.() ?? null) });
      out.push({ deviceId: series.deviceId, metric: series.metric, state });
    }
    changed.clear();
    return out;
  }

  function restoreState(snapshots: Iterable<SeriesSnapshot>): { restored: number; discarded: number } {
    let restored = 0;
    let discarded = 0;
    for (const { deviceId, metric, state } of snapshots) {
      const series = seriesFor(deviceId, metric);
      if (!series) {
        discarded++;
        continue;
      }
      try {
        const saved = JSON.parse(state) as { p?: unknown; tags?: unknown; ops?: unknown };
        if (saved.p !== series.fingerprint || !Array.isArray(saved.ops) || saved.ops.length !== series.ops.length) throw new TypeError('another pipeline');
        series.ops.forEach((op, k) => op.loadState?.(saved.ops === undefined ? null : (saved.ops as unknown[])[k]));
        if (saved.tags !== null && typeof saved.tags === 'object') series.tags = saved.tags as Record<string, string>;
        restored++;
      } catch {
        // Partly loaded operators must not survive: the series starts afresh.
        seriesByDevice.get(deviceId)?.delete(metric);
        seriesCount--;
        seriesFor(deviceId, metric);
        discarded++;
      }
    }
    return { restored, discarded };
  }

  function resetState(): void {
    seriesByDevice.clear();
    seriesCount = 0;
    changed?.clear();
  }

  return { process, flush, stats, takeChangedState, restoreState, resetState };
}
