// Polling with a deadline: how tests and the harness wait for a condition they cannot
// subscribe to (a server becoming ready, a row appearing) without sleeping blindly.

export interface WaitOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** Pause between probes (default 50 ms). */
  intervalMs?: number;
  /** What is being waited for; the timeout error names it. */
  what?: string;
}

type Falsy = undefined | null | false;

/**
 * Calls `probe` until it returns a truthy value and resolves with that value. A probe
 * that throws counts as "not yet"; on the deadline the error names `what` and carries
 * the last probe error, which is usually the real reason (connection refused, 404...).
 */
export async function waitFor<T>(
  probe: () => T | Falsy | Promise<T | Falsy>,
  opts: WaitOptions = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 50;
  const what = opts.what ?? 'a condition';
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let attempts = 0;
  for (;;) {
    attempts += 1;
    try {
      const value = await probe();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await pause(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
  const reason = lastError === undefined ? '' : `; last probe error: ${describe(lastError)}`;
  throw new Error(`timed out after ${timeoutMs} ms (${attempts} probes) waiting for ${what}${reason}`, {
    cause: lastError,
  });
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const cause = err.cause instanceof Error ? ` (cause: ${err.cause.message})` : '';
    return `${code !== undefined && !err.message.includes(code) ? `${code} ` : ''}${err.message}${cause}`;
  }
  return String(err);
}
