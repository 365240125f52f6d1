// Write intents (intents.ts): one contract for both logs, the SQLite one in dedupe.db (one
// ingestor) and the Redis one (cluster/shared-intents.ts). "The writer died" is a log opened
// again: a new SQLite connection to the same file, or another member loading the gateway.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock, silentLogger } from '@ferry/runtime';
import { openDedupeStore } from '../src/dedupe.js';
import { intentRuns, openSqliteIntentLog, Suspects } from '../src/intents.js';
import type { IntentLog } from '../src/intents.js';
import { openSharedIntentLog, parseNote } from '../src/cluster/shared-intents.js';
import { useRedis } from './redis-env.js';

describe('intent runs', () => {
  it('groups consecutive keys of one source and starts a new run on a gap or another source', () => {
    const keys = [
      { source: 'a', seq: 1 },
      { source: 'a', seq: 2 },
      { source: 'a', seq: 3 },
      { source: 'b', seq: 3 },
      { source: 'a', seq: 4 },
      { source: 'a', seq: 9 },
    ];
    expect(intentRuns(keys, (k) => k.source, (k) => k.seq)).toEqual([
      { source: 'a', first: 1, last: 3 },
      { source: 'b', first: 3, last: 3 },
      { source: 'a', first: 4, last: 4 },
      { source: 'a', first: 9, last: 9 },
    ]);
  });
});

describe('suspects', () => {
  it('cover the keys of their runs until each is settled, then report the run done', () => {
    const s = new Suspects();
    s.add([
      { id: 'r1', source: 'gw', first: 10, last: 12, askAfter: 500 },
      { id: 'r2', source: 'gw', first: 20, last: 20, askAfter: 700 },
    ]);
    expect(s.size).toBe(2);
    expect(s.covering('gw', 11)).toBe(500);
    expect(s.covering('gw', 20)).toBe(700);
    expect(s.covering('gw', 13)).toBeUndefined();
    expect(s.covering('other', 11)).toBeUndefined();
    expect(s.settle('gw', 10)).toEqual([]);
    expect(s.settle('gw', 10)).toEqual([]);
    expect(s.covering('gw', 10)).toBeUndefined();
    expect(s.settle('gw', 11)).toEqual([]);
    expect(s.settle('gw', 12)).toEqual(['r1']);
    expect(s.size).toBe(1);
    expect(s.drop('gw')).toEqual(['r2']);
    expect(s.size).toBe(0);
    expect(s.covering('gw', 20)).toBeUndefined();
  });
});

describe('shared intent notes', () => {
  it('parses what begin() stores and refuses anything else', () => {
    expect(parseNote('{"at":5,"runs":[[1,3],[7,7]]}')).toEqual({ at: 5, runs: [[1, 3], [7, 7]] });
    expect(parseNote('{"at":5,"runs":[[1]]}')).toBeUndefined();
    expect(parseNote('not json')).toBeUndefined();
    expect(parseNote('{"runs":[]}')).toBeUndefined();
  });
});

/** One writer's view of a log; `reopen` is what another writer sees once this one is gone. */
interface Subject {
  readonly log: IntentLog;
  /** What a writer does before it judges a gateway's readings (Redis: load its notes on takeover). */
  prepare(source: string): Promise<void>;
  /**
   * When the database may be asked about a write noted at `began` by a writer that is gone, seen
   * by a writer that opened the log (or took the gateway over) at `reopened`.
   */
  askAfter(began: number, reopened: number): number;
  /** Records and ends an intent together, as the pipeline's confirm() does. */
  endWithRecords(end: () => void): void;
  reopen(): Promise<Subject>;
  close(): Promise<void>;
}

