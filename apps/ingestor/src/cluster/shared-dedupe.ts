// Stage 3, dedupe (dedupe.ts), with the records in Redis so that every ingestor sees the seqs any
// other settled: the store a gateway's lease holder uses when `state.redisUrl` is set (types.ts).
// Same semantics as the SQLite store: a written seq replaces a refusal, a refusal replaces
// nothing, and per gateway only seqs above (highest seq - windowPerGateway) count.
//
// Layout (P = keyPrefix, G = gateway id, b = floor(seq / 128)):
//   P dedupe:seq:G:b    hash  field seq -> record: the content hash when written, or
//                             "\0" hash "\0" code "\0" reason when refused. 128 seqs a bucket keep
//                             the hash in Redis's compact listpack form (hash-max-listpack-entries
//                             is 512 built in, 128 in the sample redis.conf).
//   P dedupe:buckets:G  zset  the buckets G has (score and member b): pruning finds whole buckets
//                             below the window without walking empty ones (a seq jump is cheap).
//   P dedupe:max        hash  G -> highest seq recorded.
//   P dedupe:stats      hash  held, pruned: seqs held now and dropped by the window, all gateways.
//   P fleet:count:written / P fleet:count:rejected  hashes G -> seqs (fleet-accounting.ts),
//                             counted in the same script.
// The record script works on keys it derives from the gateway ids (it cannot list the buckets it
// will prune beforehand), so this needs one Redis (with replicas), not Redis Cluster.
//
// Operations: prefetch of a batch is one EVALSHA (an HGET and one HMGET per bucket the seqs fall
// in, 1-2 for a contiguous batch); record of a confirmed chunk is one EVALSHA for all its gateways
// (per seq one HSETNX, an HGET more when the seq was recorded before; per gateway and bucket a
// ZADD; pruning a whole bucket is an HLEN and a DEL). Nothing else goes to Redis per reading.
//
// Measured (Redis 7.0, one EPYC core, batches of 100-500): about 29 bytes of Redis memory a held
// seq, and 135,000-150,000 readings (prefetch and record) per second of Redis CPU.
//
// Pruning is by whole bucket, in the record script: up to 127 seqs below the window stay until
// their bucket passes, and lookup() treats them as unseen, as the SQLite store does.
//
// Order: record scripts of one connection run in the order they were made, and a prefetch made
// after a record() is answered after it. A record Redis refuses is sent again until it is taken
// (createRecordSender), so it may land after later ones: the merge above does not depend on order
// (but for a seq written twice with different content, where the last to arrive stays).
//
// The store does not own the Redis client it is given: close() leaves it open (the ingestor
// quits its connections after every store flushed and closed).
import type { ErrorCode } from '@ferry/protocol';
import type { Logger } from '@ferry/runtime';
import type { DedupeCounts, DedupeEntry, SeenRecord } from '../dedupe.js';
import { windowFloor } from '../dedupe.js';
import { fleetCountKeys } from './fleet-accounting.js';
import { defineScript } from './redis.js';
import { trimCaches } from './cache-bounds.js';
import type { RedisClient, ScriptCall } from './redis.js';
import type { SharedDedupeStore } from './types.js';

/** Seqs per bucket hash; a power of two, so seq / 128 is exact in Lua's doubles too. Never change it for live data. */
export const SEQS_PER_BUCKET = 128;

export interface SharedDedupeStoreOptions {
  /** A connection from connectRedis(); the store uses it but does not own it (close() does not quit it). */
  readonly redis: RedisClient;
  /** `state.keyPrefix`, e.g. 'ferry:'. */
  readonly keyPrefix: string;
  readonly windowPerGateway: number;
  readonly logger: Logger;
  /**
   * Seqs cached per gateway at most (the most recently loaded kept); default 16,384. Must exceed a
   * batch. Past records need no cache: a prefetch sent after a record() is answered after it.
   */
  readonly cachePerGateway?: number;
  /** Seqs cached in all at most (about 150 bytes each); past it the least recently used gateways are dropped. Default 262,144. */
  readonly cacheEntries?: number;
}

/** The keys of the layout above. */
export function dedupeKeys(keyPrefix: string): { bucket(gatewayId: string, bucket: number): string; buckets(gatewayId: string): string; readonly max: string; readonly stats: string } {
  return {
    bucket: (gatewayId, bucket) => `${keyPrefix}dedupe:seq:${gatewayId}:${bucket}`,
    buckets: (gatewayId) => `${keyPrefix}dedupe:buckets:${gatewayId}`,
    max: `${keyPrefix}dedupe:max`,
    stats: `${keyPrefix}dedupe:stats`,
  };
}

