// The SQLite DeadLetterStore: one file, bounded, with the counts by code kept in the file so
// they survive restarts and the bound's discards stay visible.
import type Database from 'better-sqlite3';
import { FerryError } from '@ferry/protocol';
import type { ErrorCode } from '@ferry/protocol';
import { openSqlite, systemClock } from '@ferry/runtime';
import type { Clock } from '@ferry/runtime';
import type { DeadLetter, DeadLetterCounts, DeadLetterFilter, DeadLetterStore, HeldGroup, NewDeadLetter } from './store.js';

export const DEFAULT_MAX_DEAD_LETTERS = 100_000;
/** `list` returns at most this many entries when the filter names no limit. */
export const DEFAULT_LIST_LIMIT = 1_000;

export interface SqliteDeadLetterStoreOptions {
  /** File path; its directory is created when missing. `:memory:` works for throwaway stores. */
  readonly path: string;
  /** Entries held at most; beyond it the oldest are discarded and counted. */
  readonly maxEntries?: number;
  readonly clock?: Clock;
  /**
   * `full` (default): each add is fsynced before it returns, so a power cut loses no entry.
   * `normal`: entries survive a process crash, but a power cut can lose the last ones written
   * since the WAL was last synced (at checkpoints); the file stays consistent either way.
   */
  readonly synchronous?: 'normal' | 'full';
  /** SQLite page cache, KiB (openSqlite's cacheKiB); default the build's 16 MiB. */
  readonly cacheKiB?: number;
}

/** v2: gateway_letter_id (letters gateways reported, unique per gateway) and payload_bytes. */
const SCHEMA_VERSION = 2;

interface Row {
  id: number;
  at: number;
  code: string;
  reason: string;
  issues: string | null;
  payload: Buffer;
  gateway_id: string | null;
  device_id: string | null;
  topic: string | null;
  seq: number | null;
  replayed_at: number | null;
  gateway_letter_id: number | null;
  payload_bytes: number | null;
}

interface StateRow {
  held: number;
  discarded: number;
}

/**
 * Filters match the same way in `list` and `purge`: every named field must match, and replayed
 * entries match only when `includeReplayed` is true. `limit` applies to `list` only.
 */
interface FilterShape {
  readonly sql: string;
  readonly params: unknown[];
  readonly key: string;
}

function filterShape(filter: DeadLetterFilter): FilterShape {
  const clauses: string[] = [];
  const params: unknown[] = [];
  let key = '';
  if (filter.code !== undefined) {
    clauses.push('code = ?');
    params.push(filter.code);
    key += 'c';
  }
  if (filter.deviceId !== undefined) {
    clauses.push('device_id = ?');
    params.push(filter.deviceId);
    key += 'd';
  }
  if (filter.gatewayId !== undefined) {
    clauses.push('gateway_id = ?');
    params.push(filter.gatewayId);
    key += 'g';
  }
  if (filter.origin !== undefined) {
    clauses.push(filter.origin === 'gateway' ? 'gateway_letter_id IS NOT NULL' : 'gateway_letter_id IS NULL');
    key += filter.origin === 'gateway' ? 'o' : 'l';
  }
  if (filter.afterId !== undefined) {
    clauses.push('id > ?');
    params.push(filter.afterId);
    key += 'a';
  }
  if (filter.includeReplayed !== true) {
    clauses.push('replayed_at IS NULL');
    key += 'r';
  }
  return { sql: clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '', params, key };
}

/** Validation detail is data, but it must not be able to stop a dead letter from being kept. */
function serializeIssues(issues: readonly unknown[] | undefined): string | null {
  if (issues === undefined) return null;
  try {
    return JSON.stringify(issues);
  } catch {
    return JSON.stringify(issues.map((i) => String(i)));
  }
}

