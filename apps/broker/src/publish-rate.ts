// Per-client publish rate: a token bucket per client id. Pure apart from the injected clock, so
// tests drive it with a ManualClock.
import type { Clock } from '@ferry/runtime';

export interface PublishRateLimit {
  /** Messages per second a client may sustain. */
  readonly perSecond: number;
  /** Messages a client may send at once after being idle. */
  readonly burst: number;
}

export interface PublishRate {
  /** Takes one token for this client; false when its bucket is empty. */
  take(clientId: string): boolean;
  /** Drops a client's bucket (it disconnected). */
  forget(clientId: string): void;
}

interface Bucket {
  tokens: number;
  at: number;
}

export function createPublishRate(limit: PublishRateLimit, clock: Clock): PublishRate {
  const buckets = new Map<string, Bucket>();
  return {
    take(clientId) {
      const now = clock.now();
      const bucket = buckets.get(clientId) ?? { tokens: limit.burst, at: now };
      bucket.tokens = Math.min(limit.burst, bucket.tokens + ((now - bucket.at) / 1000) * limit.perSecond);
      bucket.at = now;
      buckets.set(clientId, bucket);
      if (bucket.tokens < 1) return false;
      bucket.tokens -= 1;
      return true;
    },
    forget(clientId) {
      buckets.delete(clientId);
    },
  };
}
