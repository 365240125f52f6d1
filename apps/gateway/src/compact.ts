// Compaction under disk pressure (`outbox.whenFull: 'compact'`): the oldest backlog of a series is
// folded into one summary reading per interval (count, min, max, mean), flagged, instead of being
// dropped. Pure: the outbox chooses which rows may be folded and writes the summaries.
//
// Shape of a summary (docs/durability.md, "Compaction"): for each numeric metric `m`, `m` is the
// mean, with `m_count`, `m_min` and `m_max` beside it; a non-numeric metric (or one that is not a
// number in every reading) keeps its last value. `ferry_compacted` holds how many readings the
// summary replaces, so a summary is recognisable in the database and the counts add up. The
// reading carries the flag `compacted`, `ts` = the start of its interval, no `deviceSeq`.
import type { DeviceReading, MetricValue } from '@ferry/protocol';

export const COMPACTED_FLAG = 'compacted';
/** The metric on a summary holding how many readings it replaces. */
export const COMPACTED_COUNT_METRIC = 'ferry_compacted';
/** Readings that are summaries already (ours, or edge rollups) are never folded again. */
const SUMMARY_FLAGS = new Set([COMPACTED_FLAG, 'rollup']);
/** The derived fields of a numeric metric, in the order they are kept when the metric budget is short. */
const DERIVED = ['count', 'min', 'max'] as const;

export interface SummaryLimits {
  /** A summary must pass the ingestor's limits like any reading. */
  readonly maxMetricsPerReading: number;
  readonly maxNameLength: number;
}

/** True for a summary already (compacted or a rollup): it is not folded into another. */
export function isSummary(reading: Pick<DeviceReading, 'flags'>): boolean {
  return reading.flags?.some((f) => SUMMARY_FLAGS.has(f)) ?? false;
}

/** How many readings a stored reading stands for: a compaction summary its count, any other 1. */
export function readingsRepresented(reading: Pick<DeviceReading, 'flags' | 'metrics'>): number {
  if (!reading.flags?.includes(COMPACTED_FLAG)) return 1;
  const n = reading.metrics[COMPACTED_COUNT_METRIC];
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 1;
}

/** Start of the interval holding `ts` (floor, so times before 1970 align too). */
export function intervalStart(ts: number, intervalMs: number): number {
  return ts - (((ts % intervalMs) + intervalMs) % intervalMs);
}

/**
 * The series and interval a reading is summarised in: device, kind, tsSource and tags (a
 * different tag set is a different series in the database), and the interval of its own ts.
 */
export function summaryKey(reading: DeviceReading, intervalMs: number): string {
  const tags = reading.tags ? Object.entries(reading.tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) : [];
  return JSON.stringify([reading.deviceId, reading.kind, reading.tsSource, tags, intervalStart(reading.ts, intervalMs)]);
}

interface MetricStats {
  /** False once a value that is not a number was seen: the metric then keeps its last value. */
  numeric: boolean;
  count: number;
  sum: number;
  min: number;
  max: number;
  last: MetricValue;
  lastTs: number;
  lastSeq: number;
}

/** One summary being built: readings of one series and interval, added in any order. */
export class SeriesSummary {
  readonly #metrics = new Map<string, MetricStats>();
  readonly #flags = new Set<string>();
  readonly #seqs: number[] = [];
  readonly #first: DeviceReading;
  #receivedAt: number;
  #firstTs: number;
  #lastTs: number;

  constructor(
    first: DeviceReading,
    private readonly intervalMs: number,
    private readonly limits: SummaryLimits,
  ) {
    this.#first = first;
    this.#receivedAt = first.receivedAt;
    this.#firstTs = first.ts;
    this.#lastTs = first.ts;
  }

  /** Gateway seqs of the readings folded in, in the order added. */
  get seqs(): readonly number[] {
    return this.#seqs;
  }

  /** Readings folded in. */
  get count(): number {
    return this.#seqs.length;
  }

