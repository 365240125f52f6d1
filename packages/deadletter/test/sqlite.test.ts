import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import type { DeadLetterStore } from '../src/store.js';
import { createSqliteDeadLetterStore } from '../src/sqlite.js';
import { deadLetterStoreContract } from './contract.js';

deadLetterStoreContract('sqlite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-deadletter-'));
  const opened: DeadLetterStore[] = [];
  return {
    open(options = {}) {
      const store = createSqliteDeadLetterStore({ path: join(dir, 'deadletters.db'), ...options });
      opened.push(store);
      return store;
    },
    cleanup() {
      for (const store of opened) store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('createSqliteDeadLetterStore', () => {
  function withDir<T>(fn: (dir: string) => T): T {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-deadletter-'));
    try {
      return fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('creates the missing directory and writes the file in WAL mode', () => {
    withDir((dir) => {
      const path = join(dir, 'nested', 'deep', 'deadletters.db');
      const store = createSqliteDeadLetterStore({ path });
      store.add({ source: { deviceId: 'd' }, code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'bad', payload: Buffer.from('x') });
      const peek = new Database(path, { readonly: true });
      expect(peek.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(peek.prepare('SELECT count(*) AS n FROM dead_letters').get()).toEqual({ n: 1 });
      peek.close();
      store.close();
    });
  });

  it('defaults its bound to 100 000 entries', () => {
    withDir((dir) => {
      const store = createSqliteDeadLetterStore({ path: join(dir, 'd.db') });
      const entries = Array.from({ length: 100_001 }, (_, i) => ({
        source: {},
        code: 'FERRY_ERR_PAYLOAD_JSON' as const,
        reason: `r${i}`,
        payload: Buffer.alloc(0),
      }));
      store.addMany(entries);
      expect(store.counts()).toMatchObject({ held: 100_000, discarded: 1 });
      expect(store.list({ limit: 1 })[0]?.reason).toBe('r1');
      store.close();
    });
  });

  it('refuses a bound that is not a positive integer', () => {
    withDir((dir) => {
      let caught: unknown;
      try {
        createSqliteDeadLetterStore({ path: join(dir, 'd.db'), maxEntries: 0 });
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'FERRY_ERR_CONFIG_INVALID')).toBe(true);
    });
  });

  it('upgrades a version 1 file in place, keeping its entries and counts', () => {
    withDir((dir) => {
      const path = join(dir, 'd.db');
      const v1 = new Database(path);
      v1.exec(`
        CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL,
          issues TEXT, payload BLOB NOT NULL, gateway_id TEXT, device_id TEXT, topic TEXT, seq INTEGER, replayed_at INTEGER);
        CREATE TABLE dead_letter_counts (code TEXT PRIMARY KEY, added INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE dead_letter_state (id INTEGER PRIMARY KEY CHECK (id = 1), held INTEGER NOT NULL, discarded INTEGER NOT NULL);
        INSERT INTO dead_letter_state VALUES (1, 1, 0);
        INSERT INTO dead_letter_counts VALUES ('FERRY_ERR_PAYLOAD_JSON', 1);
        INSERT INTO dead_letters (at, code, reason, payload, gateway_id, device_id) VALUES (5, 'FERRY_ERR_PAYLOAD_JSON', 'bad', x'7b', 'gw', 'd');
        PRAGMA user_version = 1;
      `);
      v1.close();
      const store = createSqliteDeadLetterStore({ path });
      expect(store.list()).toEqual([
        { id: 1, at: 5, source: { gatewayId: 'gw', deviceId: 'd' }, code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'bad', payload: Buffer.from('{'), replayedAt: null },
      ]);
      expect(store.addReported([{ source: { gatewayId: 'gw', gatewayLetterId: 1 }, code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'r', payload: Buffer.from('x') }])).toEqual({
        added: 1,
        duplicates: 0,
      });
      expect(store.counts()).toMatchObject({ held: 2, byCode: { FERRY_ERR_PAYLOAD_JSON: 2 } });
      store.close();
      const peek = new Database(path, { readonly: true });
      expect(peek.pragma('user_version', { simple: true })).toBe(2);
      peek.close();
    });
  });

  it('refuses a file written by a newer schema with FERRY_ERR_STORAGE', () => {
    withDir((dir) => {
      const path = join(dir, 'd.db');
      const db = new Database(path);
      db.pragma('user_version = 99');
      db.close();
      let caught: unknown;
      try {
        createSqliteDeadLetterStore({ path });
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'FERRY_ERR_STORAGE')).toBe(true);
      expect(String(caught)).toContain('schema version 99');
    });
  });
});
