import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import { RecentRows } from '../src/outbox-recent.js';
import type { RecentRow } from '../src/outbox-recent.js';
import { createSqliteOutbox } from '../src/outbox.js';
import type { Outbox, PeekOptions, SqliteOutboxOptions } from '../src/outbox.js';
import { reading } from './outbox-contract.js';
import { tempDir } from './harness.js';

const rowOf = (seq: number, bytes: number, json: string): RecentRow => ({ seq, bytes, json });

function recentRows(floor: number, maxRows: number, maxBytes: number): RecentRows {
  return new RecentRows(floor, maxRows, maxBytes, rowOf);
}

/** Commits `count` rows from seq `first` on, `bytes` each. */
function commit(recent: RecentRows, first: number, count: number, bytes = 10): void {
  const seqs = Array.from({ length: count }, (_, i) => first + i);
  recent.committed(
    seqs,
    seqs.map(() => bytes),
    seqs.map((seq) => `{"n":${seq}}`),
  );
}

describe('RecentRows', () => {
  it('serves every row committed above its floor, oldest first, within the bounds asked', () => {
    const recent = recentRows(100, 100, 10_000);
    commit(recent, 101, 10);
    expect(recent.floor).toBe(100);
    expect(recent.page(100, Number.MAX_SAFE_INTEGER, 3).map((r) => r.seq)).toEqual([101, 102, 103]);
    expect(recent.page(105, 108, 10).map((r) => r.seq)).toEqual([106, 107, 108]);
    expect(recent.page(110, Number.MAX_SAFE_INTEGER, 10)).toEqual([]);
  });

  it('moves its floor past rows that may have changed, so they are read from the file', () => {
    const recent = recentRows(0, 100, 10_000);
    commit(recent, 1, 10);
    recent.forgetUpTo(4);
    expect(recent.floor).toBe(4);
    expect(recent.size).toBe(6);
    expect(recent.page(4, Number.MAX_SAFE_INTEGER, 100).map((r) => r.seq)).toEqual([5, 6, 7, 8, 9, 10]);
    recent.forgetUpTo(2);
    expect(recent.floor).toBe(4);
    recent.forgetUpTo(10);
    expect(recent.floor).toBe(10);
    expect(recent.size).toBe(0);
  });

  it('holds nothing more once its row or byte bound is reached unread, until a read catches up', () => {
    for (const recent of [recentRows(0, 5, 10_000), recentRows(0, 100, 35)]) {
      commit(recent, 1, 3);
      expect(recent.holding).toBe(true);
      commit(recent, 4, 5);
      expect(recent.holding).toBe(false);
      expect(recent.size).toBe(0);
      expect(recent.floor).toBe(8);
      commit(recent, 9, 2);
      expect(recent.size).toBe(0);
      expect(recent.floor).toBe(10);
      // The sender read the file up to the floor: rows are held again.
      expect(recent.page(10, Number.MAX_SAFE_INTEGER, 100)).toEqual([]);
      expect(recent.holding).toBe(true);
      commit(recent, 11, 2);
      expect(recent.page(10, Number.MAX_SAFE_INTEGER, 100).map((r) => r.seq)).toEqual([11, 12]);
    }
  });

  it('does not hold rows committed at or below its floor (rewritten by the commit that stored them)', () => {
    const recent = recentRows(10, 100, 10_000);
    commit(recent, 8, 5);
    expect(recent.size).toBe(2);
    expect(recent.page(10, Number.MAX_SAFE_INTEGER, 100).map((r) => r.seq)).toEqual([11, 12]);
  });

  it('stays correct over long runs (its storage is compacted as rows go)', () => {
    const recent = recentRows(0, 3000, Number.POSITIVE_INFINITY);
    for (let seq = 1; seq <= 20_000; seq += 100) {
      commit(recent, seq, 100);
      recent.forgetUpTo(seq + 49);
    }
    expect(recent.page(recent.floor, Number.MAX_SAFE_INTEGER, 100).map((r) => r.seq)).toEqual(Array.from({ length: 50 }, (_, i) => 19_951 + i));
  });
});

/** What peek must hand out, read straight from the file with a second connection. */
function expectedPeek(file: Database.Database, options: PeekOptions): { seq: number; bytes: number; json: string }[] {
  const { limit, maxBytes, exclude, rowOverhead = 0, afterSeq = -1, upToSeq = Number.MAX_SAFE_INTEGER } = options;
  const stored = file
    .prepare<[number, number], { seq: number; bytes: number; payload: string }>('SELECT seq, bytes, payload FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq')
    .all(afterSeq, upToSeq);
  const out: { seq: number; bytes: number; json: string }[] = [];
  let total = 0;
  for (const row of stored) {
    if (exclude.has(row.seq)) continue;
    const size = row.bytes + rowOverhead;
    if (out.length > 0 && total + size > maxBytes) break;
    out.push({ seq: row.seq, bytes: row.bytes, json: row.payload });
    total += size;
    if (out.length >= limit) break;
  }
  return out;
}