  /** Earliest and latest own time of the readings folded in. */
  get span(): { firstTs: number; lastTs: number } {
    return { firstTs: this.#firstTs, lastTs: this.#lastTs };
  }

  /**
   * Folds a reading in; false (and nothing changed) when its metrics would take the summary past
   * the metric limit: it is left as it is.
   */
  add(seq: number, reading: DeviceReading): boolean {
    let added = 0;
    for (const name of Object.keys(reading.metrics)) if (!this.#metrics.has(name)) added += 1;
    // Every metric name plus ferry_compacted must fit; derived fields are dropped before that.
    if (added > 0 && this.#metrics.size + added + 1 > this.limits.maxMetricsPerReading) return false;
    this.#seqs.push(seq);
    this.#receivedAt = Math.min(this.#receivedAt, reading.receivedAt);
    this.#firstTs = Math.min(this.#firstTs, reading.ts);
    this.#lastTs = Math.max(this.#lastTs, reading.ts);
    for (const flag of reading.flags ?? []) this.#flags.add(flag);
    for (const [name, value] of Object.entries(reading.metrics)) {
      let stats = this.#metrics.get(name);
      if (!stats) {
        stats = { numeric: true, count: 0, sum: 0, min: Infinity, max: -Infinity, last: value, lastTs: -Infinity, lastSeq: -Infinity };
        this.#metrics.set(name, stats);
      }
      if (typeof value === 'number') {
        stats.count += 1;
        stats.sum += value;
        // Math.min/max, not <: -0 and 0 must give the same summary whatever their order.
        stats.min = Math.min(stats.min, value);
        stats.max = Math.max(stats.max, value);
      } else {
        stats.numeric = false;
      }
      // The last value by the reading's own time, then by arrival.
      if (reading.ts > stats.lastTs || (reading.ts === stats.lastTs && seq > stats.lastSeq)) {
        stats.last = value;
        stats.lastTs = reading.ts;
        stats.lastSeq = seq;
      }
    }
    return true;
  }

  /** The summary reading (without a seq: the outbox gives it the seq of its oldest reading). */
  build(): DeviceReading {
    const metrics: Record<string, MetricValue> = {};
    for (const [name, stats] of this.#metrics) metrics[name] = stats.numeric ? stats.sum / stats.count : stats.last;
    const taken = new Set(Object.keys(metrics));
    let room = this.limits.maxMetricsPerReading - taken.size;
    if (!taken.has(COMPACTED_COUNT_METRIC) && room > 0) {
      metrics[COMPACTED_COUNT_METRIC] = this.count;
      room -= 1;
    }
    // Derived fields never overwrite a metric the readings have themselves, and are left out
    // (counts first kept) when their name would be too long or the reading too wide.
    for (const what of DERIVED) {
      for (const [name, stats] of this.#metrics) {
        if (!stats.numeric) continue;
        const field = `${name}_${what}`;
        if (room <= 0 || taken.has(field) || field.length > this.limits.maxNameLength) continue;
        metrics[field] = what === 'count' ? stats.count : what === 'min' ? stats.min : stats.max;
        room -= 1;
      }
    }
    const first = this.#first;
    return {
      deviceId: first.deviceId,
      kind: first.kind,
      ts: intervalStart(first.ts, this.intervalMs),
      tsSource: first.tsSource,
      receivedAt: this.#receivedAt,
      metrics,
      ...(first.tags ? { tags: { ...first.tags } } : {}),
      flags: [COMPACTED_FLAG, ...[...this.#flags].filter((f) => f !== COMPACTED_FLAG)],
    };
  }
}

/**
 * Groups readings per series and interval and builds one summary per group (groups of a single
 * reading included: the outbox leaves those as they are). Readings that would take a summary past
 * the metric limit are in `left`. The reference for the outbox's incremental use, and its tests.
 */
export function summarise(
  rows: readonly { seq: number; reading: DeviceReading }[],
  intervalMs: number,
  limits: SummaryLimits,
): { summaries: { seqs: readonly number[]; reading: DeviceReading }[]; left: number[] } {
  const groups = new Map<string, SeriesSummary>();
  const left: number[] = [];
  for (const { seq, reading } of rows) {
    if (isSummary(reading)) {
      left.push(seq);
      continue;
    }
    const key = summaryKey(reading, intervalMs);
    let group = groups.get(key);
    if (!group) groups.set(key, (group = new SeriesSummary(reading, intervalMs, limits)));
    if (!group.add(seq, reading)) left.push(seq);
  }
  return { summaries: [...groups.values()].filter((g) => g.count > 0).map((g) => ({ seqs: g.seqs, reading: g.build() })), left };
}

/**
 * Seq ranges the outbox handed to the sender: those rows may have reached the database (an ack
 * can be lost), so they are never compacted. Kept merged and sorted; small, since ranges below the
 * oldest row are forgotten.
 */
export class SentRanges {
  /** Disjoint, sorted [first, last] pairs. */
  #ranges: [number, number][] = [];

  get size(): number {
    return this.#ranges.length;
  }

  add(first: number, last: number): void {
    const out: [number, number][] = [];
    let a = first;
    let b = last;
    let placed = false;
    for (const r of this.#ranges) {
      if (r[1] + 1 < a) out.push(r);
      else if (b + 1 < r[0]) {
        if (!placed) out.push([a, b]);
        placed = true;
        out.push(r);
      } else {
        a = Math.min(a, r[0]);
        b = Math.max(b, r[1]);
      }
    }
    if (!placed) out.push([a, b]);
    this.#ranges = out;
  }

  has(seq: number): boolean {
    let lo = 0;
    let hi = this.#ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.#ranges[mid]!;
      if (seq < r[0]) hi = mid - 1;
      else if (seq > r[1]) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** Forgets every range wholly below `seq` (no row there any more). */
  forgetBelow(seq: number): void {
    this.#ranges = this.#ranges.filter((r) => r[1] >= seq);
  }

  clear(): void {
    this.#ranges = [];
  }
}