const REFUSED = '\u0000';

/** Pure: a record as stored in its bucket. */
export function encodeSeen(record: SeenRecord): string {
  return record.outcome === 'written' ? record.hash : `${REFUSED}${record.hash}${REFUSED}${record.code}${REFUSED}${record.reason}`;
}

/** Pure: the record a bucket field holds. */
export function decodeSeen(stored: string): SeenRecord {
  if (!stored.startsWith(REFUSED)) return { hash: stored, outcome: 'written' };
  const codeAt = stored.indexOf(REFUSED, 1);
  const reasonAt = codeAt < 0 ? -1 : stored.indexOf(REFUSED, codeAt + 1);
  if (reasonAt < 0) return { hash: stored.slice(1), outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason: '' };
  return { hash: stored.slice(1, codeAt), outcome: 'rejected', code: stored.slice(codeAt + 1, reasonAt) as ErrorCode, reason: stored.slice(reasonAt + 1) };
}

// KEYS[1] the max hash, KEYS[2..] bucket hashes; ARGV[1] the gateway, then per bucket in KEYS
// order: how many seqs, the seqs. Returns the gateway's highest seq, then each seq's record (nil: none).
const PREFETCH_LUA = `
local out = { redis.call('HGET', KEYS[1], ARGV[1]) }
local a = 2
for k = 2, #KEYS do
  local n = tonumber(ARGV[a])
  local vals = redis.call('HMGET', KEYS[k], unpack(ARGV, a + 1, a + n))
  for j = 1, n do out[#out + 1] = vals[j] end
  a = a + n + 1
end
return out
`;

// The rider of a record script call (RecordRider): from ARGV[last + 1], the member id, then how
// many series saves and per save (gateway, series key, version, state), then how many points and
// per point (gateway, point key, version, point). A gateway whose lease another member holds is
// fenced off: that member loaded the gateway's windows when it took it over and moves them now,
// so a save from here (a chunk confirmed after this member lost the lease) would overwrite theirs.
// A series is kept at a newer version only: a refused call sent again later (createRecordSender)
// must not put back an older state. A point is kept at its window's newest revision.
const RIDER_LUA = `
local r = last + 1
if r <= #ARGV then
  local member = ARGV[r]
  local mayWrite = {}
  local function writable(gw)
    local ok = mayWrite[gw]
    if ok == nil then
      local holder = redis.call('GET', p .. 'lease:' .. gw)
      ok = (not holder) or holder == member
      mayWrite[gw] = ok
    end
    return ok
  end
  local newer = function(old, version)
    return (not old) or tonumber(string.match(old, '^%d+')) < version
  end
  local n = tonumber(ARGV[r + 1])
  r = r + 2
  for j = 1, n do
    local gw, field, version = ARGV[r], ARGV[r + 1], ARGV[r + 2]
    if writable(gw) then
      local key = p .. 'rollup:series:' .. gw
      if newer(redis.call('HGET', key, field), tonumber(version)) then redis.call('HSET', key, field, version .. ' ' .. ARGV[r + 3]) end
    else
      fenced = fenced + 1
    end
    r = r + 4
  end
  n = tonumber(ARGV[r])
  r = r + 1
  for j = 1, n do
    local gw, field, version = ARGV[r], ARGV[r + 1], ARGV[r + 2]
    if writable(gw) then
      local key = p .. 'rollup:outbox:' .. gw
      if newer(redis.call('HGET', key, field), tonumber(version) + 1) then redis.call('HSET', key, field, version .. ' ' .. ARGV[r + 3]) end
    else
      fenced = fenced + 1
    end
    r = r + 4
  end
end
`;

