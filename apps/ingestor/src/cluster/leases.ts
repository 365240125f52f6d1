// Source leases: a source (a gateway id) is processed only by the ingestor holding its lease, a
// Redis key `<prefix>lease:<source>` naming the holder with a TTL of leaseMs. A holder that dies
// stops renewing and the key expires, so another ingestor takes the source over.
//
// holds() answers from a local record that errs on the safe side: a lease counts as held until
// (local time when the command was sent + leaseMs - a safety margin). Redis started the TTL no
// earlier than we sent the command, so our record ends before the key can expire and another
// ingestor can take it, even when Redis is slow or away. All commands go over one connection, so
// Redis runs them, and we see their answers, in the order we sent them.
import type { Clock, Logger } from '@ferry/runtime';
import { LogThrottle } from '@ferry/runtime';
import { FerryError } from '@ferry/protocol';
import { defineScript } from './redis.js';
import type { RedisClient } from './redis.js';

const ACQUIRE_LUA = `
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`;

const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

// Returns the 1-based indexes of the keys no longer held by ARGV[1] (expired, released by an
// operator, or taken by another member after we stopped renewing).
const RENEW_LUA = `
local lost = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    lost[#lost + 1] = i
  end
end
return lost
`;

/**
 * The part of a lease we never count on: it covers the time between a holds() check and the end
 * of the work it guards (an event-loop stall, a slow write), and timer lateness. A fifth of the
 * lease, so renewals every third of it keep the local record at least ~half a lease ahead.
 */
export function leaseSafetyMarginMs(leaseMs: number): number {
  return Math.floor(leaseMs / 5);
}

/** close() waits at most this long for the releases; unanswered ones expire with their TTL. */
const CLOSE_WAIT_MS = 2_000;

export interface SourceLeasesOptions {
  readonly redis: RedisClient;
  /** `state.keyPrefix`; a lease is `<prefix>lease:<source>`. */
  readonly keyPrefix: string;
  readonly memberId: string;
  readonly leaseMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
}

export interface SourceLeases {
  readonly memberId: string;
  /** Takes the lease if it is free or already ours (renewing it); false if another member holds it or Redis answered too late to use it. */
  acquire(source: string): Promise<boolean>;
  /** Whether this member may process the source now (local, conservative; see the module comment). */
  holds(source: string): boolean;
  /** Gives the lease up at once (only if Redis still names this member). */
  release(source: string): Promise<void>;
  /** The member Redis names as holder, if any. */
  owner(source: string): Promise<string | undefined>;
  /** The sources holds() is true for, sorted. */
  held(): readonly string[];
  /** Called when a lease is lost (taken over, deleted, or not renewed in time); not for release() or close(). Returns an unsubscribe function. */
  onLost(listener: (source: string) => void): () => void;
  /** Stops renewing and releases every lease held (best effort, bounded wait). */
  close(): Promise<void>;
}

export function leaseKey(keyPrefix: string, source: string): string {
  // Source ids exclude / # + and control characters (they are MQTT topic levels); any other
  // character is fine in a Redis key, so the id is used as it is.
  return `${keyPrefix}lease:${source}`;
}

