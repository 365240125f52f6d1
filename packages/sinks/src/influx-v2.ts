// InfluxDB 2.x sink (also VictoriaMetrics, which accepts the same /api/v2/write), through
// @influxdata/influxdb-client's WriteApi fed with our own line protocol.
//
// The client is made to behave like a plain request: each send gets its own WriteApi, sized so
// that nothing flushes on its own (no timer, no size trigger), with the client's retries off
// (maxRetries 0: its retry buffer would keep the only copy of unsent data in memory, and a
// process crash would lose it) and gzip off. `flush()` then resolves only once the database
// answered 2xx, and rejects with the answer otherwise; we retry ourselves, from durable storage.
// A WriteApi per send also keeps concurrent writes from sharing a buffer.
// present() tells InfluxDB 2 and VictoriaMetrics apart and reads back from the latter (presence.ts).
import { HttpError, InfluxDB, setLogger } from '@influxdata/influxdb-client';
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

  async function send(lines: readonly string[]): Promise<WriteAttempt> {
    const writeApi = influx.getWriteApi(opts.org, opts.bucket, 'ns', {
      batchSize: lines.length + 1,
      maxBatchBytes: NEVER,
      flushInterval: 0,
      maxRetries: 0,
      maxBufferLines: 1,
      gzipThreshold: NEVER,
    });
    try {
      writeApi.writeRecords([...lines]);
      await writeApi.flush();
      return { kind: 'written' };
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
    } finally {
      writeApi.dispose();
    }
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
