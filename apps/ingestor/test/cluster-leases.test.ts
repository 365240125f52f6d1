// Membership and source leases against a real redis-server (a missing one fails, never skips):
// who is alive, who holds which source, and what happens when a member or Redis goes away.
// Short heartbeats and leases keep it quick; every wait polls with a deadline.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, waitFor, type ServerHandle } from '@ferry/testkit';
import { ManualClock, recordingLogger, silentLogger, systemClock, type Clock, type Logger } from '@ferry/runtime';
import { isFerryError } from '@ferry/protocol';
import { connectRedis, type RedisClient } from '../src/cluster/redis.js';
import { createMembership, membersKey, MISSED_HEARTBEATS, type Membership } from '../src/cluster/members.js';
import { createSourceLeases, leaseKey, leaseSafetyMarginMs, type SourceLeases } from '../src/cluster/leases.js';

const HEARTBEAT_MS = 150;
const LEASE_MS = 600;
/** Timers of a loaded CI machine run late; the bounds below allow this much. */
const JITTER_MS = 60;

interface Member {
  readonly id: string;
  readonly client: RedisClient;
  readonly membership: Membership;
  readonly leases: SourceLeases;
  readonly lost: string[];
}

/** Everything a test opened, closed after it whatever happened. */
const opened: { members: Member[]; clients: RedisClient[] } = { members: [], clients: [] };
let prefixCount = 0;

afterEach(async () => {
  for (const m of opened.members.splice(0)) {
    await m.leases.close();
    await m.membership.close();
    m.client.disconnect();
  }
  for (const c of opened.clients.splice(0)) c.disconnect();
});

function client(server: ServerHandle, logger: Logger = silentLogger()): RedisClient {
  const c = connectRedis({ url: server.url, name: 'test', logger, clock: systemClock });
  opened.clients.push(c);
  return c;
}

/** A fresh key prefix per test, so tests sharing one server never see each other's keys. */
function freshPrefix(): string {
  prefixCount += 1;
  return `t${prefixCount}:`;
}

function member(
  server: ServerHandle,
  keyPrefix: string,
  id: string,
  opts: { leaseMs?: number; clock?: Clock; logger?: Logger } = {},
): Member {
  const logger = opts.logger ?? silentLogger();
  const c = connectRedis({ url: server.url, name: id, logger, clock: systemClock });
  const common = { redis: c, keyPrefix, memberId: id, clock: opts.clock ?? systemClock, logger };
  const m: Member = {
    id,
    client: c,
    membership: createMembership({ ...common, heartbeatMs: HEARTBEAT_MS }),
    leases: createSourceLeases({ ...common, leaseMs: opts.leaseMs ?? LEASE_MS }),
    lost: [],
  };
  m.leases.onLost((source) => m.lost.push(source));
  opened.members.push(m);
  return m;
}

/** Samples both members every few ms and records any moment both believed they held `source`. */
function watchExclusive(a: SourceLeases, b: SourceLeases, source: string): { stop(): number } {
  let overlaps = 0;
  const timer = setInterval(() => {
    if (a.holds(source) && b.holds(source)) overlaps += 1;
  }, 2);
  return {
    stop() {
      clearInterval(timer);
      return overlaps;
    },
  };
}

function sameList(actual: readonly string[], expected: readonly string[]): boolean {
  return JSON.stringify(actual) === JSON.stringify(expected);
}

/** Polls the key's remaining TTL until it has gone up `times` times: each rise is one renewal. */
async function renewalsSeen(admin: RedisClient, key: string, times: number, check: () => void): Promise<void> {
  let last = Infinity;
  let rises = 0;
  await waitFor(
    async () => {
      check();
      const ttl = await admin.pttl(key);
      if (ttl > last) rises += 1;
      last = ttl;
      return rises >= times;
    },
    { timeoutMs: 10 * LEASE_MS * times, intervalMs: 20, what: `${times} renewals of ${key}` },
  );
}