// ARGV: prefix, window, seqs per bucket, the fleet's written and rejected hashes, the index of the
// last ARGV of the records, then per gateway: id, how many seqs, then (seq, record) pairs. Numbers
// that may exceed 14 digits are kept as the strings they came in or printed with %d: Lua would
// print them in exponent form. After the records, a rider may follow (RIDER_LUA: the rollup
// windows and points of the same chunk, shared-rollups.ts), so they land in the same atomic step.
// Returns { held, pruned in all, pruned now, rider saves fenced off }.
const RECORD_LUA = `
local p = ARGV[1]
local window = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local fleetWritten, fleetRejected = ARGV[4], ARGV[5]
local last = tonumber(ARGV[6])
local maxKey = p .. 'dedupe:max'
local added, pruned = 0, 0
local i = 7
while i <= last do
  local gw = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  local base = p .. 'dedupe:seq:' .. gw .. ':'
  local index = p .. 'dedupe:buckets:' .. gw
  local oldMaxText = redis.call('HGET', maxKey, gw)
  local oldMax = tonumber(oldMaxText or '-1')
  local max, maxText = oldMax, oldMaxText
  for j = 0, n - 1 do
    local s = tonumber(ARGV[i + 2 * j])
    if s > max then max, maxText = s, ARGV[i + 2 * j] end
  end
  local floor = max - window
  local written, refused = 0, 0
  local lastBucket = nil
  for j = 0, n - 1 do
    local field = ARGV[i + 2 * j]
    local s = tonumber(field)
    local v = ARGV[i + 2 * j + 1]
    if s <= floor then
      pruned = pruned + 1
    else
      local b = string.format('%d', math.floor(s / per))
      local key = base .. b
      if b ~= lastBucket then
        redis.call('ZADD', index, b, b)
        lastBucket = b
      end
      if redis.call('HSETNX', key, field, v) == 1 then
        added = added + 1
        if string.byte(v, 1) == 0 then refused = refused + 1 else written = written + 1 end
      elseif string.byte(v, 1) ~= 0 then
        local old = redis.call('HGET', key, field)
        if old ~= v then
          redis.call('HSET', key, field, v)
          if string.byte(old, 1) == 0 then
            written = written + 1
            refused = refused - 1
          end
        end
      end
    end
  end
  i = i + 2 * n
  if max > oldMax then redis.call('HSET', maxKey, gw, maxText) end
  local whole = math.floor((floor + 1) / per) - 1
  if whole >= 0 then
    local top = string.format('%d', whole)
    local gone = redis.call('ZRANGEBYSCORE', index, '-inf', top)
    for _, b in ipairs(gone) do
      local key = base .. b
      local len = redis.call('HLEN', key)
      pruned = pruned + len
      added = added - len
      redis.call('DEL', key)
    end
    if #gone > 0 then redis.call('ZREMRANGEBYSCORE', index, '-inf', top) end
  end
  if written ~= 0 then redis.call('HINCRBY', fleetWritten, gw, written) end
  if refused ~= 0 then redis.call('HINCRBY', fleetRejected, gw, refused) end
end
local held = redis.call('HINCRBY', p .. 'dedupe:stats', 'held', added)
local total = redis.call('HINCRBY', p .. 'dedupe:stats', 'pruned', pruned)
local fenced = 0
` + RIDER_LUA + `
return { held, total, pruned, fenced }
`;

/** How long a refused record command waits before it is sent again: 250 ms doubling to 5 s. */
export function resendDelayMs(attempt: number): number {
  return Math.min(5_000, 250 * 2 ** Math.min(5, Math.max(0, attempt - 1)));
}

/**
 * The record commands of a store and what flush() knows of them. A command Redis refuses (an error
 * reply: out of memory, a read-only replica after a failover, a key of the wrong type) is sent
 * again after a pause until Redis takes it, since the seqs it holds must end up there; meanwhile
 * every flush() made after it rejects, so no ack waits on it forever and none goes out without
 * it. A lost connection is no refusal: the client sends the command again by itself.
 */
export interface RecordSender {
  /** Sends one record command now; `stored` gets Redis's answer once it took the command. */
  send(args: readonly (string | number)[], stored: (reply: unknown) => void): void;
  /** A read flush() waits for too, without failing on it (its answer updates counts). */
  track(read: Promise<unknown>, what: string): void;
  /** Resolves once every command sent so far is answered; rejects if one of them is refused and not yet taken on a resend. */
  flush(): Promise<void>;
  /** Stops sending refused commands again (they are logged as lost to Redis). */
  close(): void;
}

