// The rollup state store (rollup-store.ts) in Redis, when several ingestors share their state: the
// open windows of a gateway's series live with the holder of the gateway's lease, are loaded from
// Redis when it takes the gateway over (a new tenure, cluster-state.ts), before its first batch is
// judged, and are dropped when the lease goes.
//
// Atomicity: a chunk's window states and completed points ride on the chunk's record script call
// (shared-dedupe.ts, RecordRider / RIDER_LUA): one EVALSHA saves the seqs, moves the fleet counts
// and saves the windows and points, so after a kill -9 a resend is either a duplicate that never
// reaches the windows again or new and counted once.
//
// Layout (P = keyPrefix, G = gateway id = the gateway tag of its series):
//   P rollup:series:G  hash  series key -> "<version> <TumblingWindows state JSON>"; a save is
//                            kept over an older version only (a refused call sent again later
//                            must not put an older state back)
//   P rollup:outbox:G  hash  point key -> "<revision> <point JSON>": completed points not yet
//                            confirmed by the database; whoever holds G next writes what is left
//                            (the same point: measurement, tags and timestamp; an overwrite)
// A save for a gateway whose lease another member holds is fenced off in the script.
//
// Memory: the saved states of the gateways held, at most maxSeries in all (default 200,000); past
// it the least recently used gateways with nothing in flight are dropped and load again with their
// next batch.
import type { Logger } from '@ferry/runtime';
import { gatewayTagOfKey, parsePoint, serializePoint } from '../rollup-store.js';
import type { RollupPointItem, RollupSave, RollupStateStore, RollupStoreListener, SavedSeries } from '../rollup-store.js';
import { defineScript } from './redis.js';
import type { RedisClient } from './redis.js';
import type { RidingDedupeStore } from './shared-dedupe.js';

export interface SharedRollupStore extends RollupStateStore {
  /**
   * Loads a gateway's saved windows and hands the points left in its outbox to the listener; a
   * no-op while they are loaded. Before the gateway's batches are judged.
   */
  load(gatewayTag: string): Promise<void>;
  /** Drops a gateway's windows (its lease went to another ingestor). */
  evict(gatewayTag: string): void;
  /** Rider saves the record script skipped because another member held the gateway. */
  fenced(): number;
  /** Resolves once the removals of confirmed points sent so far are answered (the saves: the dedupe store's flush()). */
  flush(): Promise<void>;
}

export interface SharedRollupStoreOptions {
  /** The connection of the dedupe store: the load, the saves and the confirmations go in one order. */
  readonly redis: RedisClient;
  readonly keyPrefix: string;
  readonly memberId: string;
  /** The saves ride on its record calls. */
  readonly dedupe: RidingDedupeStore;
  readonly logger: Logger;
  /** Whether a gateway has batches in flight here: its windows are never dropped for the bound then. */
  readonly busy?: (gatewayTag: string) => boolean;
  /**
   * Whether this member holds the gateway's lease (leases.ts). A gateway let go while quiet (mode
   * shared, or a member joined) has its windows dropped, so closeIdle never moves another's windows.
   */
  readonly leaseHeld?: (gatewayTag: string) => boolean;
  /** Saved series kept in memory at most. Default 200,000. */
  readonly maxSeries?: number;
}

/** The keys of the layout above. */
export function rollupKeys(keyPrefix: string): { series(gatewayTag: string): string; outbox(gatewayTag: string): string } {
  return {
    series: (gatewayTag) => `${keyPrefix}rollup:series:${gatewayTag}`,
    outbox: (gatewayTag) => `${keyPrefix}rollup:outbox:${gatewayTag}`,
  };
}

// ARGV: prefix, then per point (gateway, point key, revision): deleted when still at that revision.
const CONFIRM_LUA = `
for i = 2, #ARGV, 3 do
  local key = ARGV[1] .. 'rollup:outbox:' .. ARGV[i]
  local old = redis.call('HGET', key, ARGV[i + 1])
  if old and string.match(old, '^%d+') == ARGV[i + 2] then redis.call('HDEL', key, ARGV[i + 1]) end
end
return 0
`;

