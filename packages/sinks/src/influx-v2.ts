// InfluxDB 2.x sink (also VictoriaMetrics, which accepts the same /api/v2/write), through
// @influxdata/influxdb-client's transport fed with our own line protocol as one ready body.
//
// The client's WriteApi would take the lines one by one (measuring each for its batch bounds),
// join them again and keep a retry buffer: the only copy of unsent data in memory, lost with the
// process. So the sink hands the body to the client's transport (InfluxDB.transport, the layer
// the WriteApi itself sends through) as one request, the way the WriteApi would send it (same
// path, headers, no gzip), and counts a write only on a 2xx; we retry ourselves, from durable storage.
// present() tells InfluxDB 2 and VictoriaMetrics apart and reads back from the latter (presence.ts).
import { HttpError, InfluxDB, setLogger } from '@influxdata/influxdb-client';
import type { SendOptions } from '@influxdata/influxdb-client';
import type { Clock, Logger } from '@ferry/runtime';
import { systemClock } from '@ferry/runtime';
import type { Sink } from './sink.js';
import { createHttpSink } from './http-sink.js';
import { createPresence } from './presence.js';
import { describeUrl, judgeAnswer, networkReason, unavailable, type WriteAttempt } from './write-answer.js';

export interface InfluxV2SinkOptions {
  /** Base URL, e.g. http://127.0.0.1:8086 (InfluxDB 2) or http://127.0.0.1:8428 (VictoriaMetrics). */
  readonly url: string;
  readonly token: string;
  readonly org: string;
  readonly bucket: string;
  /** Socket idle timeout per request; silence longer than this counts as unavailable. Default 10 s. */
  readonly timeoutMs?: number | undefined;
  readonly logger?: Logger | undefined;
  readonly clock?: Clock | undefined;
}

const NEVER = Number.MAX_SAFE_INTEGER;

export function createInfluxV2Sink(opts: InfluxV2SinkOptions): Sink {
  const base = opts.url.replace(/\/+$/, '');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const clock = opts.clock ?? systemClock;
  const description = `influxdb2 ${describeUrl(opts.url)} org=${opts.org} bucket=${opts.bucket}`;
  const logger = opts.logger;
  // The client logs every failed request to the console by itself; we report failures as typed
  // errors, so its own lines only go to debug. setLogger is process-wide: the last sink wins.
  setLogger({
    error: (message, error) => logger?.debug({ err: error as unknown }, `influxdb-client: ${message}`),
    warn: (message, error) => logger?.debug({ err: error as unknown }, `influxdb-client: ${message}`),
  });
  const influx = new InfluxDB({ url: base, token: opts.token, timeout: timeoutMs });

  // As the client's WriteApi spells it (WriteApiImpl): org, bucket, precision ns.
  const writePath = `/api/v2/write?org=${encodeURIComponent(opts.org)}&bucket=${encodeURIComponent(opts.bucket)}&precision=ns`;
  const sendOptions: SendOptions = { method: 'POST', headers: { 'content-type': 'text/plain; charset=utf-8' }, gzipThreshold: NEVER };

  /**
   * One request; resolves with the status of an answer below 300, or undefined when the request
   * completed without one (cancelled). The transport calls `error` with an HttpError for any answer
   * of 300 or more (a missing status counts as 600), and for a network failure; `complete` after
   * any other answer, which judgeAnswer then judges: only 204 (or 201) is a write, since a 200 or 202
   * comes from something else at that address or means accepted, not stored.
   */
  function post(body: string): Promise<number | undefined> {
    return new Promise((resolve, reject) => {
      let status: number | undefined;
      influx.transport.send(writePath, body, sendOptions, {
        responseStarted(_headers, statusCode) {
          status = statusCode;
        },
        error: reject,
        complete: () => resolve(status),
      });
    });
  }

  async function send(body: string): Promise<WriteAttempt> {
    let status: number | undefined;
    try {
      status = await post(body);
    } catch (err) {
      if (err instanceof HttpError) {
        const retryAfter = err.headers?.['retry-after'];
        return judgeAnswer(
          {
            status: err.statusCode,
            body: err.body ?? err.message,
            retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
          },
          description,
          clock.now(),
        );
      }
      throw unavailable(description, `cannot reach the database: ${networkReason(err, timeoutMs)}`, {}, err);
    }
    // No status: cancelled, a failed write (retried); a rewrite is settled by presence, a point taken as written and not stored is lost.
    if (status === undefined) throw unavailable(description, 'the request ended without an answer from the database', {});
    return judgeAnswer({ status, body: '' }, description, clock.now());
  }

  async function ping(): Promise<boolean> {
    // /health answers on InfluxDB 2 (200 {"status":"pass"}, 503 when failing) and VictoriaMetrics (200 OK).
    const response = await fetch(`${base}/health`, { signal: AbortSignal.timeout(timeoutMs) });
    await response.arrayBuffer();
    return response.status >= 200 && response.status < 300;
  }

  // VictoriaMetrics ignores org and bucket on /api/v2/write: it adds no label.
  const presence = createPresence({ base, description, headers: { authorization: `Token ${opts.token}` }, timeoutMs, addedLabels: {}, logger });
  return createHttpSink({ description, send, ping, presence, logger });
}
