// How an HTTP database's answer to a write is read, shared by the InfluxDB v1 and v2 sinks:
// either the points were written, or the database refused them as invalid (the data's fault:
// they go to the dead-letter store), or the database is unavailable (never the data's fault:
// the caller retries, honouring Retry-After).
import { FerryError } from '@ferry/protocol';

export type WriteAttempt = { readonly kind: 'written' } | { readonly kind: 'refused'; readonly reason: string };

export const WRITTEN: WriteAttempt = { kind: 'written' };

export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
  /** The Retry-After header, when present. */
  readonly retryAfter?: string | null | undefined;
}

/**
 * Statuses that say the request body is at fault: 400 (malformed or, on InfluxDB 1.x, a partial
 * write), 422 (InfluxDB 2: points outside retention or otherwise unprocessable), 413 (too large,
 * which splitting the batch cures unless a single point is too large).
 */
const REFUSED_STATUSES = new Set([400, 413, 422]);
/** What a database answers a write it stored (InfluxDB 1 and 2, VictoriaMetrics). */
const WRITE_ANSWERS = new Set([201, 204]);

/** Delay asked for by a Retry-After header (delta-seconds or an HTTP date), in milliseconds. */
export function parseRetryAfter(header: string | undefined | null, nowMs: number): number | undefined {
  if (header === undefined || header === null) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - nowMs);
}

/** The database's own words from an error body: InfluxDB 1.x `{"error"}`, 2.x `{"message"}`, or plain text. */
export function databaseMessage(body: string): string {
  const text = body.trim();
  try {
    const json: unknown = JSON.parse(text);
    if (json !== null && typeof json === 'object') {
      const { message, error } = json as { message?: unknown; error?: unknown };
      if (typeof message === 'string' && message.length > 0) return message;
      if (typeof error === 'string' && error.length > 0) return error;
    }
  } catch {
    // not JSON: the text itself is the message
  }
  return text.length > 1000 ? `${text.slice(0, 1000)}...` : text;
}

export function unavailable(sink: string, message: string, details: { status?: number | undefined; retryAfterMs?: number | undefined }, cause?: unknown): FerryError {
  const structured: Record<string, unknown> = { sink };
  if (details.status !== undefined) structured.status = details.status;
  if (details.retryAfterMs !== undefined) structured.retryAfterMs = details.retryAfterMs;
  return new FerryError('FERRY_ERR_SINK_UNAVAILABLE', `${sink}: ${message}`, structured, cause === undefined ? undefined : { cause });
}

/** Classifies an answer; throws FERRY_ERR_SINK_UNAVAILABLE for everything that is not the data's fault. */
export function judgeAnswer(answer: HttpAnswer, sink: string, nowMs: number): WriteAttempt {
  const { status } = answer;
  // A write's answer is 204 (201 from some InfluxDB 2 versions). Any other 2xx comes from something
  // else at that address (a proxy, a login page) or means accepted, not stored: not a write.
  if (WRITE_ANSWERS.has(status)) return WRITTEN;
  const message = databaseMessage(answer.body) || `HTTP ${status}`;
  if (REFUSED_STATUSES.has(status)) return { kind: 'refused', reason: message };
  const retryAfterMs = parseRetryAfter(answer.retryAfter, nowMs);
  // Misconfiguration is not the data's fault: report it loudly, never dead-letter data for it.
  if (status === 401 || status === 403) {
    return fail(sink, `credentials refused (HTTP ${status}): check the token or username/password and their write permission: ${message}`, status, retryAfterMs);
  }
  if (status === 404) {
    return fail(sink, `not found (HTTP 404): check the URL and that the database/bucket/org exists: ${message}`, status, retryAfterMs);
  }
  if (status === 429) return fail(sink, `rate limited (HTTP 429): ${message}`, status, retryAfterMs);
  if (status >= 500) return fail(sink, `database failed (HTTP ${status}): ${message}`, status, retryAfterMs);
  return fail(sink, `unexpected answer (HTTP ${status}): ${message}`, status, retryAfterMs);
}

function fail(sink: string, message: string, status: number, retryAfterMs: number | undefined): never {
  throw unavailable(sink, message, { status, retryAfterMs });
}

/** A URL fit for logs: no credentials, no trailing slash. */
export function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = '';
    parsed.search = '';
    return parsed.toString().replace(/\/+$/, '');
  } catch {
    return '(invalid url)';
  }
}

/** Why a request got no answer; fetch hides the socket error in `cause` (ECONNREFUSED, timeout...). */
export function networkReason(err: unknown, timeoutMs: number): string {
  if (err instanceof Error) {
    if (err.name === 'TimeoutError' || err.name === 'AbortError' || err.name === 'RequestTimedOutError') {
      return `no answer within ${timeoutMs} ms`;
    }
    const ownCode = (err as NodeJS.ErrnoException).code;
    if (typeof ownCode === 'string') return `${ownCode}: ${err.message}`;
    const cause = err.cause;
    if (cause instanceof Error) {
      const code = (cause as NodeJS.ErrnoException).code;
      return code ? `${code}: ${cause.message}` : cause.message;
    }
    return err.message;
  }
  return String(err);
}