function rowToDeadLetter(row: Row): DeadLetter {
  const source = {
    ...(row.gateway_id !== null ? { gatewayId: row.gateway_id } : {}),
    ...(row.device_id !== null ? { deviceId: row.device_id } : {}),
    ...(row.topic !== null ? { topic: row.topic } : {}),
    ...(row.seq !== null ? { seq: row.seq } : {}),
    ...(row.gateway_letter_id !== null ? { gatewayLetterId: row.gateway_letter_id } : {}),
  };
  return {
    id: row.id,
    at: row.at,
    source,
    code: row.code as ErrorCode,
    reason: row.reason,
    ...(row.issues !== null ? { issues: JSON.parse(row.issues) as unknown[] } : {}),
    payload: row.payload,
    ...(row.payload_bytes !== null ? { payloadBytes: row.payload_bytes } : {}),
    replayedAt: row.replayed_at,
  };
}

export function createSqliteDeadLetterStore(options: SqliteDeadLetterStoreOptions): DeadLetterStore {
  const clock = options.clock ?? systemClock;
  const maxEntries = options.maxEntries ?? DEFAULT_MAX_DEAD_LETTERS;
  if (!Number.isInteger(maxEntries) || maxEntries < 1) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `maxEntries must be a positive integer, got ${String(maxEntries)}`, { field: 'maxEntries' });
  }
  // The busy timeout: the CLI may read the file while a gateway or ingestor writes to it.
  const db = openSqlite({
    path: options.path,
    what: 'dead-letter store',
    synchronous: options.synchronous === 'normal' ? 'normal' : 'full',
    ...(options.cacheKiB !== undefined ? { cacheKiB: options.cacheKiB } : {}),
    setup: migrate,
  });

  type InsertParams = [number, string, string, string | null, Buffer, string | null, string | null, string | null, number | null, number | null, number | null];
  const insert = db.prepare<InsertParams, Row>(
    `INSERT INTO dead_letters (at, code, reason, issues, payload, gateway_id, device_id, topic, seq, gateway_letter_id, payload_bytes)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`,
  );
  // Idempotency in the schema: a reported letter already held is not inserted again.
  const insertReported = db.prepare<InsertParams>(
    `INSERT INTO dead_letters (at, code, reason, issues, payload, gateway_id, device_id, topic, seq, gateway_letter_id, payload_bytes)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (gateway_id, gateway_letter_id) WHERE gateway_letter_id IS NOT NULL DO NOTHING`,
  );
  const getReportedOne = db.prepare<[string, number], Row>('SELECT * FROM dead_letters WHERE gateway_id = ? AND gateway_letter_id = ?');
  const heldGroups = db.prepare<[number], { gateway_id: string | null; device_id: string | null; code: string; held: number }>(
    `SELECT gateway_id, device_id, code, COUNT(*) AS held FROM dead_letters WHERE replayed_at IS NULL
     GROUP BY gateway_id, device_id, code ORDER BY held DESC, gateway_id, device_id, code LIMIT ?`,
  );
  const amendOne = db.prepare<[string, string, string | null, number]>('UPDATE dead_letters SET code = ?, reason = ?, issues = ? WHERE id = ?');
  const countCode = db.prepare<[string, number]>(
    'INSERT INTO dead_letter_counts (code, added) VALUES (?, ?) ON CONFLICT (code) DO UPDATE SET added = added + excluded.added',
  );
  const readState = db.prepare<[], StateRow>('SELECT held, discarded FROM dead_letter_state WHERE id = 1');
  const addHeld = db.prepare<[number]>('UPDATE dead_letter_state SET held = held + ? WHERE id = 1');
  const discardOldest = db.prepare<[number]>('DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)');
  const addDiscarded = db.prepare<[number, number]>('UPDATE dead_letter_state SET held = held - ?, discarded = discarded + ? WHERE id = 1');
  const getOne = db.prepare<[number], Row>('SELECT * FROM dead_letters WHERE id = ?');
  const readCounts = db.prepare<[], { code: string; added: number }>('SELECT code, added FROM dead_letter_counts');
  const markOne = db.prepare<[number, number]>('UPDATE dead_letters SET replayed_at = ? WHERE id = ?');

  // Filters come in a handful of shapes; each shape is prepared once.
  const listStatements = new Map<string, Database.Statement<unknown[], Row>>();
  const purgeStatements = new Map<string, Database.Statement<unknown[]>>();

  function insertParams(entry: NewDeadLetter): InsertParams {
    const { source } = entry;
    return [
      entry.at ?? clock.now(),
      entry.code,
      entry.reason,
      serializeIssues(entry.issues),
      Buffer.from(entry.payload.buffer, entry.payload.byteOffset, entry.payload.byteLength),
      source.gatewayId ?? null,
      source.deviceId ?? null,
      source.topic ?? null,
      source.seq ?? null,
      source.gatewayLetterId ?? null,
      entry.payloadBytes ?? null,
    ];
  }

  function insertOne(entry: NewDeadLetter): Row {
    const row = insert.get(...insertParams(entry));
    if (!row) throw new Error('insert returned no row');
    return row;
  }

  /** Keeps the bound: discards the oldest entries beyond maxEntries and counts them. */
  function enforceBound(): void {
    const state = readState.get();
    if (!state || state.held <= maxEntries) return;
    const excess = state.held - maxEntries;
    const removed = discardOldest.run(excess).changes;
    addDiscarded.run(removed, removed);
  }

  const addTx = db.transaction((entry: NewDeadLetter): Row => {
    const row = insertOne(entry);
    countCode.run(entry.code, 1);
    addHeld.run(1);
    enforceBound();
    return row;
  });

  const addManyTx = db.transaction((entries: readonly NewDeadLetter[]): void => {
    const byCode = new Map<string, number>();
    for (const entry of entries) {
      insertOne(entry);
      byCode.set(entry.code, (byCode.get(entry.code) ?? 0) + 1);
    }
    for (const [code, added] of byCode) countCode.run(code, added);
    addHeld.run(entries.length);
    enforceBound();
  });

  const addReportedTx = db.transaction((entries: readonly NewDeadLetter[]): number => {
    const byCode = new Map<string, number>();
    let added = 0;
    for (const entry of entries) {
      if (entry.source.gatewayId === undefined || entry.source.gatewayLetterId === undefined) {
        throw new FerryError('FERRY_ERR_CONFIG_INVALID', 'a reported dead letter names its gatewayId and gatewayLetterId', { field: 'source' });
      }
      if (insertReported.run(...insertParams(entry)).changes === 0) continue;
      added += 1;
      byCode.set(entry.code, (byCode.get(entry.code) ?? 0) + 1);
    }
    for (const [code, n] of byCode) countCode.run(code, n);
    addHeld.run(added);
    enforceBound();
    return added;
  });

  const purgeTx = db.transaction((shape: FilterShape): number => {
    let stmt = purgeStatements.get(shape.key);
    if (!stmt) {
      stmt = db.prepare(`DELETE FROM dead_letters ${shape.sql}`);
      purgeStatements.set(shape.key, stmt);
    }
    const removed = stmt.run(...shape.params).changes;
    addHeld.run(-removed);
    return removed;
  });

  const markTx = db.transaction((ids: readonly number[], at: number): void => {
    for (const id of ids) markOne.run(at, id);
  });

  function storage<T>(what: string, fn: () => T): T {
    if (!db.open) throw new FerryError('FERRY_ERR_NOT_READY', `dead-letter store ${options.path} is closed`);
    try {
      return fn();
    } catch (err) {
      if (err instanceof FerryError) throw err;
      throw new FerryError('FERRY_ERR_STORAGE', `dead-letter store ${what} failed: ${(err as Error).message}`, { path: options.path }, { cause: err });
    }
  }

  return {
    add(entry) {
      return storage('add', () => rowToDeadLetter(addTx(entry)));
    },
    addMany(entries) {
      if (entries.length === 0) return;
      storage('add', () => addManyTx(entries));
    },
    addReported(entries) {
      if (entries.length === 0) return { added: 0, duplicates: 0 };
      const added = storage('addReported', () => addReportedTx(entries));
      return { added, duplicates: entries.length - added };
    },
    getReported(gatewayId, gatewayLetterId) {
      return storage('get', () => {
        const row = getReportedOne.get(gatewayId, gatewayLetterId);
        return row ? rowToDeadLetter(row) : undefined;
      });
    },
    heldBy(limit = 1000): HeldGroup[] {
      return storage('heldBy', () =>
        heldGroups.all(limit).map((g) => ({ gatewayId: g.gateway_id, deviceId: g.device_id, code: g.code as ErrorCode, held: g.held })),
      );
    },
    amend(id, amendment) {
      return storage('amend', () => amendOne.run(amendment.code, amendment.reason, serializeIssues(amendment.issues), id).changes > 0);
    },
    list(filter = {}) {
      return storage('list', () => {
        const shape = filterShape(filter);
        let stmt = listStatements.get(shape.key);
        if (!stmt) {
          stmt = db.prepare<unknown[], Row>(`SELECT * FROM dead_letters ${shape.sql} ORDER BY id LIMIT ?`);
          listStatements.set(shape.key, stmt);
        }
        return stmt.all(...shape.params, filter.limit ?? DEFAULT_LIST_LIMIT).map(rowToDeadLetter);
      });
    },
    get(id) {
      return storage('get', () => {
        const row = getOne.get(id);
        return row ? rowToDeadLetter(row) : undefined;
      });
    },
    counts(): DeadLetterCounts {
      return storage('counts', () => {
        const state = readState.get() ?? { held: 0, discarded: 0 };
        const byCode: Partial<Record<ErrorCode, number>> = {};
        for (const { code, added } of readCounts.all()) byCode[code as ErrorCode] = added;
        return { held: state.held, byCode, discarded: state.discarded };
      });
    },
    markReplayed(ids, at) {
      if (ids.length === 0) return;
      storage('markReplayed', () => markTx(ids, at ?? clock.now()));
    },
    purge(filter = {}) {
      return storage('purge', () => purgeTx(filterShape(filter)));
    },
    close() {
      if (db.open) db.close();
    },
  };
}

