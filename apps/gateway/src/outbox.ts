// The outbox: every reading the gateway has acknowledged to a device stays here until the
// ingestor's end-to-end ack says the database has it. The Outbox seam and its SQLite implementation.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { FerryError } from '@ferry/protocol';
import type { DeviceReading, Reading } from '@ferry/protocol';
import { systemClock } from '@ferry/runtime';
import type { Clock } from '@ferry/runtime';

export interface OutboxEntry {
  readonly seq: number;
  readonly reading: Reading;
  /** Size of the stored reading (JSON without seq), in bytes. */
  readonly bytes: number;
}

export interface AppendResult {
  /** The sequence numbers given to the appended readings, in order. */
  readonly seqs: readonly number[];
  /** Rows the bound discarded to make room (oldest first); may include some just appended. */
  readonly droppedSeqs: readonly number[];
}

export interface OutboxStats {
  readonly depth: number;
  readonly bytes: number;
  /** When the gateway received the oldest reading still held (epoch ms), null when empty. */
  readonly oldestTs: number | null;
  /** Readings discarded by the outbox, by reason, since the outbox file was created. */
  readonly dropped: Readonly<Record<string, number>>;
}

export interface PeekOptions {
  readonly limit: number;
  /** Stop before this many stored bytes; the first row is returned even when it alone is larger. */
  readonly maxBytes: number;
  /** Seqs to skip: those in batches awaiting an ack. */
  readonly exclude: { has(seq: number): boolean };
  /** Bytes added per row when counting against maxBytes (what the envelope adds around each reading). */
  readonly rowOverhead?: number;
}

export interface Outbox {
  /** Stores readings in one transaction, durable (per the synchronous level) on return. */
  append(readings: readonly DeviceReading[]): AppendResult;
  /** The oldest rows not excluded, in seq order. */
  peek(options: PeekOptions): OutboxEntry[];
  /** Deletes rows by seq; unknown seqs are ignored. Returns how many rows went. */
  delete(seqs: readonly number[]): number;
  stats(): OutboxStats;
  /** Drops by reason and device, for operators. */
  droppedByDevice(): { reason: string; deviceId: string; count: number }[];
  /**
   * A batch id never handed out before by this outbox file, even across restarts, so an ack
   * queued for a previous run can never match a batch of this one.
   */
  nextBatchId(): number;
  close(): void;
}

export const OUTBOX_FULL = 'outbox_full';

export interface SqliteOutboxOptions {
  readonly path: string;
  /**
   * WAL mode in both cases; what a power cut (or OS crash) can lose:
   * - `normal`: the WAL is fsynced only at checkpoints, so transactions committed since the last
   *   checkpoint may roll back: readings already PUBACKed to devices can be lost, and acked rows
   *   can come back (they are resent and deduplicated by the ingestor). The file stays consistent.
   *   A crash of the process alone (kill -9) loses nothing.
   * - `full`: the WAL is fsynced at every commit, so nothing PUBACKed is lost, provided the
   *   storage honours fsync (cheap SD cards may not). Costs one fsync per group commit.
   */
  readonly synchronous?: 'normal' | 'full';
  /** Rows held at most; beyond it the oldest are dropped and counted as `outbox_full`. */
  readonly maxRows?: number;
  readonly clock?: Clock;
}

const SCHEMA_VERSION = 1;
/** Batch ids are reserved in blocks so that handing one out rarely writes. */
const BATCH_ID_BLOCK = 1024;

interface StateRow {
  depth: number;
  bytes: number;
  batch_id_reserved: number;
}