describe('cluster membership and leases on a real Redis', () => {
  let server: ServerHandle;
  let admin: RedisClient;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server?.stop();
  });
  beforeAll(() => {
    admin = connectRedis({ url: server.url, name: 'admin', logger: silentLogger(), clock: systemClock });
  });
  afterAll(() => {
    admin?.disconnect();
  });

  describe('membership', () => {
    it('two members see each other, and one that closes leaves the set at once', async () => {
      const prefix = freshPrefix();
      const a = member(server, prefix, 'ingestor-a');
      const b = member(server, prefix, 'ingestor-b');
      const changes: (readonly string[])[] = [];
      a.membership.onChange((m) => changes.push(m));
      await Promise.all([a.membership.ready(), b.membership.ready()]);
      for (const m of [a, b]) {
        await waitFor(() => sameList(m.membership.live(), ['ingestor-a', 'ingestor-b']), { timeoutMs: 20 * HEARTBEAT_MS, what: `${m.id} to see both` });
      }

      await b.membership.close();
      // Gone from Redis when close() resolves, not after three missed heartbeats.
      expect(await admin.zrange(membersKey(prefix), 0, -1)).toEqual(['ingestor-a']);
      await waitFor(() => sameList(a.membership.live(), ['ingestor-a']), { timeoutMs: 20 * HEARTBEAT_MS, what: 'a to see b leave' });
      expect(changes.at(-1)).toEqual(['ingestor-a']);
      expect(changes).toContainEqual(['ingestor-a', 'ingestor-b']);
    });

    it('drops a member that stops heartbeating without closing after about three heartbeats', async () => {
      const prefix = freshPrefix();
      const a = member(server, prefix, 'ingestor-a');
      const b = member(server, prefix, 'ingestor-b');
      for (const m of [a, b]) {
        await waitFor(() => sameList(m.membership.live(), ['ingestor-a', 'ingestor-b']), { timeoutMs: 20 * HEARTBEAT_MS, what: `${m.id} to see both` });
      }

      // As a kill -9 looks from Redis: the connection goes and no ZREM is ever sent.
      const killedAt = Date.now();
      b.client.disconnect();
      await waitFor(() => sameList(a.membership.live(), ['ingestor-a']), { timeoutMs: 20 * HEARTBEAT_MS, what: 'a to drop the silent b' });
      const elapsed = Date.now() - killedAt;
      // b's last heartbeat was at most one period before the kill and counted for three.
      expect(elapsed).toBeGreaterThanOrEqual((MISSED_HEARTBEATS - 1) * HEARTBEAT_MS - JITTER_MS);
      expect(b.membership.live()).toEqual(['ingestor-a', 'ingestor-b']); // b keeps its last known list
    });

    it('rejects ready() of a membership closed before its first heartbeat', async () => {
      const c = client(server);
      const m = createMembership({ redis: c, keyPrefix: freshPrefix(), memberId: 'early', heartbeatMs: HEARTBEAT_MS, clock: systemClock, logger: silentLogger() });
      const closing = m.close();
      await expect(m.ready()).rejects.toSatisfy((err) => isFerryError(err, 'FERRY_ERR_NOT_READY'));
      await closing;
      expect(m.live()).toEqual(['early']);
    });
  });

  describe('leases', () => {
    it('gives a lease to exactly one of two members racing for it', async () => {
      const prefix = freshPrefix();
      const a = member(server, prefix, 'ingestor-a');
      const b = member(server, prefix, 'ingestor-b');
      // Any character but / # + and control characters may be in a source id.
      const sources = [...Array.from({ length: 30 }, (_, i) => `gw-${i}`), 'plant 7:ü{hall}*?'];
      for (const source of sources) {
        const [gotA, gotB] = await Promise.all([a.leases.acquire(source), b.leases.acquire(source)]);
        expect(gotA !== gotB).toBe(true);
        const winner = gotA ? a : b;
        const loser = gotA ? b : a;
        expect(winner.leases.holds(source)).toBe(true);
        expect(loser.leases.holds(source)).toBe(false);
        expect(await loser.leases.owner(source)).toBe(winner.id);
        expect(await loser.leases.acquire(source)).toBe(false);
      }
      expect([...a.leases.held(), ...b.leases.held()].sort()).toEqual([...sources].sort());
      // Acquiring a lease one already holds renews it.
      const someHeldByA = a.leases.held()[0]!;
      expect(await a.leases.acquire(someHeldByA)).toBe(true);
    });

    it('lets the other member take a released lease at once', async () => {
      const prefix = freshPrefix();
      const a = member(server, prefix, 'ingestor-a');
      const b = member(server, prefix, 'ingestor-b');
      expect(await a.leases.acquire('gw-1')).toBe(true);
      expect(await b.leases.acquire('gw-1')).toBe(false);
      await a.leases.release('gw-1');
      expect(a.leases.holds('gw-1')).toBe(false);
      expect(await b.leases.acquire('gw-1')).toBe(true);
      expect(await a.leases.owner('gw-1')).toBe('ingestor-b');
      expect(a.lost).toEqual([]); // a release is not a loss
      // Releasing what one does not hold leaves the holder alone.
      await a.leases.release('gw-1');
      expect(await a.leases.owner('gw-1')).toBe('ingestor-b');
    });

    it('keeps a held lease alive past its TTL by renewing it', async () => {
      const prefix = freshPrefix();
      const a = member(server, prefix, 'ingestor-a');
      expect(await a.leases.acquire('gw-1')).toBe(true);
      await renewalsSeen(admin, leaseKey(prefix, 'gw-1'), 5, () => expect(a.leases.holds('gw-1')).toBe(true));
      expect(await a.leases.owner('gw-1')).toBe('ingestor-a');
      expect(a.lost).toEqual([]);
    });

    it('hands a lease to the other member once its holder stops renewing, never to both at once', async () => {
      const prefix = freshPrefix();
      const a = member(server, prefix, 'ingestor-a');
      const b = member(server, prefix, 'ingestor-b');
      expect(await a.leases.acquire('gw-1')).toBe(true);
      const watch = watchExclusive(a.leases, b.leases, 'gw-1');

      const killedAt = Date.now();
      a.client.disconnect();
      await waitFor(async () => b.leases.acquire('gw-1'), { timeoutMs: 10 * LEASE_MS, intervalMs: 10, what: 'b to take over gw-1' });
      const elapsed = Date.now() - killedAt;
      expect(watch.stop()).toBe(0);
      // The last renewal was at most a third of a lease before the kill.
      expect(elapsed).toBeGreaterThanOrEqual((2 * LEASE_MS) / 3 - JITTER_MS);
      expect(a.leases.holds('gw-1')).toBe(false);
      expect(a.lost).toEqual(['gw-1']);
      expect(await b.leases.owner('gw-1')).toBe('ingestor-b');
    });

    it('reports a lease lost when its key is overwritten or deleted behind its back', async () => {
      const prefix = freshPrefix();
      const a = member(server, prefix, 'ingestor-a');
      expect(await a.leases.acquire('gw-1')).toBe(true);
      expect(await a.leases.acquire('gw-2')).toBe(true);
      expect(await a.leases.acquire('gw-3')).toBe(true);
      await admin.set(leaseKey(prefix, 'gw-1'), 'intruder', 'PX', 60_000);
      await admin.del(leaseKey(prefix, 'gw-2'));
      await waitFor(() => a.lost.length >= 2, { timeoutMs: 5 * LEASE_MS, what: 'both losses reported' });
      expect([...a.lost].sort()).toEqual(['gw-1', 'gw-2']);
      expect(a.leases.holds('gw-1')).toBe(false);
      expect(a.leases.holds('gw-2')).toBe(false);
      expect(a.leases.held()).toEqual(['gw-3']);
      expect(await a.leases.owner('gw-1')).toBe('intruder');
      // The intruder's lease is not touched by a's renewals or its close.
      await a.leases.close();
      expect(await admin.get(leaseKey(prefix, 'gw-1'))).toBe('intruder');
      expect(await admin.exists(leaseKey(prefix, 'gw-3'))).toBe(0);
    });

    it('counts a lease held only until sent time + leaseMs - margin, and not at all if answered later', async () => {
      const prefix = freshPrefix();
      const clock = new ManualClock(Date.now());
      const a = member(server, prefix, 'ingestor-a', { clock, leaseMs: 60_000 });
      expect(await a.leases.acquire('gw-1')).toBe(true);
      // No await between these steps: no renewal can run in between.
      clock.advance(60_000 - leaseSafetyMarginMs(60_000) - 1);
      expect(a.leases.holds('gw-1')).toBe(true);
      clock.advance(1);
      expect(a.leases.holds('gw-1')).toBe(false);
      expect(a.leases.held()).toEqual([]);

      const late = a.leases.acquire('gw-2');
      clock.advance(60_000); // Redis answers after the lease would have lapsed locally
      expect(await late).toBe(false);
      expect(a.leases.holds('gw-2')).toBe(false);
    });

    it('refuses to acquire after close and releases every lease on close', async () => {
      const prefix = freshPrefix();
      const a = member(server, prefix, 'ingestor-a');
      const b = member(server, prefix, 'ingestor-b');
      expect(await a.leases.acquire('gw-1')).toBe(true);
      expect(await a.leases.acquire('gw-2')).toBe(true);
      await a.leases.close();
      expect(a.leases.held()).toEqual([]);
      await expect(a.leases.acquire('gw-3')).rejects.toSatisfy((err) => isFerryError(err, 'FERRY_ERR_NOT_READY'));
      expect(await b.leases.acquire('gw-1')).toBe(true);
      expect(await b.leases.acquire('gw-2')).toBe(true);
      expect(a.lost).toEqual([]);
    });
  });
});

