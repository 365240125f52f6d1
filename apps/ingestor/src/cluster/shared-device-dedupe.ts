// Stage 3b, device dedupe (device-dedupe.ts), with the identities in Redis so that a device's
// republish is caught whichever ingestor takes it: the store the ingestors use when
// `state.redisUrl` is set (types.ts). Same semantics as the SQLite store: lookup(identity) gives
// the hash recorded under the identity's key (scope, device, key), record() is idempotent, and an
// identity is forgotten windowMs of ingest time after it was last recorded.
//
// Layout (P = keyPrefix):
//   P device:<scope>/<deviceId>:<key>  string, the content hash, expiring at record time + windowMs
//                                      (PXAT: the `now` record() is given, moved into Redis's
//                                      clock by the clocks' difference at the call): the window prunes
//                                      itself, nothing ever scans. A key never contains ':', so the
//                                      last ':' ends the device part.
//   P device:held                      hash  slot -> identities newly recorded in that slot of
//                                      windowMs / 16 of ingest time; the record script drops slots
//                                      that left the window. Their sum is how many identities the
//                                      window holds (`held` of a store just opened reads it).
// maxEntries in Redis is approximate: when the slots say the window holds more than maxEntries,
// the script stores new identities for a window shortened in proportion (windowMs * maxEntries /
// held), so that at a steady rate about maxEntries stay held. Those identities are what the bound
// costs: record() returns how many were stored with a shortened window, and `held` says
// min(recorded in the window, maxEntries).
//
// Operations: prefetch of a batch's identities is one MGET; record of a confirmed chunk is one
// EVALSHA (an HGETALL of the 17 slot counters, a SET ... PXAT ... GET per identity, an HINCRBY and
// two PEXPIREATs). An identity takes about 200 bytes of Redis memory, its key included (measured
// with 10-character gateway and device ids).
//
// The store does not own the Redis client it is given: close() leaves it open.
import type { Logger } from '@ferry/runtime';
import type { DeviceIdentity } from '../device-dedupe.js';
import { trimCaches } from './cache-bounds.js';
import type { RedisClient } from './redis.js';
import { createRecordSender } from './shared-dedupe.js';
import { defineScript } from './redis.js';
import type { SharedDeviceDedupeStore } from './types.js';

export interface SharedDeviceDedupeStoreOptions {
  /** A connection from connectRedis(); the store uses it but does not own it (close() does not quit it). */
  readonly redis: RedisClient;
  readonly keyPrefix: string;
  readonly windowMs: number;
  /** Approximate in Redis (see above). */
  readonly maxEntries: number;
  readonly logger: Logger;
  /** Identities cached per scope (gateway) at most; default 16,384. Must exceed a batch. */
  readonly cachePerScope?: number;
  /** Identities cached in all at most; past it the least recently used scopes are dropped. Default 262,144. */
  readonly cacheEntries?: number;
}

/** The slots the window is counted in. */
const SLOTS_PER_WINDOW = 16;

/** The keys of the layout above. */
export function deviceKeys(keyPrefix: string): { identity(identity: DeviceIdentity): string; readonly held: string } {
  return {
    identity: (identity) => `${keyPrefix}device:${identity.device}:${identity.key}`,
    held: `${keyPrefix}device:held`,
  };
}

// ARGV: the held hash, now, windowMs, maxEntries, slot length, the caller's wall clock when it sent
// this, then (key, hash) pairs. Expiries are absolute in Redis's clock: the caller's record time is
// moved by the difference of the two clocks, so an ingestor whose clock is off from Redis's (or a
// test running at a shifted date) still keeps an identity windowMs after it recorded it.

// Returns { identities recorded in the window (the live slots' sum), identities stored with a shortened window }.
const RECORD_LUA = `
local heldKey = ARGV[1]
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local maxEntries = tonumber(ARGV[4])
local slotMs = tonumber(ARGV[5])
local t = redis.call('TIME')
local offset = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[6])
local slot = math.floor(now / slotMs)
local first = slot - math.ceil(window / slotMs)
local held = 0
local counts = redis.call('HGETALL', heldKey)
for k = 1, #counts, 2 do
  local s = tonumber(counts[k])
  if s < first then redis.call('HDEL', heldKey, counts[k]) elseif s <= slot then held = held + tonumber(counts[k + 1]) end
end
local ttl = window
if held > maxEntries then ttl = math.max(1, math.floor(window * maxEntries / held)) end
local at = string.format('%d', now + ttl + offset)
local added = 0
for i = 7, #ARGV, 2 do
  if not redis.call('SET', ARGV[i], ARGV[i + 1], 'PXAT', at, 'GET') then added = added + 1 end
end
if added > 0 then
  redis.call('HINCRBY', heldKey, string.format('%d', slot), added)
  redis.call('PEXPIREAT', heldKey, string.format('%d', (slot + 1) * slotMs + window + offset), 'GT')
  redis.call('PEXPIREAT', heldKey, string.format('%d', (slot + 1) * slotMs + window + offset), 'NX')
end
local shortened = 0
if ttl < window then shortened = (#ARGV - 6) / 2 end
return { held + added, shortened }
`;

