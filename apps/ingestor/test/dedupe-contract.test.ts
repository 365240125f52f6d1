// The gateway-seq dedupe contract against both stores (SQLite, and Redis shared by the ingestors),
// then what only the shared store does: two ingestors on one Redis, prefetch against local
// records, flush, a Redis outage, and the fleet's counts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import { waitFor } from '@ferry/testkit';
import { contentHash } from '../src/content-hash.js';
import { openDedupeStore } from '../src/dedupe.js';
import type { DedupeEntry } from '../src/dedupe.js';
import { fleetCounts } from '../src/cluster/fleet-accounting.js';
import type { RedisClient } from '../src/cluster/redis.js';
import { dedupeKeys, openSharedDedupeStore, SEQS_PER_BUCKET } from '../src/cluster/shared-dedupe.js';
import type { SharedDedupeStore } from '../src/cluster/types.js';
import { dedupeStoreContract } from './dedupe-contract.js';
import type { DedupeSubject } from './dedupe-contract.js';
import { useRedis } from './redis-env.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sqliteSubject(path: string, windowPerGateway: number): DedupeSubject {
  const store = openDedupeStore({ path, windowPerGateway });
  const close = async (): Promise<void> => store.close();
  return {
    store,
    prefetch: async () => undefined,
    settle: async () => undefined,
    reopen: async () => {
      await close();
      return sqliteSubject(path, windowPerGateway);
    },
    close,
  };
}

dedupeStoreContract({
  name: 'SQLite (one ingestor)',
  open: async ({ windowPerGateway }) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-dedupe-contract-'));
    dirs.push(dir);
    return sqliteSubject(join(dir, 'dedupe.db'), windowPerGateway);
  },
});

