// The outbox file's schema, versioned with PRAGMA user_version. Migrations run in order, each in
// its own transaction, so an upgrade on a Pi keeps the backlog; a file from a newer Ferry is
// refused rather than written by code that does not know its tables (a downgrade never corrupts).
import type Database from 'better-sqlite3';
import { FerryError } from '@ferry/protocol';
import type { Clock } from '@ferry/runtime';

export interface OutboxMigration {
  /** The user_version the file has once this migration ran. */
  readonly version: number;
  readonly what: string;
  readonly up: (db: Database.Database, clock: Clock) => void;
}

export const OUTBOX_MIGRATIONS: readonly OutboxMigration[] = [
  {
    version: 1,
    what: 'rows, running totals, drop counts',
    up(db, clock) {
      // A new outbox starts its seqs at the creation time in milliseconds x 1000 rather than at 1: if
      // the data directory is ever wiped, new readings still get seqs above those the ingestor has
      // already seen from this gateway, instead of being taken for duplicates and dropped.
      const firstSeq = Math.max(0, Math.floor(clock.now()) * 1000);
      db.exec(`
        CREATE TABLE IF NOT EXISTS outbox (
          seq INTEGER PRIMARY KEY AUTOINCREMENT,
          device_id TEXT NOT NULL,
          ts INTEGER NOT NULL,
          received_at INTEGER NOT NULL,
          bytes INTEGER NOT NULL,
          payload TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS outbox_state (
          id INTEGER PRIMARY KEY CHECK (id = 1),
          depth INTEGER NOT NULL,
          bytes INTEGER NOT NULL,
          batch_id_reserved INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS outbox_dropped (
          reason TEXT NOT NULL,
          device_id TEXT NOT NULL,
          count INTEGER NOT NULL,
          PRIMARY KEY (reason, device_id)
        ) WITHOUT ROWID;
      `);
      // Batch ids start from the same point, for the same reason: acks queued for a wiped run never match.
      db.prepare('INSERT OR IGNORE INTO outbox_state (id, depth, bytes, batch_id_reserved) VALUES (1, 0, 0, ?)').run(firstSeq);
      db.prepare(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox', ? WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')",
      ).run(firstSeq);
    },
  },
  {
    version: 2,
    what: 'gap records, age index, byte totals recomputed',
    up(db) {
      db.exec(`
        -- Version 2 judged the age bound by the reading's own time (rows by ts); version 5 by receive time.
        CREATE INDEX IF NOT EXISTS outbox_ts ON outbox (ts);
        CREATE TABLE IF NOT EXISTS outbox_gaps (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          device_id TEXT,
          reason TEXT NOT NULL,
          count INTEGER,
          first_seq INTEGER,
          last_seq INTEGER,
          first_ts INTEGER,
          last_ts INTEGER,
          first_device_seq INTEGER,
          last_device_seq INTEGER,
          updated_at INTEGER NOT NULL
        );
      `);
      // Version 1 kept the same totals; they are recomputed once here so any drift is gone.
      db.exec('UPDATE outbox_state SET depth = (SELECT count(*) FROM outbox), bytes = (SELECT coalesce(sum(bytes), 0) FROM outbox) WHERE id = 1');
    },
  },
  {
    version: 3,
    what: 'edge processing state',
    up(db) {
      // One row per processed series (device + metric): its operators' state (a deadband's last
      // sent value, open rollup windows), written in the transaction that stores what it produced.
      db.exec(`
        CREATE TABLE IF NOT EXISTS pipeline_state (
          device_id TEXT NOT NULL,
          metric TEXT NOT NULL,
          state TEXT NOT NULL,
          PRIMARY KEY (device_id, metric)
        ) WITHOUT ROWID;
      `);
    },
  },
  {
    version: 4,
    what: 'compaction: rows handed to the sender, summaries written',
    up(db) {
      // outbox_sent: seq ranges handed to the sender (with whenFull: compact). Those rows may
      // have reached the database with their ack lost, so they must never be folded into a
      // summary (counted twice) nor have their seq reused (a conflict at the ingestor).
      // outbox_compacted: per device, readings replaced by summaries and the span they covered.
      db.exec(`
        CREATE TABLE IF NOT EXISTS outbox_sent (
          first_seq INTEGER PRIMARY KEY,
          last_seq INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS outbox_compacted (
          device_id TEXT PRIMARY KEY,
          readings INTEGER NOT NULL,
          summaries INTEGER NOT NULL,
          first_ts INTEGER NOT NULL,
          last_ts INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        ) WITHOUT ROWID;
      `);
    },
  },
  {
    version: 5,
    what: 'age bound by receive time',
    up(db) {
      // The age bound measures how long the gateway has held a reading, from its receive time,
      // not how old the device says it is (a backfill or a wrong device clock must not be dropped
      // on arrival). Rows by received_at replace rows by ts, which nothing else reads.
      db.exec(`
        CREATE INDEX IF NOT EXISTS outbox_received_at ON outbox (received_at);
        DROP INDEX IF EXISTS outbox_ts;
      `);
    },
  },
];

export const OUTBOX_SCHEMA_VERSION = OUTBOX_MIGRATIONS[OUTBOX_MIGRATIONS.length - 1]?.version ?? 0;

/** Brings the file to `target` (default: the newest this code knows); returns the version it found. */
export function migrateOutbox(db: Database.Database, clock: Clock, path: string, target = OUTBOX_SCHEMA_VERSION): number {
  const found = db.pragma('user_version', { simple: true }) as number;
  if (found > OUTBOX_SCHEMA_VERSION) {
    throw new FerryError(
      'FERRY_ERR_STORAGE',
      `outbox ${path} has schema version ${found}, written by a newer Ferry; this one knows up to ${OUTBOX_SCHEMA_VERSION}. ` +
        'Run the newer version, or move the file aside to start empty.',
      { path, found, known: OUTBOX_SCHEMA_VERSION },
    );
  }
  for (const migration of OUTBOX_MIGRATIONS) {
    if (migration.version <= found || migration.version > target) continue;
    db.transaction(() => {
      migration.up(db, clock);
      db.pragma(`user_version = ${migration.version}`);
    })();
  }
  return found;
}