interface Cached {
  readonly hash: string;
  /** Ingest time of this process's record; Infinity for what a prefetch loaded (Redis expires those). */
  readonly at: number;
  /** Recorded by this process: what Redis answers a prefetch never replaces it (the answer may predate it). */
  readonly mine: boolean;
}

interface ScopeCache {
  /** By identity slot, in insertion order, oldest first; an update moves an entry to the end. */
  readonly entries: Map<string, Cached>;
  /** Prefetches under way: the cache is not dropped for the total bound meanwhile. */
  pending: number;
}

export function openSharedDeviceDedupeStore(options: SharedDeviceDedupeStoreOptions): SharedDeviceDedupeStore {
  const { redis, windowMs, maxEntries, logger } = options;
  const perScope = options.cachePerScope ?? 16_384;
  const totalBound = options.cacheEntries ?? 262_144;
  const keys = deviceKeys(options.keyPrefix);
  const slotMs = Math.max(1, Math.ceil(windowMs / SLOTS_PER_WINDOW));
  const recordScript = defineScript(redis, 'ferryDeviceDedupeRecord', RECORD_LUA);

  /** Per scope, least recently used first. */
  const caches = new Map<string, ScopeCache>();
  let cached = 0;
  let held = 0;
  let shortenedUnreported = 0;
  /** The latest `now` record() was given: this process's own records older than the window are not answered. */
  let latest = -Infinity;
  const sender = createRecordSender({ script: recordScript, logger, what: 'device identities' });
  let open = true;

  // What the window holds from before this process (the sum of every slot kept: approximate); a record answer updates it.
  let heldSeen = false;
  sender.track(
    redis.hvals(keys.held).then((counts) => {
      if (!heldSeen) held = Math.min(counts.reduce((sum, n) => sum + Number(n), 0), maxEntries);
    }),
    'could not read the device identities held from redis',
  );

  function cacheOf(scope: string): ScopeCache {
    let cache = caches.get(scope);
    if (cache) caches.delete(scope);
    else cache = { entries: new Map(), pending: 0 };
    caches.set(scope, cache);
    return cache;
  }

  function put(cache: ScopeCache, slot: string, entry: Cached): void {
    if (cache.entries.delete(slot)) cached--;
    cache.entries.set(slot, entry);
    cached++;
  }

  /** Keeps the bounds (cache-bounds.ts). */
  function bound(current: ScopeCache): void {
    cached = trimCaches(caches, current, perScope, totalBound, cached);
  }

  function onRecorded(reply: unknown): void {
    const [inWindow, shortened] = reply as [number, number];
    heldSeen = true;
    held = Math.min(inWindow, maxEntries);
    shortenedUnreported += shortened;
  }

  return {
    lookup(identity) {
      const entry = caches.get(identity.scope)?.entries.get(identity.slot);
      if (!entry || entry.at < latest - windowMs) return undefined;
      return entry.hash;
    },

    record(identities, now) {
      if (!open) throw new Error('the shared device dedupe store is closed');
      const reported = shortenedUnreported;
      shortenedUnreported = 0;
      if (identities.length === 0) return reported;
      if (now > latest) latest = now;
      const args: (string | number)[] = [keys.held, now, windowMs, maxEntries, slotMs, Date.now()];
      let cache: ScopeCache | undefined;
      for (const identity of identities) {
        if (!cache || caches.get(identity.scope) !== cache) {
          if (cache) bound(cache);
          cache = cacheOf(identity.scope);
        }
        put(cache, identity.slot, { hash: identity.hash, at: now, mine: true });
        args.push(keys.identity(identity), identity.hash);
      }
      if (cache) bound(cache);
      // On the socket in this tick (connectRedis: no auto-pipelining); a lost connection only delays it.
      sender.send(args, onRecorded);
      return reported;
    },

    async prefetch(identities) {
      if (!open || identities.length === 0) return;
      const scopes = new Map<string, ScopeCache>();
      for (const identity of identities) if (!scopes.has(identity.scope)) scopes.set(identity.scope, cacheOf(identity.scope));
      for (const cache of scopes.values()) cache.pending++;
      let reply: (string | null)[];
      try {
        reply = await redis.mget(identities.map((identity) => keys.identity(identity)));
      } finally {
        for (const cache of scopes.values()) cache.pending--;
      }
      if (!open) return;
      identities.forEach((identity, index) => {
        const hash = reply[index];
        if (hash === null || hash === undefined) return;
        const cache = scopes.get(identity.scope)!;
        // Evicted meanwhile (the lease went elsewhere): the answer is for a cache no longer used.
        if (caches.get(identity.scope) !== cache) return;
        if (cache.entries.get(identity.slot)?.mine) return;
        put(cache, identity.slot, { hash, at: Infinity, mine: false });
      });
      for (const cache of scopes.values()) bound(cache);
    },

    flush: () => sender.flush(),

    evict(scope) {
      const cache = caches.get(scope);
      if (!cache) return;
      caches.delete(scope);
      cached -= cache.entries.size;
    },

    get held() {
      return held;
    },

    close() {
      if (!open) return;
      open = false;
      sender.close();
      caches.clear();
      cached = 0;
    },
  };
}
