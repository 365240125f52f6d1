// Which ingestors are alive: each one heartbeats into one sorted set in Redis, scored with the
// Redis server's time at which it counts as dead (three heartbeats on), so the members' own clocks
// never have to agree. The live list feeds rendezvous.ts, which says who should hold each source;
// the leases (leases.ts), not this list, are what keep two ingestors off one source.
import type { Clock, Logger } from '@ferry/runtime';
import { LogThrottle } from '@ferry/runtime';
import { FerryError } from '@ferry/protocol';
import { defineScript } from './redis.js';
import type { RedisClient } from './redis.js';

// TIME first, then writes: fine since Redis 5, which replicates a script's effects, not the script.
const HEARTBEAT_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
`;

/** A member that missed this many heartbeats is taken for dead. */
export const MISSED_HEARTBEATS = 3;
/** close() waits at most this long for Redis to drop this member (the ZREM stays queued after). */
const CLOSE_WAIT_MS = 2_000;

export interface MembershipOptions {
  readonly redis: RedisClient;
  /** `state.keyPrefix`; the set is `<prefix>members`. */
  readonly keyPrefix: string;
  /** Unique per process (a restarted ingestor is a new member). */
  readonly memberId: string;
  readonly heartbeatMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
}

export interface Membership {
  readonly id: string;
  /** The live members (this one included) as of the last heartbeat answered, sorted. */
  live(): readonly string[];
  /** Resolves once the first heartbeat was answered; rejects if closed before. */
  ready(): Promise<void>;
  /** Called with the new sorted list whenever it changes; returns an unsubscribe function. */
  onChange(listener: (members: readonly string[]) => void): () => void;
  /**
   * Leaves the set while this member cannot take batches (its broker connection is down), so the
   * others take its gateways over; heartbeats stop until resume().
   */
  pause(): void;
  resume(): void;
  /** Stops heartbeating and removes this member at once, so the others take over without waiting for it to time out. */
  close(): Promise<void>;
}

export function membersKey(keyPrefix: string): string {
  return `${keyPrefix}members`;
}

export function createMembership(options: MembershipOptions): Membership {
  const { redis, memberId, heartbeatMs, clock, logger } = options;
  const key = membersKey(options.keyPrefix);
  const heartbeat = defineScript(redis, 'ferryMembersHeartbeat', HEARTBEAT_LUA);
  const listeners = new Set<(members: readonly string[]) => void>();
  const errors = new LogThrottle(clock, 10_000);

  let members: readonly string[] = [memberId];
  let closed = false;
  let paused = false;
  let inFlightSince: number | undefined;
  let stallLogged = false;
  let markReady!: () => void;
  let failReady!: (err: Error) => void;
  const readyPromise = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  // Nobody may ask for ready(); a close before the first heartbeat must not be an unhandled rejection.
  readyPromise.catch(() => undefined);

  function publish(next: readonly string[]): void {
    if (next.length === members.length && next.every((m, i) => m === members[i])) return;
    members = next;
    for (const listener of listeners) {
      try {
        listener(next);
      } catch (err) {
        logger.error({ err: (err as Error).message }, 'membership change listener threw');
      }
    }
  }

  async function beat(): Promise<void> {
    inFlightSince = clock.now();
    try {
      const reply = await heartbeat([key], [memberId, MISSED_HEARTBEATS * heartbeatMs]);
      if (closed || paused) return;
      const names = Array.isArray(reply) ? reply.filter((m): m is string => typeof m === 'string') : [];
      if (!names.includes(memberId)) names.push(memberId);
      if (stallLogged) logger.info({ memberId }, 'membership heartbeat answered again');
      stallLogged = false;
      errors.reset();
      publish(names.sort());
      markReady();
    } catch (err) {
      if (closed) return;
      const verdict = errors.hit();
      if (verdict.log) logger.warn({ err: (err as Error).message, memberId, suppressed: verdict.suppressed }, 'membership heartbeat failed; keeping the last known members');
    } finally {
      inFlightSince = undefined;
    }
  }

  function tick(): void {
    if (closed || paused) return;
    // With Redis away the heartbeat waits in ioredis' offline queue: never stack a second one
    // behind it, and say once that the member list is now only the last one known.
    if (inFlightSince !== undefined) {
      if (!stallLogged && clock.now() - inFlightSince >= MISSED_HEARTBEATS * heartbeatMs) {
        stallLogged = true;
        logger.warn({ memberId, waitingMs: clock.now() - inFlightSince }, 'membership heartbeat unanswered: Redis unreachable; keeping the last known members');
      }
      return;
    }
    void beat();
  }

  void beat();
  const timer = setInterval(tick, heartbeatMs);
  timer.unref();

  return {
    id: memberId,
    live: () => members,
    ready: () => readyPromise,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    pause() {
      if (paused || closed) return;
      paused = true;
      // After any heartbeat in flight on the same connection, so that one cannot undo it.
      redis.zrem(key, memberId).catch((err: Error) => logger.warn({ err: err.message, memberId }, 'could not leave the members while paused; the others drop this one when its heartbeats stop'));
    },
    resume() {
      if (!paused || closed) return;
      paused = false;
      if (inFlightSince === undefined) void beat();
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      listeners.clear();
      failReady(new FerryError('FERRY_ERR_NOT_READY', `membership ${memberId} closed before its first heartbeat`, { memberId }));
      // Sent after any heartbeat in flight on the same connection, so it cannot be undone by one.
      const removed = redis.zrem(key, memberId).then(
        () => true,
        (err: Error) => {
          logger.warn({ err: err.message, memberId }, 'could not remove this member from Redis; the others will drop it when its heartbeats stop');
          return true;
        },
      );
      let timeout: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<false>((resolve) => {
        timeout = setTimeout(() => resolve(false), CLOSE_WAIT_MS);
      });
      const done = await Promise.race([removed, gaveUp]);
      clearTimeout(timeout);
      if (!done) logger.warn({ memberId, waitedMs: CLOSE_WAIT_MS }, 'Redis did not confirm this member left; the others will drop it when its heartbeats stop');
    },
  };
}
