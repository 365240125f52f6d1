import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import { openSqlite } from '../src/sqlite.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'ferry-sqlite-'));
  dirs.push(d);
  return d;
};

describe('openSqlite', () => {
  it('creates the directory, and opens in WAL mode with the synchronous level asked for', () => {
    const path = join(tempDir(), 'nested', 'store.db');
    for (const [synchronous, level] of [['normal', 1], ['full', 2]] as const) {
      const db = openSqlite({ path, what: 'test store', synchronous, setup: (d) => d.exec('CREATE TABLE IF NOT EXISTS t (x)') });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('synchronous', { simple: true })).toBe(level);
      expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
      db.close();
    }
  });

  it('fails with FERRY_ERR_STORAGE naming the store and the file when the file is not a database', () => {
    const path = join(tempDir(), 'garbage.db');
    writeFileSync(path, 'this is not a database, just some text that is long enough to fill a header'.repeat(10));
    let caught: unknown;
    try {
      openSqlite({ path, what: 'dedupe store', synchronous: 'normal' });
    } catch (err) {
      caught = err;
    }
    expect(isFerryError(caught, 'FERRY_ERR_STORAGE')).toBe(true);
    expect((caught as Error).message).toContain(`dedupe store ${path} cannot be opened`);
  });

  it('wraps an error from setup in the same typed error', () => {
    const path = join(tempDir(), 'store.db');
    expect(() =>
      openSqlite({
        path,
        what: 'test store',
        synchronous: 'normal',
        setup: () => {
          throw Object.assign(new Error('newer schema'), { name: 'Other' });
        },
      }),
    ).toThrow(/test store .* cannot be opened: newer schema/);
  });

  it('sets the page cache a store asks for, and leaves the build default otherwise', () => {
    const small = openSqlite({ path: join(tempDir(), 'small.db'), what: 'test store', synchronous: 'normal', cacheKiB: 2048 });
    const plain = openSqlite({ path: join(tempDir(), 'plain.db'), what: 'test store', synchronous: 'normal' });
    try {
      expect(small.pragma('cache_size', { simple: true })).toBe(-2048);
      expect(plain.pragma('cache_size', { simple: true })).toBe(-16000);
    } finally {
      small.close();
      plain.close();
    }
  });
});
