// Sink.present() for the InfluxDB v1 and v2 sinks: which points of a chunk the database holds
// already, so that recovery after a crash mid-write does not write them twice.
//
// Both APIs are also served by VictoriaMetrics, and only there does it matter: InfluxDB replaces
// a point written again (same measurement, tag set and timestamp), VictoriaMetrics keeps a second
// sample. So the server is identified first (once, cached; again after a failure):
//   GET /api/v1/export?match[]={__name__="ferry_presence_probe"}&start=0&end=1
// VictoriaMetrics answers 200 with Content-Type application/stream+json and no series (the same
// from 1.79 to its 2026 sources); InfluxDB 1.x answers 404 with X-Influxdb-Build on every answer;
// InfluxDB 2 serves its UI (200 text/html) or a 404 for paths outside its API. Only the
// VictoriaMetrics answer, without X-Influxdb-Build (which VictoriaMetrics never sends; it sends
// X-Influxdb-Version on its write paths, so that header proves nothing), counts as
// VictoriaMetrics. Anything else is answered "absent" for every point: the caller writes again,
// which InfluxDB turns into a replace, and which costs at worst a duplicate elsewhere - never a
// lost point. Only a definite InfluxDB answer is cached; an odd answer is asked again next time.
//
// On VictoriaMetrics: /internal/force_flush first (without it a sample written a moment ago is
// searchable only after about 1 s, and a series searched for just before it was created only
// after about 10 s), then /api/v1/export for the points' series (victoria-series.ts), by POST in
// bounded requests, and each point is matched to its samples.
import type { Logger } from '@ferry/runtime';
import type { Point } from './sink.js';
import { databaseMessage, networkReason, unavailable } from './write-answer.js';
import { DEFAULT_PLAN_LIMITS, expectationOf, parseExportLine, planExports, SampleIndex, type AddedLabels, type PlanLimits } from './victoria-series.js';

export interface PresenceOptions {
  /** Base URL without trailing slash. */
  readonly base: string;
  /** Sink description for errors and logs. */
  readonly description: string;
  /** Sent with every request (the sink's credentials). */
  readonly headers: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  /** Labels VictoriaMetrics adds to points written through this API (v1: `{ db }`). */
  readonly addedLabels: AddedLabels;
  readonly logger?: Logger | undefined;
  readonly limits?: PlanLimits | undefined;
}

export interface Presence {
  /** Sink.present(). */
  present(points: readonly Point[]): Promise<readonly boolean[]>;
  /** Drops what is known of the server (after a failed write: it may come back as another one). */
  forget(): void;
}

export type ServerKind = 'victoria-metrics' | 'influxdb' | 'unknown';

const PROBE_PATH = `/api/v1/export?${new URLSearchParams({ 'match[]': '{__name__="ferry_presence_probe"}', start: '0', end: '1' }).toString()}`;

interface HttpReply {
  readonly status: number;
  readonly headers: Headers;
  readonly body: string;
}

