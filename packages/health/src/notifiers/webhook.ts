// Webhook notifier: POSTs an Alertmanager-compatible payload; retries network errors, 429 and
// 5xx with backoff and jitter, honouring Retry-After; a 4xx other than 429 is not retried.
import { backoffDelay } from '@ferry/runtime';
import type { BackoffPolicy } from '@ferry/runtime';
import { alertmanagerPayload } from './alertmanager.js';
import type { Notifier } from './notifier.js';

export interface WebhookNotifierOptions {
  readonly url: string;
  readonly name?: string;
  readonly headers?: Record<string, string>;
  /** Tries in all, first included. */
  readonly maxAttempts?: number;
  readonly backoff?: BackoffPolicy;
  readonly timeoutMs?: number;
  readonly receiver?: string;
  readonly externalURL?: string;
}

export class WebhookError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

function retryAfter(header: string | null): number | undefined {
  if (header === null) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

export function createWebhookNotifier(options: WebhookNotifierOptions): Notifier {
  const maxAttempts = options.maxAttempts ?? 5;
  const backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000, factor: 2 };
  const timeoutMs = options.timeoutMs ?? 10_000;
  let closed = false;
  const waiting = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();

  const wait = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const entry = { timer: setTimeout(() => {
        waiting.delete(entry);
        resolve();
      }, ms), resolve };
      waiting.add(entry);
    });

  async function post(body: string): Promise<void> {
    let response: Response;
    try {
      response = await fetch(options.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...options.headers },
        body,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new WebhookError(`webhook ${options.url}: ${err instanceof Error ? err.message : String(err)}`, true);
    }
    await response.arrayBuffer().catch(() => undefined);
    if (response.ok) return;
    const retryable = response.status === 429 || response.status >= 500;
    throw new WebhookError(`webhook ${options.url} answered ${response.status}`, retryable, retryAfter(response.headers.get('retry-after')));
  }

  return {
    name: options.name ?? 'webhook',
    async notify(batch) {
      const body = JSON.stringify(alertmanagerPayload(batch, { ...(options.receiver !== undefined ? { receiver: options.receiver } : {}), ...(options.externalURL !== undefined ? { externalURL: options.externalURL } : {}) }));
      for (let attempt = 0; ; attempt++) {
        try {
          await post(body);
          return;
        } catch (err) {
          const e = err as WebhookError;
          if (!e.retryable || attempt + 1 >= maxAttempts || closed) throw e;
          await wait(Math.min(backoff.maxMs, Math.max(e.retryAfterMs ?? 0, backoffDelay(attempt, backoff))));
        }
      }
    },
    async close() {
      closed = true;
      for (const entry of waiting) {
        clearTimeout(entry.timer);
        entry.resolve();
      }
      waiting.clear();
    },
  };
}