export function createSqliteOutbox(options: SqliteOutboxOptions): Outbox {
  const clock = options.clock ?? systemClock;
  const maxRows = options.maxRows ?? 5_000_000;
  let db: Database.Database;
  try {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    db = new Database(options.path);
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma('busy_timeout = 5000');
    migrate(db, clock);
  } catch (err) {
    throw new FerryError('FERRY_ERR_STORAGE', `outbox ${options.path} cannot be opened: ${(err as Error).message}`, { path: options.path }, { cause: err });
  }

  const insert = db.prepare<[string, number, number, number, string]>(
    'INSERT INTO outbox (device_id, ts, received_at, bytes, payload) VALUES (?, ?, ?, ?, ?)',
  );
  const deleteOne = db.prepare<[number], { bytes: number }>('DELETE FROM outbox WHERE seq = ? RETURNING bytes');
  const trimOldest = db.prepare<[number], { seq: number; device_id: string; bytes: number }>(
    'DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?) RETURNING seq, device_id, bytes',
  );
  const oldest = db.prepare<[], { received_at: number }>('SELECT received_at FROM outbox ORDER BY seq LIMIT 1');
  const scan = db.prepare<[], { seq: number; bytes: number; payload: string }>('SELECT seq, bytes, payload FROM outbox ORDER BY seq');
  const readState = db.prepare<[], StateRow>('SELECT depth, bytes, batch_id_reserved FROM outbox_state WHERE id = 1');
  const addState = db.prepare<[number, number]>('UPDATE outbox_state SET depth = depth + ?, bytes = bytes + ? WHERE id = 1');
  const reserveBatchIds = db.prepare<[number]>('UPDATE outbox_state SET batch_id_reserved = ? WHERE id = 1');
  const countDrop = db.prepare<[string, string, number]>(
    'INSERT INTO outbox_dropped (reason, device_id, count) VALUES (?, ?, ?) ON CONFLICT (reason, device_id) DO UPDATE SET count = count + excluded.count',
  );
  const readDrops = db.prepare<[], { reason: string; device_id: string; count: number }>(
    'SELECT reason, device_id, count FROM outbox_dropped ORDER BY reason, device_id',
  );

  // Depth and bytes live in outbox_state, updated in the same transactions as the rows, so
  // they are exact across restarts without a COUNT(*) over millions of rows; mirrored here.
  const initial = readState.get();
  if (!initial) throw new FerryError('FERRY_ERR_STORAGE', `outbox ${options.path} has no state row`);
  let depth = initial.depth;
  let bytes = initial.bytes;
  let oldestTs: number | null = oldest.get()?.received_at ?? null;
  const dropped: Record<string, number> = {};
  for (const row of readDrops.all()) dropped[row.reason] = (dropped[row.reason] ?? 0) + row.count;
  // Never reuse an id handed out by a previous run: start past everything reserved before.
  let batchIdNext = initial.batch_id_reserved;
  let batchIdReserved = initial.batch_id_reserved;

  const appendTx = db.transaction((readings: readonly DeviceReading[]): { seqs: number[]; droppedSeqs: number[]; addedBytes: number; trimmedBytes: number } => {
    const seqs: number[] = [];
    let addedBytes = 0;
    for (const reading of readings) {
      const payload = JSON.stringify(reading);
      const size = Buffer.byteLength(payload);
      const info = insert.run(reading.deviceId, reading.ts, reading.receivedAt, size, payload);
      seqs.push(Number(info.lastInsertRowid));
      addedBytes += size;
    }
    addState.run(readings.length, addedBytes);
    const droppedSeqs: number[] = [];
    let trimmedBytes = 0;
    const excess = depth + readings.length - maxRows;
    if (excess > 0) {
      const perDevice = new Map<string, number>();
      for (const row of trimOldest.all(excess)) {
        droppedSeqs.push(row.seq);
        trimmedBytes += row.bytes;
        perDevice.set(row.device_id, (perDevice.get(row.device_id) ?? 0) + 1);
      }
      for (const [deviceId, count] of perDevice) countDrop.run(OUTBOX_FULL, deviceId, count);
      addState.run(-droppedSeqs.length, -trimmedBytes);
    }
    return { seqs, droppedSeqs, addedBytes, trimmedBytes };
  });

  const deleteTx = db.transaction((seqs: readonly number[]): { rows: number; freed: number } => {
    let rows = 0;
    let freed = 0;
    for (const seq of seqs) {
      const row = deleteOne.get(seq);
      if (row) {
        rows += 1;
        freed += row.bytes;
      }
    }
    if (rows > 0) addState.run(-rows, -freed);
    return { rows, freed };
  });

  function storage<T>(what: string, fn: () => T): T {
    if (!db.open) throw new FerryError('FERRY_ERR_NOT_READY', `outbox ${options.path} is closed`);
    try {
      return fn();
    } catch (err) {
      if (err instanceof FerryError) throw err;
      throw new FerryError('FERRY_ERR_STORAGE', `outbox ${what} failed: ${(err as Error).message}`, { path: options.path }, { cause: err });
    }
  }

  return {
    append(readings) {
      if (readings.length === 0) return { seqs: [], droppedSeqs: [] };
      return storage('append', () => {
        const result = appendTx(readings);
        const wasEmpty = depth === 0;
        depth += readings.length - result.droppedSeqs.length;
        bytes += result.addedBytes - result.trimmedBytes;
        if (result.droppedSeqs.length > 0) {
          dropped[OUTBOX_FULL] = (dropped[OUTBOX_FULL] ?? 0) + result.droppedSeqs.length;
          oldestTs = oldest.get()?.received_at ?? null;
        } else if (wasEmpty) {
          oldestTs = readings[0]?.receivedAt ?? null;
        }
        return { seqs: result.seqs, droppedSeqs: result.droppedSeqs };
      });
    },
    peek({ limit, maxBytes, exclude, rowOverhead = 0 }) {
      return storage('peek', () => {
        const out: OutboxEntry[] = [];
        if (limit <= 0) return out;
        let total = 0;
        // Skips at most exclude.size rows: the in-flight ones are a bounded set.
        for (const row of scan.iterate()) {
          if (exclude.has(row.seq)) continue;
          const size = row.bytes + rowOverhead;
          if (out.length > 0 && total + size > maxBytes) break;
          const reading = { seq: row.seq, ...(JSON.parse(row.payload) as DeviceReading) };
          out.push({ seq: row.seq, reading, bytes: row.bytes });
          total += size;
          if (out.length >= limit) break;
        }
        return out;
      });
    },
    delete(seqs) {
      if (seqs.length === 0) return 0;
      return storage('delete', () => {
        const { rows, freed } = deleteTx(seqs);
        if (rows > 0) {
          depth -= rows;
          bytes -= freed;
          oldestTs = depth === 0 ? null : (oldest.get()?.received_at ?? null);
        }
        return rows;
      });
    },
    stats() {
      return { depth, bytes, oldestTs, dropped: { ...dropped } };
    },
    droppedByDevice() {
      return storage('droppedByDevice', () => readDrops.all().map((r) => ({ reason: r.reason, deviceId: r.device_id, count: r.count })));
    },
    nextBatchId() {
      return storage('nextBatchId', () => {
        if (batchIdNext >= batchIdReserved) {
          batchIdReserved = batchIdNext + BATCH_ID_BLOCK;
          reserveBatchIds.run(batchIdReserved);
        }
        return batchIdNext++;
      });
    },
    close() {
      if (db.open) db.close();
    },
  };
}

function migrate(db: Database.Database, clock: Clock): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new Error(`file has schema version ${version}, this Ferry knows up to ${SCHEMA_VERSION}`);
  }
  if (version === SCHEMA_VERSION) return;
  // A new outbox starts its seqs at the creation time in milliseconds x 1000 rather than at 1: if the
  // data directory is ever wiped, new readings still get seqs above those the ingestor has
  // already seen from this gateway, instead of being taken for duplicates and dropped.
  const firstSeq = Math.max(0, Math.floor(clock.now()) * 1000);
  db.transaction(() => {
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
    db.prepare("INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox', ? WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')").run(firstSeq);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}
