// The device dedupe contract against both stores (SQLite, and Redis shared by the ingestors),
// then what only the shared store does: two ingestors on one Redis, prefetch against local
// records, and a Redis outage.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DeviceReading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { waitFor } from '@ferry/testkit';
import { deviceIdentity, openDeviceDedupeStore } from '../src/device-dedupe.js';
import type { DeviceIdentity } from '../src/device-dedupe.js';
import type { RedisClient } from '../src/cluster/redis.js';
import { deviceKeys, openSharedDeviceDedupeStore } from '../src/cluster/shared-device-dedupe.js';
import type { SharedDeviceDedupeStore } from '../src/cluster/types.js';
import { deviceDedupeStoreContract } from './dedupe-contract.js';
import type { DeviceDedupeSubject } from './dedupe-contract.js';
import { useRedis } from './redis-env.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sqliteSubject(path: string, windowMs: number, maxEntries: number): DeviceDedupeSubject {
  const store = openDeviceDedupeStore({ path, windowMs, maxEntries });
  const close = async (): Promise<void> => store.close();
  return {
    store,
    prefetch: async () => undefined,
    settle: async () => undefined,
    reopen: async () => {
      await close();
      return sqliteSubject(path, windowMs, maxEntries);
    },
    close,
  };
}

deviceDedupeStoreContract({
  name: 'SQLite (one ingestor)',
  open: async ({ windowMs, maxEntries }) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-device-dedupe-contract-'));
    dirs.push(dir);
    return sqliteSubject(join(dir, 'device-dedupe.db'), windowMs, maxEntries);
  },
});

describe('on Redis', () => {
  const redisEnv = useRedis('d');
  const connect = (): RedisClient => redisEnv.connect();
  const freshPrefix = (): string => redisEnv.freshPrefix();

  function sharedStore(keyPrefix: string, windowMs = 3_600_000, maxEntries = 100_000): SharedDeviceDedupeStore {
    return openSharedDeviceDedupeStore({ redis: connect(), keyPrefix, windowMs, maxEntries, logger: silentLogger() });
  }

  function redisSubject(keyPrefix: string, windowMs: number, maxEntries: number): DeviceDedupeSubject {
    const store = sharedStore(keyPrefix, windowMs, maxEntries);
    let closed = false;
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await store.flush();
      store.close();
    };
    return {
      store,
      prefetch: (identities) => store.prefetch(identities),
      settle: () => store.flush(),
      reopen: async () => {
        await close();
        return redisSubject(keyPrefix, windowMs, maxEntries);
      },
      close,
    };
  }

  deviceDedupeStoreContract({
    name: 'Redis (shared by the ingestors)',
    open: async ({ windowMs, maxEntries }) => redisSubject(freshPrefix(), windowMs, maxEntries),
  });

  /** Fixture times from the clock at run time, fixed for the file so an identity made twice is the same. */
  const T0 = Date.now();
  function identity(scope: string, deviceSeq: number, overrides: Partial<DeviceReading> = {}): DeviceIdentity {
    const reading: DeviceReading = { deviceId: 'dev-1', kind: 'telemetry', ts: T0 - 60_000 + deviceSeq, tsSource: 'device', receivedAt: T0, deviceSeq, metrics: { t: deviceSeq }, ...overrides };
    const found = deviceIdentity(reading, 'gateway', scope);
    if (!found) throw new Error('no identity');
    return found;
  }

  describe('shared device dedupe store', () => {
    it('lets each ingestor see, after a prefetch, the identities the other recorded', async () => {
      const prefix = freshPrefix();
      const a = sharedStore(prefix);
      const b = sharedStore(prefix);
      const identities = Array.from({ length: 200 }, (_, i) => identity(`gw-${i % 3}`, i));
      a.record(identities, Date.now());
      await a.flush();
      await b.prefetch(identities);
      for (const i of identities) expect(b.lookup(i)).toBe(i.hash);
      expect(b.lookup(identity('gw-0', 1_000))).toBeUndefined();
    });

    it('never lets a prefetch answer replace an identity this process recorded', async () => {
      const prefix = freshPrefix();
      const redis = connect();
      const store = openSharedDeviceDedupeStore({ redis, keyPrefix: prefix, windowMs: 3_600_000, maxEntries: 1_000, logger: silentLogger() });
      const mine = identity('gw', 1);
      await redis.set(deviceKeys(prefix).identity(mine), 'theirs');
      // The answer leaves Redis before the record arrives there.
      const loading = store.prefetch([mine]);
      store.record([mine], Date.now());
      await loading;
      expect(store.lookup(mine)).toBe(mine.hash);
      await store.flush();
      await redis.set(deviceKeys(prefix).identity(mine), 'changed again');
      await store.prefetch([mine]);
      expect(store.lookup(mine)).toBe(mine.hash);
      // Evicted (the gateway's lease went elsewhere): Redis's answer is taken.
      store.evict('gw');
      expect(store.lookup(mine)).toBeUndefined();
      await store.prefetch([mine]);
      expect(store.lookup(mine)).toBe('changed again');
    });

    it('stores an identity to expire windowMs after it was recorded', async () => {
      const prefix = freshPrefix();
      const redis = connect();
      const store = openSharedDeviceDedupeStore({ redis, keyPrefix: prefix, windowMs: 600_000, maxEntries: 1_000, logger: silentLogger() });
      const now = Date.now();
      const i = identity('gw', 1);
      store.record([i], now);
      await store.flush();
      // In Redis's clock: the same instant, give or take the clocks' difference measured per call.
      const [seconds, micros] = await redis.time();
      const redisNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
      const expiry = await redis.pexpiretime(deviceKeys(prefix).identity(i));
      expect(Math.abs(expiry - (redisNow + 600_000 - (Date.now() - now)))).toBeLessThan(1_000);
    });

    it('sends what it records while Redis is down once Redis is back', async () => {
      const prefix = freshPrefix();
      const store = sharedStore(prefix);
      store.record([identity('gw', 0)], Date.now());
      await store.flush();
      await redisEnv.server.kill();
      const during = Array.from({ length: 100 }, (_, i) => identity('gw', 1 + i));
      store.record(during, Date.now());
      let flushed = false;
      const flushing = store.flush().then(() => (flushed = true));
      await redisEnv.server.restart();
      await waitFor(() => flushed, { timeoutMs: 20_000, what: 'the identities sent after the restart' });
      await flushing;
      const next = sharedStore(prefix);
      await next.prefetch([identity('gw', 0), ...during]);
      // No persistence in this Redis: what was there before the kill is gone, what was sent after arrived.
      expect(next.lookup(identity('gw', 0))).toBeUndefined();
      for (const i of during) expect(next.lookup(i)).toBe(i.hash);
    });
  });
});
