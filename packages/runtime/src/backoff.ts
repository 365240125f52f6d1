// Exponential backoff with full jitter, as a pure function of the attempt number.

export interface BackoffPolicy {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
}

export const defaultBackoff: BackoffPolicy = { initialMs: 500, maxMs: 30_000, factor: 2 };

/** Delay before retry `attempt` (0-based); `random` in [0, 1) is injected for tests. */
export function backoffDelay(attempt: number, policy: BackoffPolicy = defaultBackoff, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.initialMs * policy.factor ** Math.max(0, attempt));
  // Half fixed, half jitter: never zero, never a thundering herd.
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
