// The outbox: every reading the gateway has acknowledged to a device stays here until the
// ingestor's end-to-end ack says the database has it. The Outbox seam and its SQLite implementation.
import type Database from 'better-sqlite3';
import { FerryError } from '@ferry/protocol';
import type { DeviceReading, Reading } from '@ferry/protocol';
import { systemClock } from '@ferry/runtime';
import type { Clock } from '@ferry/runtime';
import { createDropLedger } from './drops.js';
import type { DropReason, DroppedRow, GapRecord } from './drops.js';
import { openOutboxFile } from './outbox-file.js';
import type { CorruptOutbox } from './outbox-file.js';
import { migrateOutbox } from './outbox-schema.js';

export interface OutboxEntry {
  readonly seq: number;
  readonly reading: Reading;
  /** Size of the stored reading (JSON without seq), in bytes. */
  readonly bytes: number;
}

export interface AppendResult {
  /** The sequence numbers given to the stored readings, in order: the first `seqs.length` readings passed. */
  readonly seqs: readonly number[];
  /** Rows the bounds discarded to make room or for age (oldest first); may include some just appended. */
  readonly droppedSeqs: readonly number[];
  /**
   * Readings not stored because the outbox is full under `whenFull: 'refuse-new'`: all of those
   * passed (a group is stored whole or not at all). Their devices must not be acknowledged.
   */
  readonly refused?: number;
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
  /** Only rows with a seq above this (a cursor: rows below it are known to be in flight). */
  readonly afterSeq?: number;
  /** Only rows with a seq at or below this (the end of a backlog being drained). */
  readonly upToSeq?: number;
}

export interface AppendOptions {
  /** Rows the bounds must not discard: they are in flight and may yet reach the database. */
  readonly inFlight?: { has(seq: number): boolean };
}

/** Edge-processing state of one series (device + metric), saved with the readings it produced. */
export interface SavedSeriesState {
  readonly deviceId: string;
  readonly metric: string;
  readonly state: string;
}

export interface AppendWithStateOptions extends AppendOptions {
  /**
   * Written in the same transaction as the readings, so the state and what it produced are
   * durable together; written even when `readings` is empty, never when the group is refused.
   */
  readonly pipelineState?: readonly SavedSeriesState[];
}

export interface Outbox {
  /** Stores readings in one transaction, durable (per the synchronous level) on return. */
  append(readings: readonly DeviceReading[], options?: AppendWithStateOptions): AppendResult;
  /** The oldest rows not excluded, in seq order. */
  peek(options: PeekOptions): OutboxEntry[];
  /** Deletes rows by seq; unknown seqs are ignored. Returns how many rows went. */
  delete(seqs: readonly number[]): number;
  /** Deletes rows and saves edge-processing state in one transaction (processing before the uplink). */
  settle(seqs: readonly number[], pipelineState: readonly SavedSeriesState[]): number;
  /** Every saved edge-processing state. */
  pipelineState(): SavedSeriesState[];
  /** Applies the age bound now (appends apply it too); returns the seqs dropped. */
  expire(options?: AppendOptions): readonly number[];
  stats(): OutboxStats;
  /** The highest seq given out by this file (a new file: the seq it starts after); null when unknown. */
  newestSeq(): number | null;
  /** Drops by reason and device, for operators. */
  droppedByDevice(): { reason: string; deviceId: string; count: number }[];
  /** Gap records naming what was dropped, most recently written first. */
  gaps(limit?: number): GapRecord[];
  /**
   * A batch id never handed out before by this outbox file, even across restarts, so an ack
   * queued for a previous run can never match a batch of this one.
   */
  nextBatchId(): number;
  /** Set when the file found at start was corrupt: where it went and what it held. */
  readonly corrupt: CorruptOutbox | undefined;
  close(): void;
}

export const OUTBOX_FULL = 'outbox_full';

/**
 * What a row costs on disk beyond its payload, counted against `maxBytes`: the rowid and five
 * columns, the ts index entry, and b-tree page slack (measured at about 60-70 bytes a row).
 */
export const OUTBOX_ROW_OVERHEAD_BYTES = 64;