export function createSourceLeases(options: SourceLeasesOptions): SourceLeases {
  const { redis, keyPrefix, memberId, leaseMs, clock, logger } = options;
  const acquireScript = defineScript(redis, 'ferryLeaseAcquire', ACQUIRE_LUA);
  const releaseScript = defineScript(redis, 'ferryLeaseRelease', RELEASE_LUA);
  const renewScript = defineScript(redis, 'ferryLeaseRenew', RENEW_LUA);
  const localMs = leaseMs - leaseSafetyMarginMs(leaseMs);
  const renewEveryMs = Math.max(1, Math.floor(leaseMs / 3));

  /** Source → local time after which we no longer count on holding it. */
  const expiries = new Map<string, number>();
  /**
   * Every command gets a sequence number when sent. A release sent after an acquire or renewal
   * undoes it in Redis, so that answer must not (re)create the local record: remember the number
   * of each source's last release. One number per source ever released; sources are gateways.
   */
  let sequence = 0;
  const releasedAt = new Map<string, number>();
  const listeners = new Set<(source: string) => void>();
  const errors = new LogThrottle(clock, 10_000);
  const expiredLog = new LogThrottle(clock, 10_000);
  let renewing = false;
  let closed = false;
  let sweepTimer: NodeJS.Timeout | undefined;
  let sweepAt = Infinity;

  const releasedSince = (source: string, seq: number): boolean => (releasedAt.get(source) ?? -1) > seq;

  function lose(source: string): void {
    expiries.delete(source);
    for (const listener of listeners) {
      try {
        listener(source);
      } catch (err) {
        logger.error({ err: (err as Error).message, source }, 'lease lost listener threw');
      }
    }
  }

  /** Drops the records whose local expiry passed: Redis did not confirm a renewal in time. */
  function sweep(): void {
    const now = clock.now();
    const expired = [...expiries].filter(([, at]) => at <= now).map(([source]) => source);
    if (expired.length > 0) {
      const verdict = expiredLog.hit();
      if (verdict.log) logger.warn({ memberId, sources: expired.length, suppressed: verdict.suppressed }, 'leases expired locally before Redis confirmed their renewal (Redis slow or unreachable); sources dropped');
      for (const source of expired) lose(source);
    }
    scheduleSweep();
  }

  // One timer, for the earliest local expiry. Renewals only push expiries later and releases
  // only remove them, so neither re-arms it (that would cost a scan per source): the timer then
  // fires early, finds nothing due, and is set again by one scan.
  function armSweep(at: number): void {
    clearTimeout(sweepTimer);
    sweepAt = at;
    sweepTimer = setTimeout(() => {
      sweepTimer = undefined;
      sweepAt = Infinity;
      sweep();
    }, Math.max(0, at - clock.now()) + 1);
    sweepTimer.unref();
  }

  function scheduleSweep(): void {
    let next = Infinity;
    for (const at of expiries.values()) next = Math.min(next, at);
    if (closed || next === Infinity) {
      clearTimeout(sweepTimer);
      sweepTimer = undefined;
      sweepAt = Infinity;
    } else if (next !== sweepAt || sweepTimer === undefined) {
      armSweep(next);
    }
  }

  function record(source: string, expiresAt: number): void {
    const at = Math.max(expiresAt, expiries.get(source) ?? expiresAt);
    expiries.set(source, at);
    if (!closed && at < sweepAt) armSweep(at);
  }

  async function renew(): Promise<void> {
    sweep();
    if (closed || renewing || expiries.size === 0) return;
    // One renewal at a time: while Redis is away it waits in the offline queue, and a pile of
    // them behind it would only renew the same keys again.
    renewing = true;
    const sources = [...expiries.keys()];
    const seq = ++sequence;
    const sentAt = clock.now();
    let reply: unknown;
    try {
      reply = await renewScript(
        sources.map((s) => leaseKey(keyPrefix, s)),
        [memberId, leaseMs],
      );
    } catch (err) {
      const verdict = errors.hit();
      if (verdict.log) logger.warn({ err: (err as Error).message, memberId, suppressed: verdict.suppressed }, 'lease renewal failed; leases lapse locally unless a later renewal succeeds');
      return;
    } finally {
      renewing = false;
    }
    if (closed) return;
    errors.reset();
    // An answer later than a local expiry must not revive that lease: drop those first.
    sweep();
    const lostIndexes = new Set(Array.isArray(reply) ? reply.map((i) => Number(i) - 1) : []);
    const lost: string[] = [];
    sources.forEach((source, index) => {
      if (!expiries.has(source) || releasedSince(source, seq)) return;
      if (lostIndexes.has(index)) lost.push(source);
      else record(source, sentAt + localMs);
    });
    if (lost.length > 0) {
      // One line however many: a flushed or replaced Redis loses every lease at once.
      logger.warn({ memberId, lost: lost.length, sources: lost.slice(0, 10) }, 'leases lost: Redis no longer names this member');
      for (const source of lost) lose(source);
    }
    scheduleSweep();
  }

  const renewTimer = setInterval(() => void renew(), renewEveryMs);
  renewTimer.unref();

  function assertOpen(what: string): void {
    if (closed) throw new FerryError('FERRY_ERR_NOT_READY', `source leases of ${memberId} are closed; cannot ${what}`, { memberId });
  }

  async function sendRelease(source: string): Promise<void> {
    releasedAt.set(source, ++sequence);
    await releaseScript([leaseKey(keyPrefix, source)], [memberId]);
  }

  return {
    memberId,

    async acquire(source) {
      assertOpen(`acquire ${source}`);
      const seq = ++sequence;
      const sentAt = clock.now();
      const reply = await acquireScript([leaseKey(keyPrefix, source)], [memberId, leaseMs]);
      if (closed) {
        // Taken while closing: hand it back rather than sit on it until the TTL ends.
        if (reply === 1) sendRelease(source).catch(() => undefined);
        return false;
      }
      if (releasedSince(source, seq)) return false;
      if (reply !== 1) {
        // Someone else holds it now: if we thought we did, that is a loss.
        if (expiries.has(source)) lose(source);
        return false;
      }
      const expiresAt = sentAt + localMs;
      if (expiresAt <= clock.now()) return false; // answered too late to count on; the key lapses by its TTL
      record(source, expiresAt);
      return true;
    },

    holds(source) {
      const at = expiries.get(source);
      return at !== undefined && clock.now() < at;
    },

    async release(source) {
      if (closed) return;
      // Forgotten before the command is sent: from now on we do not count on it.
      expiries.delete(source);
      await sendRelease(source);
    },

    async owner(source) {
      const holder = await redis.get(leaseKey(keyPrefix, source));
      return holder ?? undefined;
    },

    held() {
      const now = clock.now();
      return [...expiries]
        .filter(([, at]) => now < at)
        .map(([source]) => source)
        .sort();
    },

    onLost(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    async close() {
      if (closed) return;
      closed = true;
      clearInterval(renewTimer);
      clearTimeout(sweepTimer);
      listeners.clear();
      const sources = [...expiries.keys()];
      expiries.clear();
      const released = Promise.allSettled(sources.map((s) => sendRelease(s))).then(() => true);
      let timeout: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<false>((resolve) => {
        timeout = setTimeout(() => resolve(false), CLOSE_WAIT_MS);
      });
      const done = await Promise.race([released, gaveUp]);
      clearTimeout(timeout);
      if (!done) logger.warn({ memberId, sources: sources.length, waitedMs: CLOSE_WAIT_MS }, 'Redis did not confirm the lease releases; they lapse by their TTL');
    },
  };
}
