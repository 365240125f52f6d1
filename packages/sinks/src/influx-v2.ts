// InfluxDB 2.x sink (also VictoriaMetrics, which accepts the same /api/v2/write): our own line
// protocol POSTed as one plain request per send, uncompressed, with precision ns. No client
// library in between: @influxdata/influxdb-client copied and measured every line again into its
// own buffer (a tenth of the ingestor's write stage, bench/README.md), and its retry buffer would
// keep the only copy of unsent data in memory. We retry ourselves, from durable storage: a send
// resolves only once the database answered 2xx, and reports anything else (write-answer.ts).
import type { Clock, Logger } from '@ferry/runtime';
import { systemClock } from '@ferry/runtime';
import type { Sink } from './sink.js';
import { createHttpSink } from './http-sink.js';
import { describeUrl, judgeAnswer, networkReason, unavailable, type WriteAttempt } from './write-answer.js';

export interface InfluxV2SinkOptions {
  /** Base URL, e.g. http://127.0.0.1:8086 (InfluxDB 2) or http://127.0.0.1:8428 (VictoriaMetrics). */
  readonly url: string;
  readonly token: string;
  readonly org: string;
  readonly bucket: string;
  /** Per request; a request that takes longer counts as the database being unavailable. Default 10 s. */
  readonly timeoutMs?: number | undefined;
  readonly logger?: Logger | undefined;
  readonly clock?: Clock | undefined;
}

export function createInfluxV2Sink(opts: InfluxV2SinkOptions): Sink {
  const base = opts.url.replace(/\/+$/, '');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const clock = opts.clock ?? systemClock;
  const description = `influxdb2 ${describeUrl(opts.url)} org=${opts.org} bucket=${opts.bucket}`;
  const logger = opts.logger;
  const query = new URLSearchParams({ org: opts.org, bucket: opts.bucket, precision: 'ns' });
  const writeUrl = `${base}/api/v2/write?${query.toString().replace(/\+/g, '%20')}`;
  const headers: Record<string, string> = { authorization: `Token ${opts.token}`, 'content-type': 'text/plain; charset=utf-8' };

  async function send(lines: readonly string[]): Promise<WriteAttempt> {
    let status: number;
    let body: string;
    let retryAfter: string | null;
    try {
      const response = await fetch(writeUrl, { method: 'POST', headers, body: lines.join('\n'), signal: AbortSignal.timeout(timeoutMs) });
      status = response.status;
      retryAfter = response.headers.get('retry-after');
      body = await response.text();
    } catch (err) {
      throw unavailable(description, `cannot reach the database: ${networkReason(err, timeoutMs)}`, {}, err);
    }
    return judgeAnswer({ status, body, retryAfter }, description, clock.now());
  }

  async function ping(): Promise<boolean> {
    // /health answers on InfluxDB 2 (200 {"status":"pass"}, 503 when failing) and VictoriaMetrics (200 OK).
    const response = await fetch(`${base}/health`, { signal: AbortSignal.timeout(timeoutMs) });
    await response.arrayBuffer();
    return response.status >= 200 && response.status < 300;
  }

  return createHttpSink({ description, send, ping, logger });
}