/** Pure: "<version> <text>" as stored. */
export function splitVersioned(stored: string): { version: number; text: string } | undefined {
  const at = stored.indexOf(' ');
  const version = Number(stored.slice(0, at));
  return at > 0 && Number.isSafeInteger(version) ? { version, text: stored.slice(at + 1) } : undefined;
}

interface GatewayCache {
  readonly series: Map<string, SavedSeries>;
}

export function openSharedRollupStore(options: SharedRollupStoreOptions): SharedRollupStore {
  const { redis, keyPrefix, memberId, dedupe, logger } = options;
  const maxSeries = options.maxSeries ?? 200_000;
  const keys = rollupKeys(keyPrefix);
  const confirmScript = defineScript(redis, 'ferryRollupConfirmed', CONFIRM_LUA);
  /** Per gateway held and loaded, least recently used first. */
  const caches = new Map<string, GatewayCache>();
  let cachedSeries = 0;
  const loading = new Map<string, Promise<void>>();
  /** Bumped by every evict(): a load begun before it answers for a tenure that is over. */
  const generations = new Map<string, number>();
  /** Points saved (or taken over) here and not yet confirmed: key -> revision. */
  const pending = new Map<string, number>();
  /** The rollup stage (rollup.ts); until it listens (no rollups configured) nothing is loaded. */
  let listener: RollupStoreListener | undefined;
  let fenced = 0;
  const removals = new Set<Promise<void>>();

  function touch(gatewayTag: string): GatewayCache | undefined {
    const cache = caches.get(gatewayTag);
    if (cache) {
      caches.delete(gatewayTag);
      caches.set(gatewayTag, cache);
    }
    return cache;
  }

  function drop(gatewayTag: string): void {
    const cache = caches.get(gatewayTag);
    if (!cache) return;
    caches.delete(gatewayTag);
    cachedSeries -= cache.series.size;
    listener?.evicted(gatewayTag);
  }

  /** Keeps the bound: least recently used gateways first, never those in `keep` nor one with batches in flight. */
  function bound(keep: ReadonlySet<string>): void {
    if (cachedSeries <= maxSeries) return;
    for (const gatewayTag of [...caches.keys()]) {
      if (cachedSeries <= maxSeries) return;
      if (keep.has(gatewayTag) || options.busy?.(gatewayTag) === true) continue;
      drop(gatewayTag);
    }
  }

  /** After the save left with its records: what Redis will hold is what this process answers from. */
  function apply(save: RollupSave): void {
    for (const s of save.series) {
      const cache = caches.get(s.gatewayTag);
      if (!cache) continue;
      if (!cache.series.has(s.key)) cachedSeries++;
      cache.series.set(s.key, s.saved);
    }
    for (const item of save.points) pending.set(item.key, item.version);
    bound(new Set(save.series.map((s) => s.gatewayTag)));
  }

  function riderArgs(save: RollupSave): (string | number)[] {
    const args: (string | number)[] = [memberId, save.series.length];
    for (const s of save.series) args.push(s.gatewayTag, s.key, s.saved.version, s.saved.state);
    args.push(save.points.length);
    for (const item of save.points) args.push(item.gatewayTag, item.key, item.version, serializePoint(item.point));
    return args;
  }

  async function loadNow(gatewayTag: string): Promise<void> {
    const generation = generations.get(gatewayTag) ?? 0;
    const answers = await redis.multi().hgetall(keys.series(gatewayTag)).hgetall(keys.outbox(gatewayTag)).exec();
    const failed = answers?.find(([err]) => err !== null)?.[0];
    if (!answers || failed) throw failed ?? new Error('redis discarded the rollup load');
    // Evicted meanwhile (the lease went elsewhere): the answer is for a tenure that is over.
    if ((generations.get(gatewayTag) ?? 0) !== generation || caches.has(gatewayTag)) return;
    // Gateways let go while quiet since: their windows are the next holder's.
    for (const other of [...caches.keys()]) {
      if (options.leaseHeld?.(other) === false && options.busy?.(other) !== true) drop(other);
    }
    const storedSeries = (answers[0]?.[1] ?? {}) as Record<string, string>;
    const storedPoints = (answers[1]?.[1] ?? {}) as Record<string, string>;
    const series = new Map<string, SavedSeries>();
    for (const [key, stored] of Object.entries(storedSeries)) {
      const saved = splitVersioned(stored);
      if (saved) series.set(key, { state: saved.text, version: saved.version });
      else logger.warn({ series: key }, 'a saved rollup series in redis is not in this release\'s form; the series starts afresh');
    }
    caches.set(gatewayTag, { series });
    cachedSeries += series.size;
    const left: RollupPointItem[] = [];
    for (const [key, stored] of Object.entries(storedPoints)) {
      const saved = splitVersioned(stored);
      // This process's own points are on their way already.
      if (!saved || (pending.get(key) ?? -1) >= saved.version) continue;
      try {
        left.push({ key, version: saved.version, gatewayTag: gatewayTagOfKey(key), point: parsePoint(saved.text) });
        pending.set(key, saved.version);
      } catch (err) {
        logger.warn({ err, point: key }, 'a rollup point left in redis cannot be read; skipped');
      }
    }
    bound(new Set([gatewayTag]));
    listener?.leftover(left);
  }

  return {
    series(key, gatewayTag) {
      return caches.get(gatewayTag)?.series.get(key);
    },

    holds(gatewayTag) {
      if (!touch(gatewayTag)) return false;
      // In flight: the chunk was taken under the lease; if another member took the gateway since,
      // the record script fences the save off (a slow renewal alone must not lose the chunk's windows).
      if (options.leaseHeld === undefined || options.leaseHeld(gatewayTag) || options.busy?.(gatewayTag) === true) return true;
      drop(gatewayTag);
      return false;
    },

    commit(build, alsoRecord) {
      const save = build();
      if (save.series.length === 0 && save.points.length === 0) return alsoRecord();
      // The cache follows what left for Redis (onSent), not what returned: a record call that went
      // out cannot be taken back. (The pipeline's alsoRecord ends with that call; the shared intent
      // log's end() after it does not throw.)
      return dedupe.ride(
        {
          args: riderArgs(save),
          onSent: () => apply(save),
          answered: (skipped) => {
            if (skipped === 0) return;
            fenced += skipped;
            logger.warn({ saves: skipped }, 'rollup windows not saved: another ingestor holds their gateway now (it took it over while this chunk was written)');
          },
        },
        alsoRecord,
      );
    },

    claimOnce() {
      // Direct devices are not taken with state.redisUrl (config.ts): their gateway tag is never held here.
      throw new Error('direct readings are not rolled up through the shared state');
    },

    confirmed(items) {
      if (items.length === 0) return;
      const args: (string | number)[] = [keyPrefix];
      for (const item of items) {
        if (pending.get(item.key) === item.version) pending.delete(item.key);
        args.push(item.gatewayTag, item.key, item.version);
      }
      // After the save on the same connection; lost, the point is only written again by the next holder.
      const removing = confirmScript([], args).then(
        () => undefined,
        (err: unknown) => logger.warn({ err }, 'could not remove confirmed rollup points from redis; the next holder writes them again'),
      );
      removals.add(removing);
      void removing.finally(() => removals.delete(removing));
    },

    leftover: () => [],

    listen(next) {
      listener = next;
    },

    outboxSize: () => pending.size,

    load(gatewayTag) {
      if (!listener || touch(gatewayTag)) return Promise.resolve();
      let loadingNow = loading.get(gatewayTag);
      if (!loadingNow) {
        loadingNow = loadNow(gatewayTag).finally(() => {
          if (loading.get(gatewayTag) === loadingNow) loading.delete(gatewayTag);
        });
        loading.set(gatewayTag, loadingNow);
      }
      return loadingNow;
    },

    evict(gatewayTag) {
      generations.set(gatewayTag, (generations.get(gatewayTag) ?? 0) + 1);
      loading.delete(gatewayTag);
      drop(gatewayTag);
    },

    fenced: () => fenced,

    async flush() {
      await Promise.all([...removals]);
    },
  };
}
