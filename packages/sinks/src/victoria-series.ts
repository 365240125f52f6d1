// How VictoriaMetrics keeps an InfluxDB point, and how to find it again: the pure part of
// presence.ts (naming rules, export selectors, request plan, export parsing, matching).
//
// Verified against VictoriaMetrics 1.79.5 (Debian), unchanged in its source up to 2026:
// - `m,tagA=x f1=1,f2=2 ts` becomes the series `m_f1{tagA="x"}` and `m_f2{tagA="x"}`, one
//   sample each at the same time (defaults of -influxMeasurementFieldSeparator,
//   -influxSkipSingleField and -influxSkipMeasurement).
// - Label names and values are kept byte for byte (spaces, commas, quotes, backslashes,
//   Unicode, emoji); labels with an empty value are dropped.
// - The v1 /write adds the label `db` (-influxDBLabel) with the `db` parameter, unless the point
//   has a tag of that name (the tag wins). The v2 /api/v2/write adds no label: `bucket` and
//   `org` are ignored.
// - Timestamps are kept in milliseconds, the sub-millisecond part cut off (truncated).
// - Numbers are kept as a decimal with about 12 significant digits (15 above 10^6):
//   0.30000000000000004 reads back as 0.3, -0 as 0, 5e-324 as 0. Values are compared with a
//   relative tolerance for that reason.
// - Booleans become 1 and 0.
// - A string field is NOT dropped: its text (as escaped in the line) goes through
//   fastfloat.ParseBestEffort, so "12.5" is kept as 12.5, "inf" as +Inf, "nan" not at all (NaN
//   is not stored) and any other text as a bogus 0. A rewrite would duplicate that sample too,
//   so it counts like a number field, with the value ParseBestEffort gives.
// A server started with other naming flags, relabeling or extra labels names the point
// differently: nothing matches and every point reads as absent, so the caller writes again
// (a duplicate at worst, never a lost point).
import type { FieldValue, Point } from './sink.js';
import { checkPoint } from './point-rules.js';

/** Series labels, sorted by name; `__name__` not included. */
export type Labels = ReadonlyArray<readonly [string, string]>;

export interface ExpectedSample {
  /** `<measurement>_<field>` */
  readonly metric: string;
  /** Expected value; compared with sameStoredValue. */
  readonly value: number;
}

export type PointExpectation =
  /** The point cannot be stored (write() would reject it) or cannot be looked up safely: rewrite. */
  | { readonly kind: 'absent' }
  /** No field of the point leaves a sample (e.g. only string fields reading "nan"). */
  | { readonly kind: 'nothing-stored' }
  | { readonly kind: 'samples'; readonly labels: Labels; readonly seriesKey: string; readonly ms: number; readonly samples: readonly ExpectedSample[] };

const NS_PER_MS = 1_000_000n;

/** Labels the server adds to every point unless the point has a tag of that name (v1: `{ db }`). */
export type AddedLabels = Readonly<Record<string, string>>;

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function seriesKeyOf(labels: Labels): string {
  return JSON.stringify(labels);
}

/** What VictoriaMetrics stores for a point written through the InfluxDB line protocol. */
export function expectationOf(point: Point, added: AddedLabels): PointExpectation {
  if (checkPoint(point) !== undefined) return { kind: 'absent' };
  const labels = new Map<string, string>();
  for (const [key, value] of Object.entries(point.tags)) if (value !== '') labels.set(key, value);
  // A tag named like VictoriaMetrics' own metric name label would clash with it.
  if (labels.has('__name__') || labels.has('')) return { kind: 'absent' };
  for (const [key, value] of Object.entries(added)) if (!labels.has(key) && value !== '') labels.set(key, value);
  const sorted = [...labels].sort(([a], [b]) => compareCodeUnits(a, b));
  const samples: ExpectedSample[] = [];
  for (const [field, value] of Object.entries(point.fields)) {
    const stored = storedValue(value);
    if (stored !== undefined) samples.push({ metric: `${point.measurement}_${field}`, value: stored });
  }
  if (samples.length === 0) return { kind: 'nothing-stored' };
  // BigInt division truncates toward zero, as VictoriaMetrics' int64 division does.
  const ms = Number(point.timestampNs / NS_PER_MS);
  if (!Number.isSafeInteger(ms) || ms < 0) return { kind: 'absent' };
  return { kind: 'samples', labels: sorted, seriesKey: seriesKeyOf(sorted), ms, samples };
}