describe('cluster membership and leases across a Redis restart', () => {
  let server: ServerHandle;
  let admin: RedisClient;
  beforeAll(async () => {
    server = await startRedis({ persistent: true });
    admin = connectRedis({ url: server.url, name: 'admin', logger: silentLogger(), clock: systemClock });
  });
  afterAll(async () => {
    admin?.disconnect();
    await server?.stop();
  });

  it('keeps members and leases through a crash of Redis shorter than the lease', async () => {
    const prefix = freshPrefix();
    const leaseMs = 5_000; // outlasts a restart of Redis on a loaded machine
    const a = member(server, prefix, 'ingestor-a', { leaseMs });
    const b = member(server, prefix, 'ingestor-b', { leaseMs });
    expect(await a.leases.acquire('gw-1')).toBe(true);
    expect(await b.leases.acquire('gw-1')).toBe(false);
    await waitFor(() => sameList(a.membership.live(), ['ingestor-a', 'ingestor-b']), { timeoutMs: 20 * HEARTBEAT_MS, what: 'a to see b' });
    const watch = watchExclusive(a.leases, b.leases, 'gw-1');

    await server.kill(); // SIGKILL: only what the append-only file holds comes back
    await server.restart();

    expect(await admin.get(leaseKey(prefix, 'gw-1'))).toBe('ingestor-a');
    const scoreAfterRestart = Number(await admin.zscore(membersKey(prefix), 'ingestor-a'));
    // Heartbeats after the restart run the script again on an empty script cache.
    await waitFor(async () => Number(await admin.zscore(membersKey(prefix), 'ingestor-a')) > scoreAfterRestart, {
      timeoutMs: 20 * HEARTBEAT_MS,
      what: 'a heartbeat after the restart',
    });
    await renewalsSeen(admin, leaseKey(prefix, 'gw-1'), 2, () => expect(a.leases.holds('gw-1')).toBe(true));
    expect(a.lost).toEqual([]);
    expect(await b.leases.acquire('gw-1')).toBe(false);
    expect(watch.stop()).toBe(0);

    const c = member(server, prefix, 'ingestor-c');
    await waitFor(() => sameList(a.membership.live(), ['ingestor-a', 'ingestor-b', 'ingestor-c']), { timeoutMs: 20 * HEARTBEAT_MS, what: 'a to see c join after the restart' });
    await c.membership.ready();
  });

  it('drops a lease locally when Redis stays away past it, and resumes once Redis is back', async () => {
    const prefix = freshPrefix();
    const { logger, lines } = recordingLogger('info');
    const a = member(server, prefix, 'ingestor-a', { logger });
    const b = member(server, prefix, 'ingestor-b');
    expect(await a.leases.acquire('gw-1')).toBe(true);
    await waitFor(() => sameList(a.membership.live(), ['ingestor-a', 'ingestor-b']), { timeoutMs: 20 * HEARTBEAT_MS, what: 'a to see b' });
    const watch = watchExclusive(a.leases, b.leases, 'gw-1');

    const downAt = Date.now();
    await server.kill();
    await waitFor(() => !a.leases.holds('gw-1'), { timeoutMs: 10 * LEASE_MS, intervalMs: 5, what: 'a to stop counting on gw-1' });
    // Within one lease of the last renewal sent, which was before Redis went.
    expect(Date.now() - downAt).toBeLessThanOrEqual(LEASE_MS + JITTER_MS);
    // onLost comes from a timer set for the local expiry: on a loaded machine a little after.
    await waitFor(() => a.lost.length > 0, { timeoutMs: LEASE_MS, intervalMs: 5, what: 'onLost for gw-1' });
    expect(a.lost).toEqual(['gw-1']);
    // The member list stays the last one known, and says so once.
    await waitFor(() => lines.some((l) => String(l['msg']).startsWith('membership heartbeat unanswered')), { timeoutMs: 20 * HEARTBEAT_MS, what: 'the heartbeat stall to be logged' });
    expect(a.membership.live()).toEqual(['ingestor-a', 'ingestor-b']);

    await server.restart();
    await waitFor(async () => b.leases.acquire('gw-1'), { timeoutMs: 10 * LEASE_MS, intervalMs: 20, what: 'b to take gw-1 after Redis is back' });
    expect(await a.leases.acquire('gw-1')).toBe(false);
    expect(a.leases.holds('gw-1')).toBe(false);
    expect(watch.stop()).toBe(0);
    await waitFor(() => lines.some((l) => l['msg'] === 'membership heartbeat answered again'), { timeoutMs: 20 * HEARTBEAT_MS, what: 'a heartbeat answered after the restart' });
    expect(lines.filter((l) => String(l['msg']).startsWith('membership heartbeat unanswered'))).toHaveLength(1);
    // Redis's clock ran on while it was down, so b may drop out until its own heartbeat is back.
    await waitFor(() => sameList(a.membership.live(), ['ingestor-a', 'ingestor-b']), { timeoutMs: 20 * HEARTBEAT_MS, what: 'a to see b again' });
  });
});