function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new Error(`file has schema version ${version}, this Ferry knows up to ${SCHEMA_VERSION}`);
  }
  if (version === SCHEMA_VERSION) return;
  if (version < 1) createV1(db);
  // v2, in one transaction with the version bump so a crash leaves v1 or v2, never half.
  db.transaction(() => {
    db.exec(`
      ALTER TABLE dead_letters ADD COLUMN gateway_letter_id INTEGER;
      ALTER TABLE dead_letters ADD COLUMN payload_bytes INTEGER;
      CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_reported ON dead_letters (gateway_id, gateway_letter_id) WHERE gateway_letter_id IS NOT NULL;
      PRAGMA user_version = ${SCHEMA_VERSION};
    `);
  })();
}

function createV1(db: Database.Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS dead_letters (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      at INTEGER NOT NULL,
      code TEXT NOT NULL,
      reason TEXT NOT NULL,
      issues TEXT,
      payload BLOB NOT NULL,
      gateway_id TEXT,
      device_id TEXT,
      topic TEXT,
      seq INTEGER,
      replayed_at INTEGER
    );
    CREATE INDEX IF NOT EXISTS dead_letters_code ON dead_letters (code, id);
    CREATE INDEX IF NOT EXISTS dead_letters_device ON dead_letters (device_id, id);
    CREATE INDEX IF NOT EXISTS dead_letters_gateway ON dead_letters (gateway_id, id);
    -- Everything ever added, by code; never decremented by the bound or by purges.
    CREATE TABLE IF NOT EXISTS dead_letter_counts (code TEXT PRIMARY KEY, added INTEGER NOT NULL) WITHOUT ROWID;
    -- Kept in step with dead_letters in the same transactions, so the bound needs no COUNT(*).
    CREATE TABLE IF NOT EXISTS dead_letter_state (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      held INTEGER NOT NULL,
      discarded INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO dead_letter_state (id, held, discarded) VALUES (1, 0, 0);
    PRAGMA user_version = 1;
  `);
}