/** The number VictoriaMetrics stores for a field value; undefined when it stores none. */
export function storedValue(value: FieldValue): number | undefined {
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (typeof value === 'number') return value;
  return parseBestEffort(value.replace(/["\\]/g, '\\$&'));
}

const PLAIN_NUMBER = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
const INFINITY = /^(-?)\+?(?:inf|infinity)$/i;
const NOT_A_NUMBER = /^-?\+?nan$/i;

/**
 * fastfloat.ParseBestEffort as VictoriaMetrics applies it to a quoted field (the text between
 * the quotes, still escaped): a plain decimal number, ±inf/infinity, nan (undefined: NaN is not
 * stored), anything else 0 (trailing garbage, a leading `+` or `.`, a lone `-`...).
 */
export function parseBestEffort(text: string): number | undefined {
  if (PLAIN_NUMBER.test(text)) return Number(text);
  const inf = INFINITY.exec(text);
  if (inf) return inf[1] === '-' ? -Infinity : Infinity;
  if (NOT_A_NUMBER.test(text)) return undefined;
  return 0;
}

/** VictoriaMetrics keeps about 12 significant digits; closer than this is the same reading. */
const RELATIVE_TOLERANCE = 1e-9;
/** It cannot keep magnitudes below about 1e-300 (5e-324 reads back as 0). */
const SMALLEST_KEPT = 1e-300;

export function sameStoredValue(expected: number, stored: number): boolean {
  if (expected === stored) return true;
  if (!Number.isFinite(expected) || !Number.isFinite(stored)) return false;
  const scale = Math.max(Math.abs(expected), Math.abs(stored));
  if (scale < SMALLEST_KEPT) return true;
  return Math.abs(expected - stored) <= RELATIVE_TOLERANCE * scale;
}

// --- selectors -----------------------------------------------------------------------------

/** A MetricsQL double-quoted string (strconv.Unquote rules; checkPoint already refused line breaks and control characters). */
export function quoteMetricsql(text: string): string {
  return `"${text.replace(/[\\"]/g, '\\$&')}"`;
}

/**
 * A label name as a MetricsQL identifier: `[a-zA-Z_:][a-zA-Z0-9_:.]*`, any other character
 * escaped with a backslash (the lexer takes the next whole UTF-8 character after a backslash).
 * `x` is never escaped, so no `\xNN` hex escape can appear by accident.
 */
export function metricsqlIdent(name: string): string {
  let out = '';
  let first = true;
  for (const ch of name) {
    const plain = /^[A-Za-z_:]$/.test(ch) || (!first && /^[0-9.]$/.test(ch));
    out += plain ? ch : `\\${ch}`;
    first = false;
  }
  return out;
}

/** RE2's QuoteMeta: the metric names become literal alternatives of one `__name__=~` regex. */
export function quoteRegex(text: string): string {
  return text.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&');
}

/** One selector for all the metrics of one label set: exactly its labels (VictoriaMetrics anchors the regex). */
export function selectorOf(labels: Labels, metrics: readonly string[]): string {
  const [only] = metrics;
  const name = metrics.length === 1 && only !== undefined ? `__name__=${quoteMetricsql(only)}` : `__name__=~${quoteMetricsql(metrics.map(quoteRegex).join('|'))}`;
  return `{${[name, ...labels.map(([k, v]) => `${metricsqlIdent(k)}=${quoteMetricsql(v)}`)].join(',')}}`;
}

// --- request plan --------------------------------------------------------------------------

export interface ExportRequest {
  readonly selectors: readonly string[];
  /** Inclusive, Unix milliseconds (with a margin: samples are matched to the millisecond afterwards). */
  readonly startMs: number;
  readonly endMs: number;
  /** Indexes of the points this request answers for. */
  readonly points: readonly number[];
}

export interface PlanLimits {
  /** Selectors per request (VictoriaMetrics runs one index search each). */
  readonly maxSelectors: number;
  /** Form body bytes per request. */
  readonly maxBodyBytes: number;
  /**
   * Series whose times lie within this window share a request freely; beyond it a series joins
   * only if its own time span covers at least half of the request's, so no series is read over
   * much more than twice the time it needs (a device with a stray clock gets its own request).
   */
  readonly windowMs: number;
}

export const DEFAULT_PLAN_LIMITS: PlanLimits = { maxSelectors: 1000, maxBodyBytes: 256 * 1024, windowMs: 5 * 60_000 };

/** Samples at the edges of the range are read with this margin (start/end travel as fractional seconds). */
const MARGIN_MS = 1000;

interface SeriesGroup {
  readonly labels: Labels;
  readonly metrics: Set<string>;
  readonly points: number[];
  minMs: number;
  maxMs: number;
}

/** Groups the points by label set and packs the groups into bounded export requests. */
export function planExports(expectations: readonly PointExpectation[], limits: PlanLimits = DEFAULT_PLAN_LIMITS): ExportRequest[] {
  const groups = new Map<string, SeriesGroup>();
  expectations.forEach((e, index) => {
    if (e.kind !== 'samples') return;
    let group = groups.get(e.seriesKey);
    if (!group) {
      group = { labels: e.labels, metrics: new Set(), points: [], minMs: e.ms, maxMs: e.ms };
      groups.set(e.seriesKey, group);
    }
    for (const s of e.samples) group.metrics.add(s.metric);
    group.points.push(index);
    group.minMs = Math.min(group.minMs, e.ms);
    group.maxMs = Math.max(group.maxMs, e.ms);
  });
  const ordered = [...groups.values()].sort((a, b) => a.minMs - b.minMs || a.maxMs - b.maxMs);
  const requests: ExportRequest[] = [];
  let current: { selectors: string[]; bytes: number; lo: number; hi: number; shortestSpan: number; points: number[] } | undefined;
  const close = (): void => {
    if (current) requests.push({ selectors: current.selectors, startMs: Math.max(0, current.lo - MARGIN_MS), endMs: current.hi + MARGIN_MS, points: current.points });
    current = undefined;
  };
  for (const group of ordered) {
    const selector = selectorOf(group.labels, [...group.metrics].sort(compareCodeUnits));
    // `&match%5B%5D=` plus the selector percent-encoded (an upper bound of the form's encoding).
    const bytes = 14 + encodeURIComponent(selector).length;
    const ownSpan = group.maxMs - group.minMs;
    if (current) {
      const lo = Math.min(current.lo, group.minMs);
      const hi = Math.max(current.hi, group.maxMs);
      const span = hi - lo;
      const timeFits = span <= limits.windowMs || Math.min(current.shortestSpan, ownSpan) * 2 >= span;
      if (timeFits && current.selectors.length < limits.maxSelectors && current.bytes + bytes <= limits.maxBodyBytes) {
        current.selectors.push(selector);
        current.bytes += bytes;
        current.lo = lo;
        current.hi = hi;
        current.shortestSpan = Math.min(current.shortestSpan, ownSpan);
        current.points.push(...group.points);
        continue;
      }
      close();
    }
    current = { selectors: [selector], bytes, lo: group.minMs, hi: group.maxMs, shortestSpan: ownSpan, points: [...group.points] };
  }
  close();
  return requests;
}

// --- export answer -------------------------------------------------------------------------

export interface ExportedSeries {
  readonly metric: string;
  readonly seriesKey: string;
  readonly values: readonly number[];
  readonly timestamps: readonly number[];
}

/** Bare tokens VictoriaMetrics writes for values JSON cannot express. */
const SPECIAL_VALUES: Readonly<Record<string, number>> = { NaN: Number.NaN, Inf: Infinity, '+Inf': Infinity, '-Inf': -Infinity };

/**
 * Parses one line of /api/v1/export (JSON lines: {"metric":{...},"values":[...],"timestamps":[...]}).
 * Infinite values come as bare `+Inf`/`-Inf` (not JSON): they are quoted before parsing. Returns
 * undefined for a line of another shape.
 */
export function parseExportLine(line: string): ExportedSeries | undefined {
  // The metric's labels come first; an unescaped `"values":[` can only be the key itself.
  const at = line.lastIndexOf('"values":[');
  if (at < 0) return undefined;
  const text = line.slice(0, at) + line.slice(at).replace(/([[,])(NaN|[+-]?Inf)(?=[,\]])/g, '$1"$2"');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (json === null || typeof json !== 'object') return undefined;
  const { metric, values, timestamps } = json as { metric?: unknown; values?: unknown; timestamps?: unknown };
  if (metric === null || typeof metric !== 'object' || !Array.isArray(values) || !Array.isArray(timestamps) || values.length !== timestamps.length) return undefined;
  let name: string | undefined;
  const labels: Array<[string, string]> = [];
  for (const [key, value] of Object.entries(metric)) {
    if (typeof value !== 'string') return undefined;
    if (key === '__name__') name = value;
    else labels.push([key, value]);
  }
  if (name === undefined) return undefined;
  const numbers: number[] = [];
  for (const v of values as unknown[]) {
    if (typeof v === 'number') numbers.push(v);
    else if (typeof v === 'string' && v in SPECIAL_VALUES) numbers.push(SPECIAL_VALUES[v] ?? Number.NaN);
    else return undefined;
  }
  if (!(timestamps as unknown[]).every((t) => typeof t === 'number')) return undefined;
  labels.sort(([a], [b]) => compareCodeUnits(a, b));
  return { metric: name, seriesKey: seriesKeyOf(labels), values: numbers, timestamps: timestamps as number[] };
}

/** Samples by series and millisecond, each usable once. */
export class SampleIndex {
  readonly #samples = new Map<string, number[]>();

  add(series: ExportedSeries): void {
    series.timestamps.forEach((ms, i) => {
      const key = sampleKey(series.metric, series.seriesKey, ms);
      const list = this.#samples.get(key);
      const value = series.values[i] ?? Number.NaN;
      if (list) list.push(value);
      else this.#samples.set(key, [value]);
    });
  }

  /**
   * Whether every expected sample of the point is there; if so they are used up, so that two
   * points of one series in one millisecond with the same values need two samples (VictoriaMetrics
   * cannot tell them apart otherwise: it dropped the sub-millisecond part that did).
   */
  take(expectation: Extract<PointExpectation, { kind: 'samples' }>): boolean {
    const taken: Array<{ list: number[]; at: number }> = [];
    for (const sample of expectation.samples) {
      const list = this.#samples.get(sampleKey(sample.metric, expectation.seriesKey, expectation.ms));
      const at = list ? list.findIndex((v, i) => !taken.some((t) => t.list === list && t.at === i) && sameStoredValue(sample.value, v)) : -1;
      if (!list || at < 0) return false;
      taken.push({ list, at });
    }
    // Remove from the end so earlier indexes stay valid.
    for (const { list, at } of taken.sort((a, b) => b.at - a.at)) list.splice(at, 1);
    return true;
  }
}

function sampleKey(metric: string, seriesKey: string, ms: number): string {
  return `${ms} ${JSON.stringify(metric)} ${seriesKey}`;
}