export interface SqliteOutboxOptions {
  readonly path: string;
  /**
   * WAL mode in both cases; what a power cut (or OS crash) can lose is in docs/durability.md:
   * - `normal`: the WAL is fsynced only at checkpoints, so transactions committed since the last
   *   checkpoint may roll back: readings already PUBACKed to devices can be lost, and acked rows
   *   can come back (they are resent and deduplicated by the ingestor). The file stays consistent.
   *   A crash of the process alone (kill -9) loses nothing.
   * - `full`: the WAL is fsynced at every commit, so nothing PUBACKed is lost, provided the
   *   storage honours fsync (cheap SD cards may not). Costs one fsync per group commit.
   */
  readonly synchronous?: 'normal' | 'full';
  /** Rows held at most. */
  readonly maxRows?: number;
  /** Stored bytes held at most: payloads plus OUTBOX_ROW_OVERHEAD_BYTES a row. */
  readonly maxBytes?: number;
  /** Readings whose own timestamp is older than this are dropped (`outbox_age`); unset: no age bound. */
  readonly maxAgeMs?: number;
  /**
   * When a bound on rows or bytes is reached: `drop-oldest` discards the oldest rows (counted as
   * `outbox_full` / `outbox_bytes`); `refuse-new` stores nothing more, so devices are not
   * acknowledged and publish again later.
   */
  readonly whenFull?: 'drop-oldest' | 'refuse-new';
  readonly clock?: Clock;
}

interface StateRow {
  depth: number;
  bytes: number;
  batch_id_reserved: number;
}

interface Victim extends DroppedRow {
  readonly bytes: number;
}

/** Batch ids are reserved in blocks so that handing one out rarely writes. */
const BATCH_ID_BLOCK = 1024;
/** Rows read at a time when looking for the oldest rows to drop. */
const TRIM_CHUNK = 512;
const NO_SEQ_LIMIT = Number.MAX_SAFE_INTEGER;
const AGE_TRIM_PAGE = 20_000;
const AGE_TRIM_MAX = 100_000;
const nothingInFlight = { has: () => false };

