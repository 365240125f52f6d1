// InfluxDB 1.x sink: POST /write with line protocol. InfluxDB 1.x answers 204 once the points
// are in its WAL. On a 400 it may have written part of the batch (`partial write: ...` names
// the first problem and counts the dropped points; unparsable lines are reported but not counted
// in `dropped`): the valid points ARE written. The bisection in bisect.ts copes with that
// (see there); a refused point comes back in `rejected` with InfluxDB's message.
// VictoriaMetrics serves the same /write; present() tells the two apart (presence.ts).
import type { Clock, Logger } from '@ferry/runtime';
import { systemClock } from '@ferry/runtime';
import type { Sink } from './sink.js';
import { createHttpSink } from './http-sink.js';
import { createPresence } from './presence.js';
import { describeUrl, judgeAnswer, networkReason, unavailable, type WriteAttempt } from './write-answer.js';

export interface InfluxV1SinkOptions {
  /** Base URL, e.g. http://127.0.0.1:8086 */
  readonly url: string;
  readonly database: string;
  /** Retention policy; the database default when absent. */
  readonly retentionPolicy?: string | undefined;
  /** Sent with HTTP basic auth (not in the URL, so it never lands in a proxy's access log). */
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** Per request; a request that takes longer counts as the database being unavailable. Default 10 s. */
  readonly timeoutMs?: number | undefined;
  readonly logger?: Logger | undefined;
  readonly clock?: Clock | undefined;
}

export function createInfluxV1Sink(opts: InfluxV1SinkOptions): Sink {
  const base = opts.url.replace(/\/+$/, '');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const clock = opts.clock ?? systemClock;
  const rp = opts.retentionPolicy ? ` rp=${opts.retentionPolicy}` : '';
  const description = `influxdb1 ${describeUrl(opts.url)} db=${opts.database}${rp}`;

  const query = new URLSearchParams({ db: opts.database, precision: 'ns' });
  if (opts.retentionPolicy) query.set('rp', opts.retentionPolicy);
  const writeUrl = `${base}/write?${query.toString()}`;
  const authHeaders: Record<string, string> = {};
  if (opts.username !== undefined) {
    authHeaders.authorization = `Basic ${Buffer.from(`${opts.username}:${opts.password ?? ''}`, 'utf8').toString('base64')}`;
  }
  const headers: Record<string, string> = { 'content-type': 'text/plain; charset=utf-8', ...authHeaders };

  async function send(requestBody: string): Promise<WriteAttempt> {
    let status: number;
    let body: string;
    let retryAfter: string | null;
    try {
      const response = await fetch(writeUrl, {
        method: 'POST',
        headers,
        body: requestBody,
        signal: AbortSignal.timeout(timeoutMs),
      });
      status = response.status;
      retryAfter = response.headers.get('retry-after');
      body = await response.text();
      // InfluxDB 1.x also puts the error in a header; use it when the body is empty.
      if (body === '' && status >= 300) body = response.headers.get('x-influxdb-error') ?? '';
    } catch (err) {
      throw unavailable(description, `cannot reach the database: ${networkReason(err, timeoutMs)}`, {}, err);
    }
    return judgeAnswer({ status, body, retryAfter }, description, clock.now());
  }

  async function ping(): Promise<boolean> {
    const response = await fetch(`${base}/ping`, { signal: AbortSignal.timeout(timeoutMs) });
    await response.arrayBuffer();
    return response.status >= 200 && response.status < 300;
  }

  // VictoriaMetrics labels every point written through /write with db=<the db parameter>.
  const presence = createPresence({ base, description, headers: authHeaders, timeoutMs, addedLabels: { db: opts.database }, logger: opts.logger });
  return createHttpSink({ description, send, ping, presence, logger: opts.logger });
}