function contract(name: string, open: (clock: ManualClock) => Promise<Subject>): void {
  describe(`write intents: ${name}`, () => {
    it('leaves the runs of a writer that died mid-write as suspects, to be asked about once that write has landed', async () => {
      const clock = new ManualClock(1_000_000);
      const first = await open(clock);
      await first.log.begin([
        { source: 'gw-1', first: 1, last: 50 },
        { source: 'gw-2', first: 7, last: 7 },
      ]);
      expect(first.log.suspects.covering('gw-1', 1)).toBeUndefined();
      clock.advance(5_000);
      const second = await first.reopen();
      try {
        await second.prepare('gw-1');
        await second.prepare('gw-2');
        const askAfter = second.askAfter(1_000_000, 1_005_000);
        expect(second.log.suspects.covering('gw-1', 1)).toBe(askAfter);
        expect(second.log.suspects.covering('gw-1', 50)).toBe(askAfter);
        expect(second.log.suspects.covering('gw-1', 51)).toBeUndefined();
        expect(second.log.suspects.covering('gw-2', 7)).toBe(askAfter);
      } finally {
        await second.close();
      }
    });

    it('ends an intent with its records: nothing is suspect after a restart', async () => {
      const clock = new ManualClock(2_000_000);
      const first = await open(clock);
      const intent = await first.log.begin([{ source: 'gw-3', first: 100, last: 199 }]);
      first.endWithRecords(() => first.log.end(intent));
      const second = await first.reopen();
      try {
        await second.prepare('gw-3');
        expect(second.log.suspects.size).toBe(0);
        expect(second.log.suspects.covering('gw-3', 150)).toBeUndefined();
      } finally {
        await second.close();
      }
    });

    it('forgets a suspect run once each of its keys was settled, also for the writer after', async () => {
      const clock = new ManualClock(3_000_000);
      const first = await open(clock);
      await first.log.begin([{ source: 'gw-4', first: 1, last: 3 }]);
      const second = await first.reopen();
      await second.prepare('gw-4');
      expect(second.log.suspects.size).toBe(1);
      second.log.settled('gw-4', 1);
      second.log.settled('gw-4', 2);
      expect(second.log.suspects.covering('gw-4', 3)).toBe(second.askAfter(3_000_000, 3_000_000));
      second.log.settled('gw-4', 3);
      expect(second.log.suspects.size).toBe(0);
      const third = await second.reopen();
      try {
        await third.prepare('gw-4');
        expect(third.log.suspects.size).toBe(0);
      } finally {
        await third.close();
      }
    });

    it('keeps another chunk of the dead writer suspect while one is settled', async () => {
      const clock = new ManualClock(4_000_000);
      const first = await open(clock);
      await first.log.begin([{ source: 'gw-5', first: 1, last: 1 }]);
      clock.advance(10);
      await first.log.begin([{ source: 'gw-5', first: 2, last: 2 }]);
      const second = await first.reopen();
      await second.prepare('gw-5');
      second.log.settled('gw-5', 1);
      const third = await second.reopen();
      try {
        await third.prepare('gw-5');
        expect(third.log.suspects.covering('gw-5', 1)).toBeUndefined();
        expect(third.log.suspects.covering('gw-5', 2)).toBe(third.askAfter(4_000_010, 4_000_010));
      } finally {
        await third.close();
      }
    });
  });
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sqliteSubject(path: string, clock: ManualClock): Subject {
  const store = openDedupeStore({ path, windowPerGateway: 1_000 });
  const db = store.database!;
  const log = openSqliteIntentLog({ db, clock, floorOf: (source) => store.windowFloor?.(source) });
  return {
    log,
    // The last run is dead when the file is opened: only what the database had wholly received can still land.
    askAfter: (_began, reopened) => reopened + 500,
    prepare: async () => undefined,
    endWithRecords: (end) => db.transaction(end)(),
    // Closing the connection without ending anything: what a kill -9 leaves on disk.
    reopen: async () => {
      store.close();
      return sqliteSubject(path, clock);
    },
    close: async () => store.close(),
  };
}

contract('SQLite (one ingestor)', async (clock) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-intents-'));
  dirs.push(dir);
  return sqliteSubject(join(dir, 'dedupe.db'), clock);
});

