// Opening the outbox file: pragmas, an integrity check, and what to do with a corrupt file (a
// torn write, a bad SD card). A corrupt file is moved aside for inspection, never deleted, and
// the gateway goes on with a fresh outbox instead of crash-looping; what it held is counted.
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { FerryError } from '@ferry/protocol';

/** What a corrupt outbox held, as far as it could still be read. */
export interface CorruptOutbox {
  /** Where the file (and its -wal and -shm) now are. */
  readonly asidePath: string;
  /** Why it was judged corrupt. */
  readonly reason: string;
  /** Readings lost, per device, when the rows could still be counted; undefined when not. */
  readonly lostByDevice?: readonly { deviceId: string; count: number; firstSeq: number; lastSeq: number; firstTs: number; lastTs: number }[];
  /** The file's own running total, when only that could be read. */
  readonly lostRows?: number;
  /** Drop counts the old file held, carried over so counts survive the move. */
  readonly dropped?: readonly { reason: string; deviceId: string; count: number }[];
}

export interface OpenedOutboxFile {
  readonly db: Database.Database;
  /** Set when the file at the path was corrupt and a fresh one was opened in its place. */
  readonly corrupt?: CorruptOutbox;
}

/** SQLite result codes that mean the file's content cannot be trusted (not: disk full, no permission). */
function isCorruption(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^SQLITE_(CORRUPT|NOTADB)/.test(code);
}

/**
 * The outbox connection's page cache, KiB: SQLite's own default. better-sqlite3 is built with
 * 16 MiB, which a quick_check of a large backlog fills and keeps: on a Pi that was 14 MB of the
 * gateway's memory for nothing (appends and reads of the oldest rows touch few pages).
 */
export const GATEWAY_SQLITE_CACHE_KIB = 2048;

/** SQLite's default: the WAL is checkpointed once it holds this many pages (4 MiB at 4 KiB pages). */
export const DEFAULT_WAL_AUTOCHECKPOINT_PAGES = 1000;

function configure(db: Database.Database, synchronous: 'normal' | 'full', walPages: number): void {
  db.pragma(`cache_size = -${GATEWAY_SQLITE_CACHE_KIB}`);
  db.pragma('journal_mode = WAL');
  db.pragma(`wal_autocheckpoint = ${walPages}`);
  db.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
  db.pragma('busy_timeout = 5000');
}

/** Throws a corruption-coded error when quick_check finds anything. */
function quickCheck(db: Database.Database): void {
  // quick_check reads every page but skips the index-content cross-checks of integrity_check:
  // it finds torn pages and broken b-trees in about the time of one full read of the file.
  const rows = db.pragma('quick_check') as { quick_check: string }[];
  const findings = rows.map((r) => r.quick_check).filter((m) => m !== 'ok');
  if (findings.length > 0) {
    throw Object.assign(new Error(`quick_check: ${findings.slice(0, 3).join('; ')}`), { code: 'SQLITE_CORRUPT_QUICK_CHECK' });
  }
}

/** Reads what it can from a corrupt file; every part is optional. */
function salvage(db: Database.Database): Pick<CorruptOutbox, 'lostByDevice' | 'lostRows' | 'dropped'> {
  const out: { -readonly [K in 'lostByDevice' | 'lostRows' | 'dropped']?: NonNullable<CorruptOutbox[K]> } = {};
  try {
    out.lostByDevice = db
      .prepare<[], { device_id: string; n: number; first_seq: number; last_seq: number; first_ts: number; last_ts: number }>(
        'SELECT device_id, count(*) AS n, min(seq) AS first_seq, max(seq) AS last_seq, min(ts) AS first_ts, max(ts) AS last_ts FROM outbox GROUP BY device_id',
      )
      .all()
      .map((r) => ({ deviceId: r.device_id, count: r.n, firstSeq: r.first_seq, lastSeq: r.last_seq, firstTs: r.first_ts, lastTs: r.last_ts }));
  } catch {
    try {
      const state = db.prepare<[], { depth: number }>('SELECT depth FROM outbox_state WHERE id = 1').get();
      if (state) out.lostRows = state.depth;
    } catch {
      // Nothing readable: the loss is recorded as of unknown size.
    }
  }
  try {
    out.dropped = db
      .prepare<[], { reason: string; device_id: string; count: number }>('SELECT reason, device_id, count FROM outbox_dropped')
      .all()
      .map((r) => ({ reason: r.reason, deviceId: r.device_id, count: r.count }));
  } catch {
    // The old counts are lost with the file; the new file counts from here.
  }
  return out;
}

function moveAside(path: string, now: number): string {
  const asidePath = `${path}.corrupt-${Math.floor(now)}`;
  // The -wal must travel with its database: left behind, SQLite would replay it into the fresh file.
  for (const suffix of ['', '-wal', '-shm']) {
    if (existsSync(path + suffix)) renameSync(path + suffix, asidePath + suffix);
  }
  return asidePath;
}

/**
 * Opens (creating when missing) the outbox database in WAL mode at the given synchronous level.
 * A file that is not a database or fails quick_check is moved to `<path>.corrupt-<epoch ms>`
 * and a fresh file opened; other failures (no permission, disk full) throw FERRY_ERR_STORAGE.
 */
export function openOutboxFile(path: string, synchronous: 'normal' | 'full', now: number, walPages = DEFAULT_WAL_AUTOCHECKPOINT_PAGES): OpenedOutboxFile {
  const inMemory = path === ':memory:';
  if (!inMemory) mkdirSync(dirname(path), { recursive: true });
  let db: Database.Database | undefined;
  try {
    db = new Database(path);
    configure(db, synchronous, walPages);
    if (!inMemory) quickCheck(db);
    return { db };
  } catch (err) {
    if (!isCorruption(err) || inMemory) {
      if (db?.open) db.close();
      throw new FerryError('FERRY_ERR_STORAGE', `outbox ${path} cannot be opened: ${(err as Error).message}`, { path }, { cause: err });
    }
    const salvaged = db?.open ? salvage(db) : {};
    if (db?.open) db.close();
    let asidePath: string;
    try {
      asidePath = moveAside(path, now);
    } catch (moveErr) {
      // Never wipe a file we could not keep: without the move, refusing to start is the safe choice.
      throw new FerryError(
        'FERRY_ERR_STORAGE',
        `outbox ${path} is corrupt (${(err as Error).message}) and could not be moved aside: ${(moveErr as Error).message}`,
        { path },
        { cause: moveErr },
      );
    }
    try {
      const fresh = new Database(path);
      configure(fresh, synchronous, walPages);
      return { db: fresh, corrupt: { asidePath, reason: (err as Error).message, ...salvaged } };
    } catch (freshErr) {
      throw new FerryError('FERRY_ERR_STORAGE', `a fresh outbox ${path} cannot be opened: ${(freshErr as Error).message}`, { path }, { cause: freshErr });
    }
  }
}
