// Where the rollup stage (rollup.ts) keeps what must survive a kill -9: the open windows of each
// series and the completed points not yet confirmed by the database (the rollup outbox). Two
// implementations, one contract (test/rollup-store-contract.ts):
// - SQLite (this file): tables in dedupe.db, saved in the transaction that records the chunk's
//   gateway seqs; one ingestor;
// - Redis (cluster/shared-rollups.ts): saved by the same script call that records the chunk's seqs
//   in Redis; the ingestors sharing state, each holding the series of the gateways it leases.
// Either way a chunk's windows and points land together with its dedupe records, or neither does.
import type Database from 'better-sqlite3';
import type { Point } from '@ferry/sinks';

/** One series' open windows as saved: the TumblingWindows state as JSON, and how often it was saved. */
export interface SavedSeries {
  readonly state: string;
  /** Bumped at every save; the Redis store keeps a save only over an older version. */
  readonly version: number;
}

/** A completed (or corrected) window's point, waiting for the database. */
export interface RollupPointItem {
  /** The series key and the window start: one key per point of the database. */
  readonly key: string;
  /** The window's revision: 0 when first emitted, +1 per correction. */
  readonly version: number;
  readonly gatewayTag: string;
  readonly point: Point;
}

/** What one commit saves: the touched series and the points their windows completed. */
export interface RollupSave {
  readonly series: readonly { readonly key: string; readonly gatewayTag: string; readonly saved: SavedSeries }[];
  readonly points: readonly RollupPointItem[];
}

/** What a store tells the rollup stage of its own accord (Redis: on a takeover and a lost lease). */
export interface RollupStoreListener {
  /** Points another holder of a gateway left in the outbox: written again (an overwrite at worst). */
  leftover(items: readonly RollupPointItem[]): void;
  /** The store no longer answers for this gateway's series: drop them from memory. */
  evicted(gatewayTag: string): void;
}

export interface RollupStateStore {
  /** The saved windows of a series (undefined: none), answered synchronously. */
  series(key: string, gatewayTag: string): SavedSeries | undefined;
  /** Whether this process may roll up the gateway's readings now (Redis: it holds the gateway and loaded its series). */
  holds(gatewayTag: string): boolean;
  /**
   * Runs `build` (it moves windows in memory and says what to save), then `alsoRecord` (the dedupe
   * records of the same chunk), and saves the result atomically with those records. If either
   * throws before the records left, nothing is saved and the error is rethrown.
   */
  commit<T>(build: () => RollupSave, alsoRecord: () => T): T;
  /**
   * A direct reading's identity (no dedupe record covers it), claimed inside `build`: false when a
   * commit claimed it before. Only the SQLite store takes direct readings.
   */
  claimOnce(key: string, now: number): boolean;
  /** The database confirmed (or refused for good) these points: out of the outbox, unless saved again since at a newer version. */
  confirmed(items: readonly RollupPointItem[]): void;
  /** Points left in the outbox by this store's last run (SQLite), written again at start. */
  leftover(): readonly RollupPointItem[];
  listen(listener: RollupStoreListener): void;
  /** Points in the outbox not yet confirmed (Redis: those this process saved or took over). */
  outboxSize(): number;
}

const SEP = '\u0000';

/** The gateway tag a series or point key starts with. */
export function gatewayTagOfKey(key: string): string {
  const at = key.indexOf(SEP);
  return at < 0 ? key : key.slice(0, at);
}

export const serializePoint = (p: Point): string => JSON.stringify({ ...p, timestampNs: p.timestampNs.toString() });
export const parsePoint = (text: string): Point => {
  const p = JSON.parse(text) as Omit<Point, 'timestampNs'> & { timestampNs: string };
  return { ...p, timestampNs: BigInt(p.timestampNs) };
};

export interface SqliteRollupStoreOptions {
  /** The dedupe store's connection: the windows are saved in its transaction. */
  readonly db: Database.Database;
  /**
   * How long a direct reading's identity is kept: past its longest window and lateness a copy
   * would be dropped late anyway.
   */
  readonly onceRetentionMs: number;
}

/** Today's tables in dedupe.db: rollup_series, rollup_once, rollup_outbox. */
export function openSqliteRollupStore(options: SqliteRollupStoreOptions): RollupStateStore {
  const { db, onceRetentionMs } = options;
  db.exec(`
    CREATE TABLE IF NOT EXISTS rollup_series (
      key TEXT PRIMARY KEY,
      state TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS rollup_once (
      key TEXT PRIMARY KEY,
      at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS rollup_once_at ON rollup_once (at);
    CREATE TABLE IF NOT EXISTS rollup_outbox (
      key TEXT PRIMARY KEY,
      version INTEGER NOT NULL,
      point TEXT NOT NULL
    ) WITHOUT ROWID;
  `);
  const selectSeries = db.prepare<[string], { state: string }>('SELECT state FROM rollup_series WHERE key = ?');
  const upsertSeries = db.prepare<[string, string]>('INSERT INTO rollup_series (key, state) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET state = excluded.state');
  const upsertOutbox = db.prepare<[string, number, string]>(
    'INSERT INTO rollup_outbox (key, version, point) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET version = excluded.version, point = excluded.point',
  );
  const deleteOutbox = db.prepare<[string, number]>('DELETE FROM rollup_outbox WHERE key = ? AND version = ?');
  const selectOutbox = db.prepare<[], { key: string; version: number; point: string }>('SELECT key, version, point FROM rollup_outbox');
  const countOutbox = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM rollup_outbox');
  const insertOnce = db.prepare<[string, number]>('INSERT INTO rollup_once (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING');
  const deleteOnceBefore = db.prepare<[number]>('DELETE FROM rollup_once WHERE at < ?');
  let oncePrunedAt = 0;
  const deleteConfirmed = db.transaction((items: readonly RollupPointItem[]) => {
    for (const item of items) deleteOutbox.run(item.key, item.version);
  });
  const write = (save: RollupSave): void => {
    // The table keeps the state only: one process, so no save can overtake another.
    for (const s of save.series) upsertSeries.run(s.key, s.saved.state);
    for (const item of save.points) upsertOutbox.run(item.key, item.version, serializePoint(item.point));
  };

  return {
    series(key) {
      const row = selectSeries.get(key);
      return row ? { state: row.state, version: 0 } : undefined;
    },
    holds: () => true,
    commit(build, alsoRecord) {
      return db.transaction(() => {
        write(build());
        return alsoRecord();
      })();
    },
    claimOnce(key, now) {
      if (now - oncePrunedAt > 60_000) {
        deleteOnceBefore.run(now - onceRetentionMs);
        oncePrunedAt = now;
      }
      return insertOnce.run(key, now).changes > 0;
    },
    confirmed(items) {
      deleteConfirmed(items);
    },
    leftover() {
      return selectOutbox.all().map((row) => ({ key: row.key, version: row.version, gatewayTag: gatewayTagOfKey(row.key), point: parsePoint(row.point) }));
    },
    listen() {
      // Nothing moves on its own here: one process holds every series.
    },
    outboxSize: () => countOutbox.get()?.n ?? 0,
  };
}