describe('on Redis', () => {
  const redisEnv = useRedis('i');
  let members = 0;
  function redisSubject(keyPrefix: string, clock: ManualClock): Subject {
    const redis = redisEnv.connect(clock);
    const log = openSharedIntentLog({ redis, keyPrefix, memberId: `member-${members++}`, clock, logger: silentLogger() });
    return {
      log,
      // The member that noted it may be alive: counted from the note.
      askAfter: (began) => began + 2_000,
      prepare: (source) => log.load(source),
      endWithRecords: (end) => end(),
      // Another member takes the gateways over; this one is simply never heard from again.
      reopen: async () => {
        await redis.ping();
        return redisSubject(keyPrefix, clock);
      },
      close: async () => {
        await redis.ping();
      },
    };
  }

  contract('Redis (shared by the ingestors)', async (clock) => redisSubject(redisEnv.freshPrefix(), clock));

  it('drops a note older than its maximum age on load, and never calls its own notes suspects', async () => {
    const clock = new ManualClock(10_000_000);
    const redis = redisEnv.connect(clock);
    const keyPrefix = redisEnv.freshPrefix();
    const writer = openSharedIntentLog({ redis, keyPrefix, memberId: 'writer', clock, logger: silentLogger(), maxAgeMs: 60_000 });
    await writer.begin([{ source: 'gw', first: 1, last: 1 }]);
    await writer.load('gw');
    expect(writer.suspects.size).toBe(0);
    clock.advance(61_000);
    const later = openSharedIntentLog({ redis, keyPrefix, memberId: 'later', clock, logger: silentLogger(), maxAgeMs: 60_000 });
    await later.load('gw');
    expect(later.suspects.size).toBe(0);
    await redis.ping();
    expect(await redis.hlen(`${keyPrefix}intents:gw`)).toBe(0);
  });

  it('waits, before asking the database, until a live member that lost the gateway ended its note or left', async () => {
    const clock = new ManualClock(20_000_000);
    const redis = redisEnv.connect(clock);
    const keyPrefix = redisEnv.freshPrefix();
    const live = new Set(['stalled', 'dead']);
    const stalled = openSharedIntentLog({ redis, keyPrefix, memberId: 'stalled', clock, logger: silentLogger() });
    const dead = openSharedIntentLog({ redis, keyPrefix, memberId: 'dead', clock, logger: silentLogger() });
    const stalledIntent = await stalled.begin([{ source: 'gw-a', first: 1, last: 10 }]);
    await dead.begin([{ source: 'gw-b', first: 1, last: 10 }]);
    const taker = openSharedIntentLog({ redis, keyPrefix, memberId: 'taker', clock, logger: silentLogger(), isLive: (m) => live.has(m) });
    await taker.load('gw-a');
    await taker.load('gw-b');

    // The dead member leaves the deployment: its note no longer holds anyone up.
    live.delete('dead');
    await taker.waitForWriters!([{ source: 'gw-b', seq: 5 }]);

    // The stalled one is alive with its note open: the taker waits until the note ends.
    let done = false;
    const waiting = taker.waitForWriters!([{ source: 'gw-a', seq: 5 }]).then(() => (done = true));
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(done).toBe(false);
    stalled.end(stalledIntent);
    await waiting;
    expect(done).toBe(true);
  });

  it("covers a holder's batches in flight from their prefetch on, begun or not, until it has none left", async () => {
    const clock = new ManualClock(30_000_000);
    const redis = redisEnv.connect(clock);
    const keyPrefix = redisEnv.freshPrefix();
    const holder = openSharedIntentLog({ redis, keyPrefix, memberId: 'holder', clock, logger: silentLogger() });
    await holder.noteBatch('gw', [3, 1, 2]);
    await holder.noteBatch('gw', [4, 5, 9]);
    // Its own batches are never its suspects.
    await holder.load('gw');
    expect(holder.suspects.size).toBe(0);
    const taker = openSharedIntentLog({ redis, keyPrefix, memberId: 'taker', clock, logger: silentLogger(), isLive: (m) => m === 'holder' });
    await taker.load('gw');
    for (const seq of [1, 2, 3, 4, 5, 9]) expect(taker.suspects.covering('gw', seq)).toBeDefined();
    expect(taker.suspects.covering('gw', 6)).toBeUndefined();
    let done = false;
    const waiting = taker.waitForWriters!([{ source: 'gw', seq: 9 }]).then(() => (done = true));
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(done).toBe(false);
    holder.endBatches('gw');
    await waiting;
    await redis.ping();
    expect(await redis.hlen(`${keyPrefix}intents:gw`)).toBe(0);
  });
});
