// Opening a SQLite file the way every Ferry store does: WAL, a chosen synchronous level, a busy
// timeout for the CLI reading while a service writes, and one typed error naming the file.
//
// synchronous, in WAL mode:
// - 'normal': the WAL is fsynced at checkpoints only. A process crash (kill -9) loses nothing
//   committed; a power cut may lose the last commits.
// - 'full': the WAL is fsynced at every commit. A power cut loses nothing committed (if the storage
//   honours fsync), at the cost of one fsync per transaction.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { FerryError, isFerryError } from '@ferry/protocol';

export type SqliteSynchronous = 'normal' | 'full';

export interface SqliteOpenOptions {
  /** A file path (its directory is created) or ':memory:'. */
  readonly path: string;
  /** What the file holds, for the error message: "dedupe store", "dead-letter store". */
  readonly what: string;
  readonly synchronous: SqliteSynchronous;
  /** How long a write waits for another connection's lock, ms. Default 5000. */
  readonly busyTimeoutMs?: number;
  /**
   * Page cache of this connection, KiB. Default: better-sqlite3's build default (16 MiB), right for
   * the cloud services; a gateway on a Pi passes a small one (every connection can fill its own).
   */
  readonly cacheKiB?: number;
  /** Schema and migrations, run under the same error handling; the file is closed if it throws. */
  readonly setup?: (db: Database.Database) => void;
}

/** Opens (creating if need be) a SQLite file; any failure is a FERRY_ERR_STORAGE naming it. */
export function openSqlite(options: SqliteOpenOptions): Database.Database {
  let db: Database.Database | undefined;
  try {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    db = new Database(options.path, { timeout: options.busyTimeoutMs ?? 5000 });
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    if (options.cacheKiB !== undefined) db.pragma(`cache_size = -${Math.max(1, Math.floor(options.cacheKiB))}`);
    options.setup?.(db);
    return db;
  } catch (err) {
    db?.close();
    if (isFerryError(err)) throw err;
    throw new FerryError('FERRY_ERR_STORAGE', `${options.what} ${options.path} cannot be opened: ${(err as Error).message}`, { path: options.path }, { cause: err });
  }
}