describe('on Redis', () => {
  const redisEnv = useRedis('t');
  const connect = (): RedisClient => redisEnv.connect();
  const freshPrefix = (): string => redisEnv.freshPrefix();

  function sharedStore(keyPrefix: string, windowPerGateway = 100_000): SharedDedupeStore {
    return openSharedDedupeStore({ redis: connect(), keyPrefix, windowPerGateway, logger: silentLogger() });
  }

  function redisSubject(keyPrefix: string, windowPerGateway: number): DedupeSubject {
    const store = sharedStore(keyPrefix, windowPerGateway);
    let closed = false;
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await store.flush();
      store.close();
    };
    return {
      store,
      prefetch: (gatewayId, seqs) => store.prefetch(gatewayId, seqs),
      settle: () => store.flush(),
      // Another connection, as the next lease holder would have.
      reopen: async () => {
        await close();
        return redisSubject(keyPrefix, windowPerGateway);
      },
      close,
    };
  }

  dedupeStoreContract({
    name: 'Redis (shared by the ingestors)',
    open: async ({ windowPerGateway }) => redisSubject(freshPrefix(), windowPerGateway),
  });

  const written = (gatewayId: string, seq: number, hash = contentHash({ gatewayId, seq })): DedupeEntry => ({ gatewayId, seq, hash, outcome: 'written' });
  const refused = (gatewayId: string, seq: number, hash: string): DedupeEntry => ({ gatewayId, seq, hash, outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason: 'no' });
  const range = (first: number, count: number): number[] => Array.from({ length: count }, (_, i) => first + i);

  describe('shared dedupe store', () => {
    it('lets each ingestor see, after a prefetch, what the other recorded', async () => {
      const prefix = freshPrefix();
      const a = sharedStore(prefix);
      const b = sharedStore(prefix);
      a.record(range(0, 500).map((seq) => written('gw', seq)));
      await a.flush();
      await b.prefetch('gw', range(0, 501));
      for (const seq of range(0, 500)) expect(b.lookup('gw', seq)).toEqual({ hash: contentHash({ gatewayId: 'gw', seq }), outcome: 'written' });
      expect(b.lookup('gw', 500)).toBeUndefined();
      // The lease comes back: b wrote 500..599, a (evicted when it lost the lease) sees them.
      b.record(range(500, 100).map((seq) => written('gw', seq)));
      await b.flush();
      a.evict('gw');
      await a.prefetch('gw', range(450, 200));
      expect(a.lookup('gw', 599)?.outcome).toBe('written');
      expect(a.lookup('gw', 450)?.outcome).toBe('written');
      expect(a.lookup('gw', 600)).toBeUndefined();
    });

    it('never lets a prefetch answer replace a record this process made after asking', async () => {
      const prefix = freshPrefix();
      const previous = sharedStore(prefix);
      previous.record([refused('gw', 5, 'old')]);
      await previous.flush();
      const holder = sharedStore(prefix);
      // The answer leaves Redis before the record arrives there: it says "refused".
      const loading = holder.prefetch('gw', [5]);
      holder.record([written('gw', 5, 'new')]);
      await loading;
      expect(holder.lookup('gw', 5)).toEqual({ hash: 'new', outcome: 'written' });
      await holder.flush();
      const next = sharedStore(prefix);
      await next.prefetch('gw', [5]);
      expect(next.lookup('gw', 5)).toEqual({ hash: 'new', outcome: 'written' });
    });

    it('keeps its own record when Redis answers otherwise, until the gateway is evicted', async () => {
      const prefix = freshPrefix();
      const redis = connect();
      const store = openSharedDedupeStore({ redis, keyPrefix: prefix, windowPerGateway: 1_000, logger: silentLogger() });
      store.record([written('gw', 7, 'mine')]);
      await store.flush();
      // Another holder (or an operator) changed it meanwhile.
      await redis.hset(dedupeKeys(prefix).bucket('gw', Math.floor(7 / SEQS_PER_BUCKET)), '7', 'theirs');
      await store.prefetch('gw', [7]);
      expect(store.lookup('gw', 7)?.hash).toBe('mine');
      store.evict('gw');
      expect(store.lookup('gw', 7)).toBeUndefined();
      await store.prefetch('gw', [7]);
      expect(store.lookup('gw', 7)?.hash).toBe('theirs');
    });

    it('resolves flush() only once every record is visible on another connection', async () => {
      const prefix = freshPrefix();
      const store = sharedStore(prefix);
      for (let chunk = 0; chunk < 20; chunk++) store.record(range(chunk * 100, 100).map((seq) => written('gw', seq)));
      await store.flush();
      const other = connect();
      const keys = dedupeKeys(prefix);
      let held = 0;
      for (let bucket = 0; bucket * SEQS_PER_BUCKET < 2_000; bucket++) held += await other.hlen(keys.bucket('gw', bucket));
      expect(held).toBe(2_000);
      expect(await other.hget(keys.max, 'gw')).toBe('1999');
      expect(store.counts()).toEqual({ held: 2_000, pruned: 0 });
    });

    it('rejects flush() while Redis refuses a record, and stores the record once Redis takes it', async () => {
      const prefix = freshPrefix();
      const redis = connect();
      const store = openSharedDedupeStore({ redis, keyPrefix: prefix, windowPerGateway: 1_000, logger: silentLogger() });
      const bucket = dedupeKeys(prefix).bucket('gw', 0);
      // A bucket key of the wrong type: the script's HSETNX fails there.
      await redis.set(bucket, 'not a hash');
      store.record([written('gw', 1)]);
      await expect(store.flush()).rejects.toThrow(/WRONGTYPE/);
      // A later record does not make up for it: every flush() after it still says so.
      store.record([written('gw', SEQS_PER_BUCKET)]);
      await expect(store.flush()).rejects.toThrow(/refused 1 command/);
      await redis.del(bucket);
      // Sent again by itself, with a pause: flush() resolves once Redis took it.
      await waitFor(() => store.flush().then(() => true), { timeoutMs: 15_000, what: 'the refused record stored on a resend' });
      expect(await redis.hget(bucket, '1')).toBe(contentHash({ gatewayId: 'gw', seq: 1 }));
      store.close();
    });

    it('sends what it records while Redis is down once Redis is back', async () => {
      const prefix = freshPrefix();
      const store = sharedStore(prefix);
      store.record([written('gw', 0)]);
      await store.flush();
      await redisEnv.server.kill();
      // Recorded during the outage: nothing throws, flush waits.
      store.record(range(1, 300).map((seq) => written('gw', seq)));
      store.record([refused('gw', 400, 'r')]);
      let flushed = false;
      const flushing = store.flush().then(() => (flushed = true));
      await redisEnv.server.restart();
      await waitFor(() => flushed, { timeoutMs: 20_000, what: 'the records sent after the restart' });
      await flushing;
      // No persistence in this Redis: what was there before the kill is gone, what was sent after arrived.
      const next = sharedStore(prefix);
      await next.prefetch('gw', range(0, 401));
      expect(next.lookup('gw', 0)).toBeUndefined();
      for (const seq of range(1, 300)) expect(next.lookup('gw', seq)?.hash).toBe(contentHash({ gatewayId: 'gw', seq }));
      expect(next.lookup('gw', 400)?.outcome).toBe('rejected');
      const fleet = await fleetCounts(connect(), prefix);
      expect(fleet.total).toEqual({ written: 300, rejected: 1 });
    });

    it('counts each seq once in the fleet, whoever records it and however often', async () => {
      const prefix = freshPrefix();
      const a = sharedStore(prefix);
      const b = sharedStore(prefix);
      const batch = [...range(0, 10).map((seq) => written('gw-1', seq)), refused('gw-1', 10, 'r10'), refused('gw-1', 11, 'r11')];
      a.record(batch);
      await a.flush();
      // The next holder replays the same batch (its ack was lost with the first holder), twice.
      b.record(batch);
      b.record(batch);
      // A refusal later written (a replay after a fix) moves from rejected to written; a late refusal of a written seq counts nothing.
      b.record([written('gw-1', 10, 'r10'), refused('gw-1', 3, 'late')]);
      b.record(range(0, 5).map((seq) => written('gw-2', seq)));
      await b.flush();
      const fleet = await fleetCounts(connect(), prefix);
      expect(fleet.gateways).toEqual({ 'gw-1': { written: 11, rejected: 1 }, 'gw-2': { written: 5, rejected: 0 } });
      expect(fleet.total).toEqual({ written: 16, rejected: 1 });
      expect(await fleetCounts(connect(), freshPrefix())).toEqual({ gateways: {}, total: { written: 0, rejected: 0 } });
    });

    it('prunes whole buckets behind the window across a jump in seqs, in one step', async () => {
      const prefix = freshPrefix();
      const store = sharedStore(prefix, 1_000);
      store.record(range(0, 3_000).map((seq) => written('gw', seq)));
      // The gateway's seqs jump far ahead (a new outbox): every older bucket goes, none are walked.
      store.record([written('gw', 4_000_000_000_000)]);
      await store.flush();
      expect(store.counts()).toEqual({ held: 1, pruned: 3_000 });
      expect(store.record([])).toBe(3_000);
      const other = connect();
      expect(await other.zcard(dedupeKeys(prefix).buckets('gw'))).toBe(1);
      await store.prefetch('gw', [2_999, 4_000_000_000_000]);
      expect(store.lookup('gw', 2_999)).toBeUndefined();
      expect(store.lookup('gw', 4_000_000_000_000)?.outcome).toBe('written');
    });
  });
});