export function createSqliteOutbox(options: SqliteOutboxOptions): Outbox {
  const clock = options.clock ?? systemClock;
  const maxRows = options.maxRows ?? 5_000_000;
  const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
  const maxAgeMs = options.maxAgeMs;
  const refuseNew = options.whenFull === 'refuse-new';
  const opened = openOutboxFile(options.path, options.synchronous ?? 'normal', clock.now());
  const db: Database.Database = opened.db;
  try {
    migrateOutbox(db, clock, options.path);
  } catch (err) {
    db.close();
    if (err instanceof FerryError) throw err;
    throw new FerryError('FERRY_ERR_STORAGE', `outbox ${options.path} cannot be migrated: ${(err as Error).message}`, { path: options.path }, { cause: err });
  }

  const insert = db.prepare<[string, number, number, number, string]>(
    'INSERT INTO outbox (device_id, ts, received_at, bytes, payload) VALUES (?, ?, ?, ?, ?)',
  );
  const deleteOne = db.prepare<[number], { bytes: number; device_id: string }>('DELETE FROM outbox WHERE seq = ? RETURNING bytes, device_id');
  const deleteVictim = db.prepare<[number]>('DELETE FROM outbox WHERE seq = ?');
  const oldestRows = db.prepare<[number, number], { seq: number; device_id: string; ts: number; bytes: number; device_seq: number | null }>(
    "SELECT seq, device_id, ts, bytes, json_extract(payload, '$.deviceSeq') AS device_seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
  );
  const agedRows = db.prepare<[number, number], { seq: number; device_id: string; ts: number; bytes: number; device_seq: number | null }>(
    "SELECT seq, device_id, ts, bytes, json_extract(payload, '$.deviceSeq') AS device_seq FROM outbox WHERE ts < ? ORDER BY ts LIMIT ?",
  );
  const oldest = db.prepare<[], { received_at: number }>('SELECT received_at FROM outbox ORDER BY seq LIMIT 1');
  const scan = db.prepare<[number, number], { seq: number; bytes: number; payload: string }>(
    'SELECT seq, bytes, payload FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq',
  );
  const readState = db.prepare<[], StateRow>('SELECT depth, bytes, batch_id_reserved FROM outbox_state WHERE id = 1');
  const writeState = db.prepare<[number, number]>('UPDATE outbox_state SET depth = ?, bytes = ? WHERE id = 1');
  const reserveBatchIds = db.prepare<[number]>('UPDATE outbox_state SET batch_id_reserved = ? WHERE id = 1');
  const readNewestSeq = db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'");
  const saveSeriesState = db.prepare<[string, string, string]>(
    'INSERT INTO pipeline_state (device_id, metric, state) VALUES (?, ?, ?) ON CONFLICT (device_id, metric) DO UPDATE SET state = excluded.state',
  );
  const readSeriesState = db.prepare<[], { device_id: string; metric: string; state: string }>('SELECT device_id, metric, state FROM pipeline_state');
  function savePipelineState(states: readonly SavedSeriesState[]): void {
    for (const s of states) saveSeriesState.run(s.deviceId, s.metric, s.state);
  }
  const ledger = createDropLedger(db);

  // Depth and bytes live in outbox_state, updated in the same transactions as the rows, so
  // they are exact across restarts without a COUNT(*) over millions of rows; mirrored here.
  const initial = readState.get();
  if (!initial) {
    db.close();
    throw new FerryError('FERRY_ERR_STORAGE', `outbox ${options.path} has no state row`, { path: options.path });
  }
  let depth = initial.depth;
  let bytes = initial.bytes;
  let oldestTs: number | null = oldest.get()?.received_at ?? null;
  let newest: number | null = readNewestSeq.get()?.seq ?? null;
  // Never reuse an id handed out by a previous run: start past everything reserved before.
  let batchIdNext = initial.batch_id_reserved;
  let batchIdReserved = initial.batch_id_reserved;

  if (opened.corrupt) {
    const lost = opened.corrupt;
    const now = Math.floor(clock.now());
    db.transaction(() => {
      if (lost.dropped) ledger.carryOver(lost.dropped);
      if (lost.lostByDevice) {
        for (const d of lost.lostByDevice) {
          ledger.recordLump('corrupt', d.deviceId, d.count, now, { firstSeq: d.firstSeq, lastSeq: d.lastSeq, firstTs: d.firstTs, lastTs: d.lastTs });
        }
      } else {
        ledger.recordLump('corrupt', null, lost.lostRows ?? null, now);
      }
    })();
  }

  /** What the bounds weigh: payload bytes plus the per-row cost. */
  function cost(rows: number, payloadBytes: number): number {
    return payloadBytes + rows * OUTBOX_ROW_OVERHEAD_BYTES;
  }

  function toVictim(row: { seq: number; device_id: string; ts: number; bytes: number; device_seq: number | null }): Victim {
    return { seq: row.seq, deviceId: row.device_id, ts: row.ts, bytes: row.bytes, deviceSeq: typeof row.device_seq === 'number' ? row.device_seq : null };
  }

  interface Totals {
    depth: number;
    bytes: number;
  }

  /** Drops every row older than the age bound, in flight excepted; inside a transaction. */
  function trimAged(totals: Totals, inFlight: { has(seq: number): boolean }, drops: Map<DropReason, Victim[]>): void {
    if (maxAgeMs === undefined) return;
    const cutoff = Math.floor(clock.now()) - maxAgeMs;
    // Pages of rows, oldest first; in-flight rows stay and come back in the next page, so a page
    // is made larger than any send window. At most AGE_TRIM_MAX a transaction keeps one
    // commit short after a long outage; the rest go at the next append or expire().
    let removed = 0;
    while (removed < AGE_TRIM_MAX) {
      const victims: Victim[] = [];
      for (const row of agedRows.all(cutoff, AGE_TRIM_PAGE)) {
        if (!inFlight.has(row.seq)) victims.push(toVictim(row));
      }
      if (victims.length === 0) return;
      remove(victims, 'outbox_age', totals, drops);
      removed += victims.length;
    }
  }

  /** Drops the oldest rows until the row and byte bounds hold, in flight excepted. */
  function trimOldest(totals: Totals, inFlight: { has(seq: number): boolean }, drops: Map<DropReason, Victim[]>): void {
    let after = -1;
    while (totals.depth > maxRows || cost(totals.depth, totals.bytes) > maxBytes) {
      const chunk = oldestRows.all(after, TRIM_CHUNK);
      if (chunk.length === 0) return;
      for (const row of chunk) {
        after = row.seq;
        if (inFlight.has(row.seq)) continue;
        const reason: DropReason = totals.depth > maxRows ? 'outbox_full' : 'outbox_bytes';
        remove([toVictim(row)], reason, totals, drops);
        if (totals.depth <= maxRows && cost(totals.depth, totals.bytes) <= maxBytes) return;
      }
    }
  }

  function remove(victims: readonly Victim[], reason: DropReason, totals: Totals, drops: Map<DropReason, Victim[]>): void {
    if (victims.length === 0) return;
    const list = drops.get(reason) ?? [];
    drops.set(reason, list);
    for (const victim of victims) {
      deleteVictim.run(victim.seq);
      totals.depth -= 1;
      totals.bytes -= victim.bytes;
      list.push(victim);
    }
  }

  /** Counts and names what was dropped, and returns the seqs in seq order. */
  function settleDrops(drops: Map<DropReason, Victim[]>): number[] {
    const seqs: number[] = [];
    const now = Math.floor(clock.now());
    for (const [reason, victims] of drops) {
      ledger.record(reason, victims, now);
      for (const v of victims) seqs.push(v.seq);
    }
    return seqs.sort((a, b) => a - b);
  }

  const appendTx = db.transaction(
    (
      readings: readonly DeviceReading[],
      inFlight: { has(seq: number): boolean },
      pipelineState: readonly SavedSeriesState[],
    ): { seqs: number[]; droppedSeqs: number[]; refused: number; totals: Totals } => {
      const totals: Totals = { depth, bytes };
      const drops = new Map<DropReason, Victim[]>();
      trimAged(totals, inFlight, drops);
      const payloads = readings.map((reading) => JSON.stringify(reading));
      let accepted = readings.length;
      if (refuseNew) {
        // All or nothing: a device message can hold several readings, and storing part of one
        // would store that part twice when the device publishes it again.
        const size = payloads.reduce((n, payload) => n + Buffer.byteLength(payload), 0);
        if (totals.depth + readings.length > maxRows || cost(totals.depth + readings.length, totals.bytes + size) > maxBytes) accepted = 0;
      }
      const seqs: number[] = [];
      for (let i = 0; i < accepted; i += 1) {
        const reading = readings[i];
        const payload = payloads[i];
        if (reading === undefined || payload === undefined) break;
        const size = Buffer.byteLength(payload);
        const info = insert.run(reading.deviceId, reading.ts, reading.receivedAt, size, payload);
        seqs.push(Number(info.lastInsertRowid));
        totals.depth += 1;
        totals.bytes += size;
      }
      if (!refuseNew) trimOldest(totals, inFlight, drops);
      const droppedSeqs = settleDrops(drops);
      writeState.run(totals.depth, totals.bytes);
      // A refused group was not processed as far as the devices know: they publish it again.
      if (seqs.length === readings.length) savePipelineState(pipelineState);
      return { seqs, droppedSeqs, refused: readings.length - seqs.length, totals };
    },
  );

  const expireTx = db.transaction((inFlight: { has(seq: number): boolean }): { droppedSeqs: number[]; totals: Totals } => {
    const totals: Totals = { depth, bytes };
    const drops = new Map<DropReason, Victim[]>();
    trimAged(totals, inFlight, drops);
    const droppedSeqs = settleDrops(drops);
    if (droppedSeqs.length > 0) writeState.run(totals.depth, totals.bytes);
    return { droppedSeqs, totals };
  });

  const settleTx = db.transaction((seqs: readonly number[], pipelineState: readonly SavedSeriesState[]): { rows: number; freed: number } => {
    const done = deleteTx(seqs);
    savePipelineState(pipelineState);
    return done;
  });

  const deleteTx = db.transaction((seqs: readonly number[]): { rows: number; freed: number } => {
    let rows = 0;
    let freed = 0;
    for (const seq of seqs) {
      const row = deleteOne.get(seq);
      if (row) {
        rows += 1;
        freed += row.bytes;
        ledger.delivered(row.device_id, seq);
      }
    }
    if (rows > 0) writeState.run(depth - rows, bytes - freed);
    return { rows, freed };
  });

  function storage<T>(what: string, fn: () => T): T {
    if (!db.open) throw new FerryError('FERRY_ERR_NOT_READY', `outbox ${options.path} is closed`);
    try {
      return fn();
    } catch (err) {
      if (err instanceof FerryError) throw err;
      const code = (err as { code?: unknown }).code;
      throw new FerryError(
        'FERRY_ERR_STORAGE',
        `outbox ${what} failed: ${(err as Error).message}`,
        { path: options.path, ...(typeof code === 'string' ? { sqlite: code } : {}) },
        { cause: err },
      );
    }
  }

  function afterDrops(droppedSeqs: readonly number[], totals: Totals): void {
    depth = totals.depth;
    bytes = totals.bytes;
    if (droppedSeqs.length > 0 || depth === 0) oldestTs = depth === 0 ? null : (oldest.get()?.received_at ?? null);
  }

  return {
    append(readings, appendOptions = {}) {
      const pipelineState = appendOptions.pipelineState ?? [];
      if (readings.length === 0) {
        if (pipelineState.length > 0) storage('append', () => db.transaction(savePipelineState)(pipelineState));
        return { seqs: [], droppedSeqs: [], refused: 0 };
      }
      return storage('append', () => {
        const wasEmpty = depth === 0;
        const result = appendTx(readings, appendOptions.inFlight ?? nothingInFlight, pipelineState);
        afterDrops(result.droppedSeqs, result.totals);
        const last = result.seqs[result.seqs.length - 1];
        if (last !== undefined) newest = last;
        if (result.droppedSeqs.length === 0 && wasEmpty && result.seqs.length > 0) oldestTs = readings[0]?.receivedAt ?? null;
        return { seqs: result.seqs, droppedSeqs: result.droppedSeqs, refused: result.refused };
      });
    },
    peek({ limit, maxBytes: budget, exclude, rowOverhead = 0, afterSeq = -1, upToSeq = NO_SEQ_LIMIT }) {
      return storage('peek', () => {
        const out: OutboxEntry[] = [];
        if (limit <= 0) return out;
        let total = 0;
        // Starts at the caller's cursor, so rows already handed out are not read again; the
        // in-flight rows above it are a bounded set.
        for (const row of scan.iterate(afterSeq, upToSeq)) {
          if (exclude.has(row.seq)) continue;
          const size = row.bytes + rowOverhead;
          if (out.length > 0 && total + size > budget) break;
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
    settle(seqs, pipelineState) {
      if (seqs.length === 0 && pipelineState.length === 0) return 0;
      return storage('settle', () => {
        const { rows, freed } = settleTx(seqs, pipelineState);
        if (rows > 0) {
          depth -= rows;
          bytes -= freed;
          oldestTs = depth === 0 ? null : (oldest.get()?.received_at ?? null);
        }
        return rows;
      });
    },
    pipelineState() {
      return storage('pipelineState', () => readSeriesState.all().map((r) => ({ deviceId: r.device_id, metric: r.metric, state: r.state })));
    },
    expire(expireOptions = {}) {
      if (maxAgeMs === undefined) return [];
      return storage('expire', () => {
        const result = expireTx(expireOptions.inFlight ?? nothingInFlight);
        afterDrops(result.droppedSeqs, result.totals);
        return result.droppedSeqs;
      });
    },
    stats() {
      return { depth, bytes, oldestTs, dropped: ledger.totals() };
    },
    newestSeq() {
      return newest;
    },
    droppedByDevice() {
      return storage('droppedByDevice', () => ledger.byDevice());
    },
    gaps(limit = 1000) {
      return storage('gaps', () => ledger.gaps(limit));
    },
    nextBatchId() {
      return storage('nextBatchId', () => {
        if (batchIdNext >= batchIdReserved) {
          reserveBatchIds.run(batchIdNext + BATCH_ID_BLOCK);
          batchIdReserved = batchIdNext + BATCH_ID_BLOCK;
        }
        return batchIdNext++;
      });
    },
    corrupt: opened.corrupt,
    close() {
      if (db.open) db.close();
    },
  };
}