export function createRecordSender(options: { readonly script: ScriptCall; readonly logger: Logger; readonly what: string }): RecordSender {
  const { script, logger, what } = options;
  let sent = 0;
  /** First answers not in yet. */
  const unanswered = new Set<Promise<void>>();
  /** Commands refused and being sent again: id -> the latest refusal. */
  const refused = new Map<number, Error>();
  const timers = new Set<NodeJS.Timeout>();
  let open = true;

  function attempt(id: number, args: readonly (string | number)[], stored: (reply: unknown) => void, attempts: number): Promise<void> {
    return script([], args).then(
      (reply) => {
        refused.delete(id);
        if (attempts > 1) logger.info({ attempts }, `redis took ${what} it had refused`);
        try {
          stored(reply);
        } catch (err) {
          logger.error({ err }, `unexpected redis answer to ${what}`);
        }
      },
      (err: unknown) => {
        const error = err instanceof Error ? err : new Error(String(err));
        refused.set(id, error);
        if (attempts === 1 || attempts % 10 === 0) logger.error({ err: error.message, attempts }, `redis refused ${what}; sending them again, acks wait`);
        if (!open) return;
        const timer = setTimeout(() => {
          timers.delete(timer);
          void attempt(id, args, stored, attempts + 1);
        }, resendDelayMs(attempts));
        timer.unref();
        timers.add(timer);
      },
    );
  }

  function keep(answer: Promise<void>): void {
    unanswered.add(answer);
    void answer.finally(() => unanswered.delete(answer));
  }

  return {
    send(args, stored) {
      keep(attempt(++sent, args, stored, 1));
    },
    track(read, readWhat) {
      keep(read.then(
        () => undefined,
        (err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, readWhat),
      ));
    },
    async flush() {
      const upTo = sent;
      await Promise.all([...unanswered]);
      let count = 0;
      let latest: Error | undefined;
      for (const [id, err] of refused) {
        if (id > upTo) continue;
        count++;
        latest = err;
      }
      if (latest) throw new Error(`redis refused ${count} command(s) of ${what}, being sent again: ${latest.message}`, { cause: latest });
    },
    close() {
      if (!open) return;
      open = false;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      if (refused.size > 0) logger.error({ commands: refused.size }, `closed with ${what} redis refused: they are not in redis`);
    },
  };
}

interface Cached {
  readonly record: SeenRecord;
  /** Recorded by this process: what Redis answers a prefetch never replaces it (the answer may predate it). */
  readonly mine: boolean;
}

interface GatewayCache {
  /** In insertion order, oldest first; an update moves an entry to the end. */
  readonly entries: Map<number, Cached>;
  /** Highest seq known here, from this process's records and Redis's answers. */
  max: number;
  /** Prefetches under way: the cache is not dropped for the total bound meanwhile. */
  pending: number;
}

/**
 * What rides with a chunk's record script call (shared-rollups.ts): saved by the same script, so
 * in the same atomic step as the chunk's records. `args` as RIDER_LUA reads them.
 */
export interface RecordRider {
  readonly args: readonly (string | number)[];
  /** The rider is on the socket (in the tick of the record call): from now on Redis will have it. */
  readonly onSent?: () => void;
  /** Redis ran the call: `fenced` rider saves were skipped (their gateway's lease is another member's). */
  readonly answered?: (fenced: number) => void;
}

export interface RidingDedupeStore extends SharedDedupeStore {
  /**
   * Runs `fn` (which records the chunk's seqs) with `rider` added to the first record() call it
   * makes; if it makes none, the rider is sent in a call of its own after it. If `fn` throws
   * before its record() call, the rider is not sent.
   */
  ride<T>(rider: RecordRider, fn: () => T): T;
}

