// The rollup state store contract against both stores (SQLite in dedupe.db, and Redis shared by the
// ingestors), then what only the shared store does: one script call for a chunk's records and
// windows, saves that arrive out of order, a save fenced off by another member's lease, and the
// fleet counts unchanged by what rides with the records.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import { openDedupeStore } from '../src/dedupe.js';
import type { DedupeEntry } from '../src/dedupe.js';
import { openSqliteRollupStore } from '../src/rollup-store.js';
import type { RollupPointItem, RollupSave } from '../src/rollup-store.js';
import { fleetCounts } from '../src/cluster/fleet-accounting.js';
import { leaseKey } from '../src/cluster/leases.js';
import type { RedisClient } from '../src/cluster/redis.js';
import { openSharedDedupeStore } from '../src/cluster/shared-dedupe.js';
import { openSharedRollupStore, rollupKeys } from '../src/cluster/shared-rollups.js';
import type { SharedRollupStore } from '../src/cluster/shared-rollups.js';
import { rollupStoreContract } from './rollup-store-contract.js';
import type { RollupStoreSubject } from './rollup-store-contract.js';
import { useRedis } from './redis-env.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sqliteSubject(path: string): RollupStoreSubject {
  const dedupe = openDedupeStore({ path, windowPerGateway: 100_000 });
  const store = openSqliteRollupStore({ db: dedupe.database!, onceRetentionMs: 3_600_000 });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    dedupe.close();
  };
  const leftovers: RollupPointItem[] = [...store.leftover()];
  return {
    store,
    record: (entries) => dedupe.record(entries),
    lookup: async (gatewayId, seq) => dedupe.lookup(gatewayId, seq),
    take: async () => undefined,
    leftovers,
    settle: async () => undefined,
    reopen: async () => {
      await close();
      return sqliteSubject(path);
    },
    close,
  };
}

rollupStoreContract({
  name: 'SQLite (one ingestor)',
  open: async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-rollup-store-'));
    dirs.push(dir);
    return sqliteSubject(join(dir, 'dedupe.db'));
  },
});