export function createPresence(opts: PresenceOptions): Presence {
  const { base, description, timeoutMs, logger } = opts;
  const limits = opts.limits ?? DEFAULT_PLAN_LIMITS;
  let known: Promise<ServerKind> | undefined;
  let flushRefusalLogged = false;

  async function request(path: string, init: RequestInit = {}): Promise<HttpReply> {
    try {
      const response = await fetch(`${base}${path}`, {
        ...init,
        headers: { ...opts.headers, ...(init.headers as Record<string, string> | undefined) },
        signal: AbortSignal.timeout(timeoutMs),
      });
      return { status: response.status, headers: response.headers, body: await response.text() };
    } catch (err) {
      throw unavailable(description, `cannot reach the database: ${networkReason(err, timeoutMs)}`, {}, err);
    }
  }

  /** Network errors, 5xx and 429 mean the database cannot answer now: the caller retries. */
  function failIfUnavailable(reply: HttpReply, what: string): void {
    if (reply.status >= 500 || reply.status === 429) {
      throw unavailable(description, `${what} failed (HTTP ${reply.status}): ${databaseMessage(reply.body)}`, { status: reply.status });
    }
  }

  async function detect(): Promise<ServerKind> {
    const reply = await request(PROBE_PATH);
    failIfUnavailable(reply, 'identifying the database');
    const kind = classifyProbe(reply);
    if (kind === 'unknown') {
      logger?.warn({ sink: description, status: reply.status }, 'cannot tell whether the database is VictoriaMetrics; recovery writes every point again');
    } else {
      logger?.info({ sink: description, server: kind }, 'identified the database for presence checks');
    }
    return kind;
  }

  async function serverKind(): Promise<ServerKind> {
    const pending = known ?? detect();
    known = pending;
    try {
      const kind = await pending;
      if (kind === 'unknown' && known === pending) known = undefined;
      return kind;
    } catch (err) {
      if (known === pending) known = undefined;
      throw err;
    }
  }

  async function flush(): Promise<void> {
    const reply = await request('/internal/force_flush');
    failIfUnavailable(reply, 'force_flush');
    if ((reply.status < 200 || reply.status >= 300) && !flushRefusalLogged) {
      // e.g. -forceFlushAuthKey set: samples of the last second may be missed (read as absent, written again).
      flushRefusalLogged = true;
      logger?.warn({ sink: description, status: reply.status, reason: databaseMessage(reply.body) }, 'VictoriaMetrics refused /internal/force_flush; the newest samples may be missed');
    }
  }

  async function presentOnVictoria(points: readonly Point[]): Promise<boolean[]> {
    const expectations = points.map((p) => expectationOf(p, opts.addedLabels));
    const answer = expectations.map((e) => e.kind === 'nothing-stored');
    const plan = planExports(expectations, limits);
    if (plan.length === 0) return answer;
    await flush();
    const index = new SampleIndex();
    const readable = new Set<number>();
    for (const exportRequest of plan) {
      const form = new URLSearchParams();
      for (const selector of exportRequest.selectors) form.append('match[]', selector);
      form.set('start', String(exportRequest.startMs / 1000));
      form.set('end', String(exportRequest.endMs / 1000));
      const reply = await request('/api/v1/export', { method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      failIfUnavailable(reply, 'export');
      if (reply.status !== 200) {
        // A refused query (a limit of this server, an unexpected version): unsure, so absent.
        logger?.warn({ sink: description, status: reply.status, reason: databaseMessage(reply.body), points: exportRequest.points.length }, 'VictoriaMetrics refused an export; those points will be written again');
        continue;
      }
      const series = reply.body.split('\n').filter((line) => line.trim() !== '').map(parseExportLine);
      if (series.some((s) => s === undefined)) {
        logger?.warn({ sink: description, points: exportRequest.points.length }, 'unexpected export answer from VictoriaMetrics; those points will be written again');
        continue;
      }
      for (const s of series) if (s) index.add(s);
      for (const i of exportRequest.points) readable.add(i);
    }
    // In the caller's order, so that of two indistinguishable points the first takes the sample.
    expectations.forEach((e, i) => {
      if (e.kind === 'samples' && readable.has(i)) answer[i] = index.take(e);
    });
    return answer;
  }

  return {
    async present(points) {
      // An empty call identifies the server ahead of need (an ingestor that starts with suspects).
      const kind = await serverKind();
      if (points.length === 0) return [];
      if (kind !== 'victoria-metrics') return points.map(() => false);
      try {
        return await presentOnVictoria(points);
      } catch (err) {
        // Whatever failed (a restart, a new server behind the URL), identify it again next time.
        known = undefined;
        throw err;
      }
    },
    forget() {
      known = undefined;
    },
  };
}

/** Reads the probe's answer (see the module comment). */
export function classifyProbe(reply: { readonly status: number; readonly headers: Headers; readonly body: string }): ServerKind {
  if (reply.headers.has('x-influxdb-build')) return 'influxdb';
  const contentType = reply.headers.get('content-type') ?? '';
  if (reply.status === 200 && contentType.startsWith('application/stream+json') && reply.body.trim() === '') return 'victoria-metrics';
  return 'unknown';
}