type Step =
  | { op: 'append'; count: number; device: number }
  | { op: 'peek'; back: number; limit: number; budget: number; upTo: number | undefined; excludeEvery: number }
  | { op: 'ack'; batches: number }
  | { op: 'deleteSome'; pick: number[] }
  | { op: 'age'; ms: number }
  | { op: 'restart' };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('append' as const), count: fc.integer({ min: 1, max: 40 }), device: fc.integer({ min: 1, max: 3 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('peek' as const),
      back: fc.integer({ min: 0, max: 60 }),
      limit: fc.integer({ min: 1, max: 50 }),
      budget: fc.integer({ min: 1, max: 4000 }),
      upTo: fc.option(fc.integer({ min: 0, max: 80 }), { nil: undefined }),
      excludeEvery: fc.integer({ min: 0, max: 4 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('ack' as const), batches: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('deleteSome' as const), pick: fc.array(fc.integer({ min: 0, max: 200 }), { maxLength: 5 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('age' as const), ms: fc.integer({ min: 0, max: 3000 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('restart' as const) }) },
);

describe('peek served from the recent rows', () => {
  const policies: { name: string; options: Partial<SqliteOutboxOptions> }[] = [
    { name: 'drop-oldest with row and age bounds', options: { maxRows: 120, maxAgeMs: 5000, whenFull: 'drop-oldest' } },
    { name: 'drop-oldest with a byte bound', options: { maxBytes: 20_000, whenFull: 'drop-oldest' } },
    { name: 'compact', options: { maxRows: 100, whenFull: 'compact', compactIntervalMs: 1000 } },
    { name: 'few recent rows, often not read in time', options: { maxRows: 150, maxAgeMs: 5000, recentRows: 30 } },
  ];
  for (const policy of policies) {
    it(`hands out exactly the rows the file holds, byte for byte, through appends, acks, drops, compaction and restarts (${policy.name})`, () => {
      fc.assert(
        fc.property(fc.array(step, { minLength: 1, maxLength: 60 }), (steps) => {
          const dir = tempDir();
          const path = join(dir.path, 'outbox.db');
          const clock = new ManualClock(1_700_000_000_000);
          let outbox: Outbox = createSqliteOutbox({ path, clock, synchronous: 'normal', ...policy.options });
          const file = new Database(path, { readonly: true });
          const inFlight = new Set<number>();
          const batches: number[][] = [];
          let cursor = -1;
          let n = 0;
          try {
            for (const s of steps) {
              if (s.op === 'append') {
                const group = Array.from({ length: s.count }, () => reading((n += 1), `dev-${s.device}`, Math.floor(clock.now())));
                const result = outbox.append(group, { inFlight });
                for (const seq of result.droppedSeqs) inFlight.delete(seq);
              } else if (s.op === 'peek') {
                const newest = outbox.newestSeq() ?? 0;
                const exclude = new Set([...inFlight].filter((seq) => s.excludeEvery > 0 && seq % s.excludeEvery === 0));
                const options: PeekOptions = {
                  limit: s.limit,
                  maxBytes: s.budget,
                  exclude,
                  rowOverhead: 8,
                  afterSeq: Math.max(-1, (cursor === -1 ? newest - 60 : cursor) - s.back),
                  ...(s.upTo !== undefined ? { upToSeq: newest - 80 + s.upTo } : {}),
                };
                const want = expectedPeek(file, options);
                const got = outbox.peek(options).map((e) => ({ seq: e.seq, bytes: e.bytes, json: e.json }));
                expect(got).toEqual(want);
                const last = got[got.length - 1];
                if (last) {
                  cursor = Math.max(cursor, last.seq);
                  const seqs = got.map((e) => e.seq).filter((seq) => !inFlight.has(seq));
                  for (const seq of seqs) inFlight.add(seq);
                  batches.push(seqs);
                }
              } else if (s.op === 'ack') {
                for (const seqs of batches.splice(0, s.batches)) {
                  outbox.delete(seqs);
                  for (const seq of seqs) inFlight.delete(seq);
                }
              } else if (s.op === 'deleteSome') {
                const newest = outbox.newestSeq() ?? 0;
                outbox.delete(s.pick.map((k) => newest - k));
              } else if (s.op === 'age') {
                clock.advance(s.ms);
                for (const seq of outbox.expire({ inFlight })) inFlight.delete(seq);
              } else {
                outbox.close();
                outbox = createSqliteOutbox({ path, clock, synchronous: 'normal', ...policy.options });
                inFlight.clear();
                batches.length = 0;
                cursor = -1;
              }
            }
            // Finally everything left, from the start: the file and the recent rows agree.
            const all: PeekOptions = { limit: 100_000, maxBytes: Number.POSITIVE_INFINITY, exclude: new Set() };
            expect(outbox.peek(all).map((e) => ({ seq: e.seq, bytes: e.bytes, json: e.json }))).toEqual(expectedPeek(file, all));
          } finally {
            file.close();
            outbox.close();
            dir.remove();
          }
        }),
        { numRuns: 60 },
      );
    });
  }

  it('hands out the rows just committed without reading the file', () => {
    const dir = tempDir();
    const path = join(dir.path, 'outbox.db');
    const outbox = createSqliteOutbox({ path, synchronous: 'normal' });
    try {
      const { seqs } = outbox.append([reading(1), reading(2), reading(3)]);
      const file = new Database(path);
      // Rewritten behind the outbox's back: only a read of the file would see it.
      file.prepare("UPDATE outbox SET payload = '{}'").run();
      file.close();
      const out = outbox.peek({ limit: 10, maxBytes: 1e6, exclude: new Set(), afterSeq: seqs[0]! - 1 });
      expect(out.map((e) => e.json)).toEqual([1, 2, 3].map((k) => JSON.stringify(reading(k))));
      // Handed out, they are forgotten: a resend reads the file.
      const again = outbox.peek({ limit: 10, maxBytes: 1e6, exclude: new Set(), afterSeq: seqs[0]! - 1 });
      expect(again.map((e) => e.json)).toEqual(['{}', '{}', '{}']);
    } finally {
      outbox.close();
      dir.remove();
    }
  });
});