describe('on Redis', () => {
  const redisEnv = useRedis('r');
  const connect = (): RedisClient => redisEnv.connect();
  const freshPrefix = (): string => redisEnv.freshPrefix();
  let members = 0;

  interface Member {
    readonly redis: RedisClient;
    readonly dedupe: ReturnType<typeof openSharedDedupeStore>;
    readonly store: SharedRollupStore;
    readonly leftovers: RollupPointItem[];
    readonly memberId: string;
  }

  /** One ingestor's stores on its own connection, as cluster-state.ts opens them. */
  function member(keyPrefix: string): Member {
    const redis = connect();
    const memberId = `m${++members}`;
    const dedupe = openSharedDedupeStore({ redis, keyPrefix, windowPerGateway: 100_000, logger: silentLogger() });
    const store = openSharedRollupStore({ redis, keyPrefix, memberId, dedupe, logger: silentLogger() });
    const leftovers: RollupPointItem[] = [];
    // As the rollup stage does (rollup.ts): without a listener nothing is loaded.
    store.listen({ leftover: (items) => leftovers.push(...items), evicted: () => undefined });
    return { redis, dedupe, store, leftovers, memberId };
  }

  function redisSubject(keyPrefix: string): RollupStoreSubject {
    const m = member(keyPrefix);
    let closed = false;
    const settle = async (): Promise<void> => {
      await m.dedupe.flush();
      await m.store.flush();
    };
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await settle();
      m.dedupe.close();
    };
    return {
      store: m.store,
      record: (entries) => m.dedupe.record(entries),
      lookup: async (gatewayId, seq) => {
        await m.dedupe.prefetch(gatewayId, [seq]);
        return m.dedupe.lookup(gatewayId, seq);
      },
      take: (gatewayTag) => m.store.load(gatewayTag),
      leftovers: m.leftovers,
      settle,
      reopen: async () => {
        await close();
        return redisSubject(keyPrefix);
      },
      close,
    };
  }

  rollupStoreContract({ name: 'Redis (shared by the ingestors)', open: async () => redisSubject(freshPrefix()) });

  const SEP = '\u0000';
  const key = (gatewayTag: string, deviceId: string): string => `${gatewayTag}${SEP}${deviceId}${SEP}v${SEP}60000`;
  const save = (gatewayTag: string, deviceId: string, version: number, points: RollupPointItem[] = []): RollupSave => ({
    series: [{ key: key(gatewayTag, deviceId), gatewayTag, saved: { state: `{"n":${version}}`, version } }],
    points,
  });
  const written = (gatewayId: string, seq: number): DedupeEntry => ({ gatewayId, seq, hash: `h${seq}`, outcome: 'written' });

  async function scriptCalls(redis: RedisClient): Promise<number> {
    const info = await redis.info('commandstats');
    let calls = 0;
    for (const m of info.matchAll(/^cmdstat_(eval|evalsha|exec):calls=(\d+)/gm)) calls += Number(m[2]);
    return calls;
  }

  describe('shared rollup store', () => {
    it('saves a chunk\'s records, windows and points in one script call', async () => {
      const prefix = freshPrefix();
      const a = member(prefix);
      await a.store.load('gw');
      // The first call of a connection defines the script (EVAL): made before counting.
      a.store.commit(() => save('gw', 'd0', 1), () => a.dedupe.record([written('gw', 0)]));
      await a.dedupe.flush();
      const admin = connect();
      const before = await scriptCalls(admin);
      const p: RollupPointItem = { key: `${key('gw', 'd1')}${SEP}0`, version: 0, gatewayTag: 'gw', point: { measurement: 'telemetry_1m', tags: {}, fields: { v_count: 1 }, timestampNs: 0n } };
      a.store.commit(() => save('gw', 'd1', 1, [p]), () => a.dedupe.record([written('gw', 1), written('gw', 2)]));
      await a.dedupe.flush();
      // One EVALSHA (the INFO of the admin connection is not counted), no MULTI/EXEC besides.
      expect((await scriptCalls(admin)) - before).toBe(1);
      expect(await admin.hget(rollupKeys(prefix).series('gw'), key('gw', 'd1'))).toBe('1 {"n":1}');
      expect(await admin.hlen(rollupKeys(prefix).outbox('gw'))).toBe(1);
      expect((await fleetCounts(admin, prefix)).gateways['gw']).toEqual({ written: 3, rejected: 0 });
    });

    it('never lets an older save of a series replace a newer one', async () => {
      const prefix = freshPrefix();
      const a = member(prefix);
      await a.store.load('gw');
      a.store.commit(() => save('gw', 'd1', 5), () => a.dedupe.record([written('gw', 1)]));
      // A save refused by Redis and sent again after later ones: it arrives last.
      a.store.commit(() => save('gw', 'd1', 4), () => a.dedupe.record([written('gw', 2)]));
      await a.dedupe.flush();
      const b = member(prefix);
      await b.store.load('gw');
      expect(b.store.series(key('gw', 'd1'), 'gw')).toEqual({ state: '{"n":5}', version: 5 });
    });

    it('fences off the windows of a gateway another member took over, and still records its seqs once', async () => {
      const prefix = freshPrefix();
      const a = member(prefix);
      const b = member(prefix);
      await a.store.load('gw');
      a.store.commit(() => save('gw', 'd1', 1), () => a.dedupe.record([written('gw', 1)]));
      await a.dedupe.flush();
      // b holds the lease now and loaded the windows; a's chunk in flight is confirmed after that.
      const admin = connect();
      await admin.set(leaseKey(prefix, 'gw'), b.memberId, 'PX', 60_000);
      await b.store.load('gw');
      a.store.commit(() => save('gw', 'd1', 2), () => a.dedupe.record([written('gw', 2)]));
      b.store.commit(() => save('gw', 'd1', 2), () => b.dedupe.record([written('gw', 3)]));
      await a.dedupe.flush();
      await b.dedupe.flush();
      expect(a.store.fenced()).toBe(1);
      expect(b.store.fenced()).toBe(0);
      expect(await admin.hget(rollupKeys(prefix).series('gw'), key('gw', 'd1'))).toBe('2 {"n":2}');
      expect((await fleetCounts(admin, prefix)).gateways['gw']).toEqual({ written: 3, rejected: 0 });
    });

    it('hands the points a dead member left to the next holder, once, and drops a gateway\'s windows when it is evicted', async () => {
      const prefix = freshPrefix();
      const a = member(prefix);
      await a.store.load('gw');
      const p: RollupPointItem = { key: `${key('gw', 'd1')}${SEP}0`, version: 2, gatewayTag: 'gw', point: { measurement: 'telemetry_1m', tags: { device: 'd1' }, fields: { v_count: 7 }, timestampNs: 60_000_000_000n } };
      a.store.commit(() => save('gw', 'd1', 1, [p]), () => a.dedupe.record([written('gw', 1)]));
      await a.dedupe.flush();
      // a dies: nothing confirmed. b takes the gateway over.
      const b = member(prefix);
      await b.store.load('gw');
      await b.store.load('gw');
      expect(b.leftovers).toEqual([p]);
      expect(b.store.outboxSize()).toBe(1);
      b.store.evict('gw');
      expect(b.store.holds('gw')).toBe(false);
      expect(b.store.series(key('gw', 'd1'), 'gw')).toBeUndefined();
    });
  });
});