export function openSharedDedupeStore(options: SharedDedupeStoreOptions): RidingDedupeStore {
  const { redis, keyPrefix, windowPerGateway: window, logger } = options;
  const perGateway = options.cachePerGateway ?? 16_384;
  const totalBound = options.cacheEntries ?? 262_144;
  const keys = dedupeKeys(keyPrefix);
  const fleet = fleetCountKeys(keyPrefix);
  const prefetchScript = defineScript(redis, 'ferryDedupePrefetch', PREFETCH_LUA);
  const recordScript = defineScript(redis, 'ferryDedupeRecord', RECORD_LUA);

  /** Per gateway, least recently used first. */
  const caches = new Map<string, GatewayCache>();
  let cached = 0;
  let counts: DedupeCounts = { held: 0, pruned: 0 };
  let prunedUnreported = 0;
  const sender = createRecordSender({ script: recordScript, logger, what: 'dedupe records' });
  let open = true;
  /** The rider the next record() call takes (ride()). */
  let riding: (RecordRider & { sent(): void }) | undefined;

  // Counts from before this process: the first answer; any record answer after it updates them.
  let countsSeen = false;
  sender.track(
    redis.hmget(keys.stats, 'held', 'pruned').then(([held, pruned]) => {
      if (!countsSeen) counts = { held: Number(held ?? 0), pruned: Number(pruned ?? 0) };
    }),
    'could not read the dedupe counts from redis',
  );

  /** The gateway's cache, made the most recently used. */
  function cacheOf(gatewayId: string): GatewayCache {
    let cache = caches.get(gatewayId);
    if (cache) caches.delete(gatewayId);
    else cache = { entries: new Map(), max: -1, pending: 0 };
    caches.set(gatewayId, cache);
    return cache;
  }

  function put(cache: GatewayCache, seq: number, record: SeenRecord, mine: boolean): void {
    if (cache.entries.delete(seq)) cached--;
    cache.entries.set(seq, { record, mine });
    cached++;
  }

  /** Keeps the bounds (cache-bounds.ts). */
  function bound(current: GatewayCache): void {
    cached = trimCaches(caches, current, perGateway, totalBound, cached);
  }

  function onRecorded(reply: unknown): void {
    const [held, total, pruned] = reply as [number, number, number];
    countsSeen = true;
    counts = { held, pruned: total };
    prunedUnreported += pruned;
  }

  return {
    lookup(gatewayId, seq) {
      const cache = caches.get(gatewayId);
      if (!cache || seq <= windowFloor(cache.max, window)) return undefined;
      return cache.entries.get(seq)?.record;
    },

    record(entries: readonly DedupeEntry[]) {
      if (!open) throw new Error('the shared dedupe store is closed');
      const reported = prunedUnreported;
      prunedUnreported = 0;
      const rider = riding;
      if (entries.length === 0 && !rider) return reported;
      const byGateway = new Map<string, DedupeEntry[]>();
      for (const e of entries) {
        let list = byGateway.get(e.gatewayId);
        if (!list) byGateway.set(e.gatewayId, (list = []));
        list.push(e);
      }
      // ARGV[6], the index of the records' last ARGV, is filled in once they are all in.
      const args: (string | number)[] = [keyPrefix, window, SEQS_PER_BUCKET, fleet.written, fleet.rejected, 0];
      for (const [gatewayId, list] of byGateway) {
        const cache = cacheOf(gatewayId);
        args.push(gatewayId, list.length);
        for (const e of list) {
          // The same merge as the script's: a write replaces anything, a refusal only nothing.
          if (e.outcome === 'written') put(cache, e.seq, { hash: e.hash, outcome: 'written' }, true);
          else if (!cache.entries.has(e.seq)) put(cache, e.seq, { hash: e.hash, outcome: 'rejected', code: e.code, reason: e.reason }, true);
          if (e.seq > cache.max) cache.max = e.seq;
          args.push(e.seq, encodeSeen(e));
        }
        bound(cache);
      }
      args[5] = args.length;
      if (rider) {
        riding = undefined;
        for (const a of rider.args) args.push(a);
      }
      // On the socket in this tick (connectRedis: no auto-pipelining); a lost connection only delays it.
      sender.send(args, (reply) => {
        onRecorded(reply);
        rider?.answered?.(Number((reply as unknown[])[3] ?? 0));
      });
      rider?.sent();
      return reported;
    },

    ride(rider, fn) {
      if (riding) throw new Error('a record rider is already waiting for its record call');
      let sent = false;
      riding = {
        ...rider,
        sent: () => {
          sent = true;
          rider.onSent?.();
        },
      };
      try {
        const result = fn();
        // No record call made (nothing to record): the rider goes in a call of its own.
        if (!sent) this.record([]);
        return result;
      } finally {
        riding = undefined;
      }
    },

    async prefetch(gatewayId, seqs) {
      if (!open || seqs.length === 0) return;
      const cache = cacheOf(gatewayId);
      const byBucket = new Map<number, number[]>();
      for (const seq of new Set(seqs)) {
        const bucket = Math.floor(seq / SEQS_PER_BUCKET);
        let list = byBucket.get(bucket);
        if (!list) byBucket.set(bucket, (list = []));
        list.push(seq);
      }
      const commandKeys: string[] = [keys.max];
      const args: (string | number)[] = [gatewayId];
      for (const [bucket, list] of byBucket) {
        commandKeys.push(keys.bucket(gatewayId, bucket));
        args.push(list.length, ...list);
      }
      cache.pending++;
      let reply: (string | null)[];
      try {
        reply = (await prefetchScript(commandKeys, args)) as (string | null)[];
      } finally {
        cache.pending--;
      }
      // Evicted meanwhile (the lease went elsewhere): the answer is for a cache no longer used.
      if (!open || caches.get(gatewayId) !== cache) return;
      const max = reply[0];
      if (max !== null && max !== undefined) cache.max = Math.max(cache.max, Number(max));
      let at = 1;
      for (const list of byBucket.values()) {
        for (const seq of list) {
          const stored = reply[at++];
          if (stored === null || stored === undefined) continue;
          if (cache.entries.get(seq)?.mine) continue;
          put(cache, seq, decodeSeen(stored), false);
        }
      }
      bound(cache);
    },

    flush: () => sender.flush(),

    evict(gatewayId) {
      const cache = caches.get(gatewayId);
      if (!cache) return;
      caches.delete(gatewayId);
      cached -= cache.entries.size;
    },

    counts() {
      return counts;
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
