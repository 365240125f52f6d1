import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import { ManualClock } from '@ferry/runtime';
import { createSqliteOutbox } from '../src/outbox.js';
import type { Outbox } from '../src/outbox.js';
import { outboxContract, reading } from './outbox-contract.js';
import { tempDir } from './harness.js';

outboxContract('sqlite', () => {
  const dir = tempDir();
  const opened: Outbox[] = [];
  return {
    open(options = {}) {
      const outbox = createSqliteOutbox({ path: join(dir.path, 'outbox.db'), ...options });
      opened.push(outbox);
      return outbox;
    },
    cleanup() {
      for (const outbox of opened) outbox.close();
      dir.remove();
    },
  };
});

describe('createSqliteOutbox', () => {
  function withDir(fn: (dir: string) => void): void {
    const dir = tempDir();
    try {
      fn(dir.path);
    } finally {
      dir.remove();
    }
  }

  it('writes its file in WAL mode at either synchronous level', () => {
    withDir((dir) => {
      for (const level of ['normal', 'full'] as const) {
        const path = join(dir, `${level}.db`);
        const outbox = createSqliteOutbox({ path, synchronous: level });
        outbox.append([reading(1)]);
        const db = new Database(path, { readonly: true });
        expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
        db.close();
        outbox.close();
      }
    });
  });

  it('starts a new outbox at a seq taken from the clock, so a wiped outbox never repeats old seqs', () => {
    withDir((dir) => {
      const clock = new ManualClock(1_700_000_000_000);
      const first = createSqliteOutbox({ path: join(dir, 'a.db'), clock });
      const [firstSeq] = first.append([reading(1)]).seqs;
      expect(firstSeq).toBe(1_700_000_000_000 * 1000 + 1);
      expect(Number.isSafeInteger(firstSeq)).toBe(true);
      first.close();
      clock.advance(60_000);
      const wiped = createSqliteOutbox({ path: join(dir, 'b.db'), clock });
      expect(wiped.append([reading(1)]).seqs[0]).toBeGreaterThan(firstSeq!);
      expect(wiped.nextBatchId()).toBeGreaterThan(1_700_000_000_000);
      wiped.close();
    });
  });

  it('commits an append as one transaction visible to another connection on return', () => {
    withDir((dir) => {
      const path = join(dir, 'outbox.db');
      const outbox = createSqliteOutbox({ path });
      outbox.append([reading(1), reading(2)]);
      const db = new Database(path, { readonly: true });
      expect(db.prepare('SELECT count(*) AS n FROM outbox').get()).toEqual({ n: 2 });
      db.close();
      outbox.close();
    });
  });

  it('refuses a file written by a newer schema with FERRY_ERR_STORAGE', () => {
    withDir((dir) => {
      const path = join(dir, 'outbox.db');
      const db = new Database(path);
      db.pragma('user_version = 42');
      db.close();
      let caught: unknown;
      try {
        createSqliteOutbox({ path });
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'FERRY_ERR_STORAGE')).toBe(true);
    });
  });
});
