// The outbox: every reading the gateway has acknowledged to a device stays here until the
// ingestor's end-to-end ack says the database has it. The Outbox seam and its SQLite implementation.
import { statSync } from 'node:fs';
import type Database from 'better-sqlite3';
import { defaultLimits, FerryError } from '@ferry/protocol';
import type { DeviceReading, Reading } from '@ferry/protocol';
import { isDiskFull, systemClock } from '@ferry/runtime';
import type { Clock } from '@ferry/runtime';
import { intervalStart, isSummary, SentRanges, SeriesSummary, summaryKey } from './compact.js';
import type { SummaryLimits } from './compact.js';
import { createCompactionLedger, createDropLedger } from './drops.js';
import type { CompactedSpan, DropReason, DroppedRow, GapRecord } from './drops.js';
import { DEFAULT_WAL_AUTOCHECKPOINT_PAGES, openOutboxFile } from './outbox-file.js';
import type { CorruptOutbox } from './outbox-file.js';
import { migrateOutbox } from './outbox-schema.js';
import { RecentRows } from './outbox-recent.js';

export interface OutboxEntry {
  readonly seq: number;
  /**
   * The reading as stored: its JSON without the seq, exactly as the uplink sends it once the seq
   * is put in front (batch-encode.ts), so the sender never parses what the gateway wrote itself.
   */
  readonly json: string;
  /** The reading with its seq, parsed from `json` at each read: for edge processing and tests. */
  readonly reading: Reading;
  /** Size of the stored reading (JSON without seq), in bytes. */
  readonly bytes: number;
}

/** A row as peek() hands it out: the reading is parsed only when someone asks for it. */
class StoredReading implements OutboxEntry {
  constructor(
    readonly seq: number,
    readonly bytes: number,
    readonly json: string,
  ) {}

  get reading(): Reading {
    return { seq: this.seq, ...(JSON.parse(this.json) as DeviceReading) };
  }
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
  /** What compaction did in this append (`whenFull: 'compact'`); absent when it did nothing. */
  readonly compacted?: CompactionResult;
}

/** One compaction: readings replaced by summaries, and the span of their own times. */
export interface CompactionResult {
  readonly readings: number;
  readonly summaries: number;
  readonly firstTs: number;
  readonly lastTs: number;
}

export interface OutboxStats {
  readonly depth: number;
  readonly bytes: number;
  /** When the gateway received the oldest reading still held (epoch ms), null when empty. */
  readonly oldestTs: number | null;
  /** Readings discarded by the outbox, by reason, since the outbox file was created. */
  readonly dropped: Readonly<Record<string, number>>;
  /** Readings replaced by summaries, and summaries written, since the outbox file was created. */
  readonly compacted?: { readonly readings: number; readonly summaries: number };
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
  /**
   * The oldest rows not excluded, in seq order. With `whenFull: 'compact'` the rows returned are
   * remembered (in the file) as possibly sent, and never compacted.
   */
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
  /** Per device, what compaction replaced by summaries; most recently updated first. */
  compactedByDevice(limit?: number): CompactedSpan[];
  /**
   * A batch id never handed out before by this outbox file, even across restarts, so an ack
   * queued for a previous run can never match a batch of this one.
   */
  nextBatchId(): number;
  /** Set when the file found at start was corrupt: where it went and what it held. */
  readonly corrupt: CorruptOutbox | undefined;
  /** The byte bound from now on (`maxBytes: auto` follows the disk); applied at the next append. */
  setMaxBytes(maxBytes: number): void;
  /** How big the file is, and how much of it holds rows (the rest SQLite reuses). */
  fileUsage(): OutboxFileUsage;
  close(): void;
}

export interface OutboxFileUsage {
  /** The database's pages, bytes. */
  readonly fileBytes: number;
  /** Of those, the pages not on the free list. */
  readonly usedFileBytes: number;
  /** The WAL file as it is now (it keeps the largest size it reached). */
  readonly walBytes: number;
  /** What the WAL grows to between checkpoints: the autocheckpoint pages with their frame headers. */
  readonly walLimitBytes: number;
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
  /** Stored bytes held at most: payloads plus OUTBOX_ROW_OVERHEAD_BYTES a row (setMaxBytes changes it). */
  readonly maxBytes?: number;
  /**
   * Called when a write the drain needs (deleting acked rows, settling, expiring, reserving batch
   * ids) fails because the disk is full; returns true when it freed space (disk-space.ts releases
   * its reserve), and the write is tried once more. Appends never use it: new readings are refused
   * on a full disk, the drain is not.
   */
  readonly onDiskFull?: () => boolean;
  /**
   * The WAL is checkpointed once it holds this many pages (SQLite's default 1000, 4 MiB). The WAL
   * keeps the size it reached, so on a small disk the gateway asks for less (disk-space.ts).
   */
  readonly walAutocheckpointPages?: number;
  /**
   * Readings the gateway has held longer than this (from their receive time) are dropped
   * (`outbox_age`); unset: no age bound. A device's own time is not judged here: a backfill or a
   * wrong device clock is the validation limits' business (`maxPastAgeMs`, `maxFutureSkewMs`).
   */
  readonly maxAgeMs?: number;
  /**
   * When a bound on rows or bytes is reached: `drop-oldest` discards the oldest rows (counted as
   * `outbox_full` / `outbox_bytes`); `refuse-new` stores nothing more, so devices are not
   * acknowledged and publish again later; `compact` folds the oldest rows never handed to the
   * sender into one summary per series and interval (compact.ts), and drops the oldest only when
   * that cannot free enough.
   */
  readonly whenFull?: 'drop-oldest' | 'refuse-new' | 'compact';
  /** Interval of a compaction summary, in ms (default one minute). */
  readonly compactIntervalMs?: number;
  /** Limits a summary must pass at the ingestor (default: the protocol's defaults). */
  readonly summaryLimits?: SummaryLimits;
  /** Just-committed rows peek() may serve from memory, at most (default RECENT_MAX_ROWS; tests set it small). */
  readonly recentRows?: number;
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

interface VictimRow {
  seq: number;
  device_id: string;
  ts: number;
  bytes: number;
  device_seq: number | null;
  readings: number;
}

/** A summary being gathered by a compaction, with what writing it would free. */
interface CompactionGroup {
  readonly summary: SeriesSummary;
  /** Stored bytes of the rows folded in. */
  rawBytes: number;
  /** Bounded cost freed by writing it (rows' per-row cost included); counted only when positive. */
  saved: number;
  /** Rows freed by writing it; 0 while it would not pay. */
  rows: number;
}

/**
 * A group commit inserts its rows with multi-row statements of these sizes, largest first (one
 * statement per 64 rows costs about 0.6 of what a statement per row does).
 */
const INSERT_CHUNKS = [64, 16, 4, 1] as const;
/** Columns bound per inserted row. */
const INSERT_COLUMNS = 5;
/** Rows peek() reads beyond what the byte budget is expected to take, so one read is nearly always enough. */
const PEEK_SLACK_ROWS = 16;
/**
 * The newest committed rows peek() serves from memory (outbox-recent.ts): a few batches' worth,
 * enough for a sender that keeps up; one that falls behind reads the file as before.
 */
const RECENT_MAX_ROWS = 4096;
const RECENT_MAX_BYTES = 1024 * 1024;
/** Batch ids are reserved in blocks so that handing one out rarely writes. */
const BATCH_ID_BLOCK = 1024;
/** Rows read at a time when looking for the oldest rows to drop. */
const TRIM_CHUNK = 512;
const NO_SEQ_LIMIT = Number.MAX_SAFE_INTEGER;
const WAL_FRAME_HEADER_BYTES = 24;
const AGE_TRIM_PAGE = 20_000;
const AGE_TRIM_MAX = 100_000;
const nothingInFlight = { has: () => false };
/**
 * A compaction frees this share of the bound beyond what it must, so that compactions come in
 * episodes rather than at every commit, and an interval is rarely split between two summaries.
 */
export const COMPACTION_HEADROOM = 0.1;
/** Chunks read past the point where enough is freed, to finish the intervals already begun. */
const COMPACT_FINISH_CHUNKS = 2;
/** Readings folded in one transaction, at most, once the bound holds. */
const COMPACT_EPISODE_MAX = 50_000;
/** SQL for how many readings a row stands for: a compaction summary its count (compact.ts). */
const SUMMARY_WEIGHT =
  "CASE WHEN EXISTS (SELECT 1 FROM json_each(payload, '$.flags') WHERE value = 'compacted') THEN coalesce(json_extract(payload, '$.metrics.ferry_compacted'), 1) ELSE 1 END";

export function createSqliteOutbox(options: SqliteOutboxOptions): Outbox {
  const clock = options.clock ?? systemClock;
  const maxRows = options.maxRows ?? 5_000_000;
  let maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
  const maxAgeMs = options.maxAgeMs;
  const refuseNew = options.whenFull === 'refuse-new';
  const compact = options.whenFull === 'compact';
  const compactIntervalMs = options.compactIntervalMs ?? 60_000;
  const summaryLimits: SummaryLimits = options.summaryLimits ?? {
    maxMetricsPerReading: defaultLimits.maxMetricsPerReading,
    maxNameLength: defaultLimits.maxNameLength,
  };
  // Only a file that may hold summaries pays for weighing the rows it drops.
  const weight = compact ? SUMMARY_WEIGHT : '1';
  const walPages = options.walAutocheckpointPages ?? DEFAULT_WAL_AUTOCHECKPOINT_PAGES;
  const opened = openOutboxFile(options.path, options.synchronous ?? 'full', clock.now(), walPages);
  const db: Database.Database = opened.db;
  try {
    migrateOutbox(db, clock, options.path);
  } catch (err) {
    db.close();
    if (err instanceof FerryError) throw err;
    throw new FerryError('FERRY_ERR_STORAGE', `outbox ${options.path} cannot be migrated: ${(err as Error).message}`, { path: options.path }, { cause: err });
  }

  const inserts = new Map(
    INSERT_CHUNKS.map((rows) => [
      rows,
      db.prepare<[(string | number)[]]>(
        `INSERT INTO outbox (device_id, ts, received_at, bytes, payload) VALUES ${Array.from({ length: rows }, () => '(?, ?, ?, ?, ?)').join(', ')}`,
      ),
    ]),
  );
  // Acked rows go by ranges of consecutive seqs; their device and seq are read back only while a
  // gap is open (the drop ledger closes it on delivery).
  const deleteRange = db.prepare<[number, number], number>('DELETE FROM outbox WHERE seq >= ? AND seq <= ? RETURNING bytes').pluck(true);
  const deleteRangeNamed = db.prepare<[number, number], { seq: number; bytes: number; device_id: string }>(
    'DELETE FROM outbox WHERE seq >= ? AND seq <= ? RETURNING seq, bytes, device_id',
  );
  const deleteVictim = db.prepare<[number]>('DELETE FROM outbox WHERE seq = ?');
  const oldestRows = db.prepare<[number, number], VictimRow>(
    `SELECT seq, device_id, ts, bytes, json_extract(payload, '$.deviceSeq') AS device_seq, ${weight} AS readings FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?`,
  );
  const agedRows = db.prepare<[number, number], VictimRow>(
    `SELECT seq, device_id, ts, bytes, json_extract(payload, '$.deviceSeq') AS device_seq, ${weight} AS readings FROM outbox WHERE received_at < ? ORDER BY received_at LIMIT ?`,
  );
  const compactRows = db.prepare<[number, number], { seq: number; bytes: number; payload: string }>(
    'SELECT seq, bytes, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?',
  );
  const writeSummary = db.prepare<[number, number, number, string, number]>('UPDATE outbox SET ts = ?, received_at = ?, bytes = ?, payload = ? WHERE seq = ?');
  const oldestSeq = db.prepare<[], { seq: number }>('SELECT seq FROM outbox ORDER BY seq LIMIT 1');
  const markSent = db.prepare<[number, number]>(
    'INSERT INTO outbox_sent (first_seq, last_seq) VALUES (?, ?) ON CONFLICT (first_seq) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)',
  );
  const readSent = db.prepare<[], { first_seq: number; last_seq: number }>('SELECT first_seq, last_seq FROM outbox_sent WHERE first_seq >= 0');
  const forgetSent = db.prepare<[number]>('DELETE FROM outbox_sent WHERE last_seq < ? AND first_seq >= 0');
  // A range no seq falls in, present while every hand-out to the sender has been recorded.
  const hasSentinel = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM outbox_sent WHERE first_seq = -1');
  const writeSentinel = db.prepare('INSERT OR IGNORE INTO outbox_sent (first_seq, last_seq) VALUES (-1, -1)');
  const dropSentinel = db.prepare('DELETE FROM outbox_sent WHERE first_seq = -1');
  const oldest = db.prepare<[], { received_at: number }>('SELECT received_at FROM outbox ORDER BY seq LIMIT 1');
  const oldestReceived = db.prepare<[], number>('SELECT received_at FROM outbox ORDER BY received_at LIMIT 1').pluck(true);
  const scan = db
    .prepare<[number, number, number], [number, number, string]>('SELECT seq, bytes, payload FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?')
    .raw(true);
  const readState = db.prepare<[], StateRow>('SELECT depth, bytes, batch_id_reserved FROM outbox_state WHERE id = 1');
  const writeState = db.prepare<[number, number]>('UPDATE outbox_state SET depth = ?, bytes = ? WHERE id = 1');
  const reserveBatchIds = db.prepare<[number]>('UPDATE outbox_state SET batch_id_reserved = ? WHERE id = 1');
  const readPageSize = db.prepare<[], { page_size: number }>('PRAGMA page_size');
  const readPageCount = db.prepare<[], { page_count: number }>('PRAGMA page_count');
  const readFreelist = db.prepare<[], { freelist_count: number }>('PRAGMA freelist_count');
  const readNewestSeq = db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'");
  const saveSeriesState = db.prepare<[string, string, string]>(
    'INSERT INTO pipeline_state (device_id, metric, state) VALUES (?, ?, ?) ON CONFLICT (device_id, metric) DO UPDATE SET state = excluded.state',
  );
  const readSeriesState = db.prepare<[], { device_id: string; metric: string; state: string }>('SELECT device_id, metric, state FROM pipeline_state');
  function savePipelineState(states: readonly SavedSeriesState[]): void {
    for (const s of states) saveSeriesState.run(s.deviceId, s.metric, s.state);
  }
  const ledger = createDropLedger(db);
  const compactions = createCompactionLedger(db);

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
  /**
   * No row was received before this (epoch ms): the oldest receive time, read when an age trim
   * found nothing to drop, lowered by every receive time written since. Until the cutoff passes
   * it the age trim has nothing to look for, and group commits skip its query.
   */
  let receivedFloor = Number.NEGATIVE_INFINITY;
  /** The rows committed last, as stored, for peek(); it is told of every row removed or rewritten. */
  const recent = new RecentRows(newest ?? -1, options.recentRows ?? RECENT_MAX_ROWS, RECENT_MAX_BYTES, (seq, size, json) => new StoredReading(seq, size, json));
  // Never reuse an id handed out by a previous run: start past everything reserved before.
  let batchIdNext = initial.batch_id_reserved;
  let batchIdReserved = initial.batch_id_reserved;
  /** Rows handed to the sender, this run or an earlier one: never compacted. */
  const sent = new SentRanges();
  /** Rows at or below this seq can never be compacted (sent, or summaries): compaction scans start here. */
  let compactScanFloor = -1;
  /** After a compaction that could not free enough, the next waits for rows above this seq. */
  let compactRetryAfterSeq = -1;
  if (compact) {
    db.transaction(() => {
      // Ranges below the oldest row name nothing any more.
      const low = oldestSeq.get()?.seq;
      forgetSent.run(low ?? NO_SEQ_LIMIT);
      // Under another policy hand-outs were not recorded: every row already here may have been sent.
      if ((hasSentinel.get()?.n ?? 0) === 0) {
        if (low !== undefined && newest !== null) markSent.run(low, newest);
        writeSentinel.run();
      }
    })();
    for (const r of readSent.all()) sent.add(r.first_seq, r.last_seq);
  } else {
    // From now on hand-outs are not recorded: a later run under 'compact' must not trust the ranges.
    dropSentinel.run();
  }

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

  function toVictim(row: VictimRow): Victim {
    return {
      seq: row.seq,
      deviceId: row.device_id,
      ts: row.ts,
      bytes: row.bytes,
      deviceSeq: typeof row.device_seq === 'number' ? row.device_seq : null,
      ...(row.readings !== 1 && typeof row.readings === 'number' ? { readings: row.readings } : {}),
    };
  }

  interface Totals {
    depth: number;
    bytes: number;
  }

  /** Drops every row held longer than the age bound (by receive time), in flight excepted; inside a transaction. */
  function trimAged(totals: Totals, inFlight: { has(seq: number): boolean }, drops: Map<DropReason, Victim[]>): void {
    if (maxAgeMs === undefined) return;
    const cutoff = Math.floor(clock.now()) - maxAgeMs;
    if (cutoff <= receivedFloor) return;
    // Pages of rows, oldest first; in-flight rows stay and come back in the next page, so a page
    // is made larger than any send window. At most AGE_TRIM_MAX a transaction keeps one
    // commit short after a long outage; the rest go at the next append or expire().
    let removed = 0;
    while (removed < AGE_TRIM_MAX) {
      const victims: Victim[] = [];
      const aged = agedRows.all(cutoff, AGE_TRIM_PAGE);
      // Only when this trim removed nothing: a rollback would bring back what it removed.
      if (aged.length === 0 && removed === 0) receivedFloor = oldestReceived.get() ?? Number.POSITIVE_INFINITY;
      for (const row of aged) {
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

  function overBound(totals: Totals): boolean {
    return totals.depth > maxRows || cost(totals.depth, totals.bytes) > maxBytes;
  }

  /**
   * `whenFull: 'compact'`, inside the append transaction: while a bound is exceeded, folds the
   * oldest rows that were never handed to the sender (not in flight, not in `sent`) and are not
   * summaries already into one summary per series and interval, down to COMPACTION_HEADROOM below
   * the bounds when there is that much to fold. trimOldest then drops what is still too much.
   *
   * The summary takes the seq of the oldest row it replaces, updated in place, and the other rows
   * go. Reusing that seq is safe because the row was never handed to the sender, so the ingestor
   * cannot have seen it (no dedupe conflict) and none of the rows can be in the database (nothing
   * counted twice); and it keeps the summary where its readings were in seq order, so it goes
   * upstream before every later reading of its device, as they would have. A fresh seq would put
   * it after them.
   */
  function compactOldest(totals: Totals, inFlight: { has(seq: number): boolean }, newestSeq: number): CompactionResult | undefined {
    if (!overBound(totals) || newestSeq <= compactRetryAfterSeq) return undefined;
    const targetRows = maxRows - Math.floor(maxRows * COMPACTION_HEADROOM);
    const targetCost = Number.isFinite(maxBytes) ? maxBytes - Math.floor(maxBytes * COMPACTION_HEADROOM) : maxBytes;
    const groups = new Map<string, CompactionGroup>();
    let freedRows = 0;
    let freedCost = 0;
    let enough = false;
    /** Once enough is freed: the end of the newest interval begun; rows past it are not read. */
    let horizon = -Infinity;
    let finishing = 0;
    let floorMoving = true;
    let folded = 0;
    let after = compactScanFloor;
    for (;;) {
      const chunk = compactRows.all(after, TRIM_CHUNK);
      if (chunk.length === 0) {
        // Read to the end without freeing enough: what is there does not fold usefully (one
        // reading an interval, in flight...). Reading it all again at every commit would cost
        // more than it frees: the next try waits until a share of the outbox is new rows.
        if (!enough) compactRetryAfterSeq = after + Math.max(1, Math.floor(totals.depth * COMPACTION_HEADROOM));
        break;
      }
      const touched = new Set<CompactionGroup>();
      let stop = false;
      for (const row of chunk) {
        after = row.seq;
        if (sent.has(row.seq)) {
          if (floorMoving) compactScanFloor = row.seq;
          continue;
        }
        if (inFlight.has(row.seq)) {
          floorMoving = false;
          continue;
        }
        const reading = JSON.parse(row.payload) as DeviceReading;
        if (isSummary(reading)) {
          if (floorMoving) compactScanFloor = row.seq;
          continue;
        }
        floorMoving = false;
        const key = summaryKey(reading, compactIntervalMs);
        let group = groups.get(key);
        if (!group) {
          // Past the bound's needs only intervals already begun are finished, so that an
          // interval is summarised whole rather than split between this episode and the next.
          if (enough) {
            if (reading.ts >= horizon) {
              stop = true;
              break;
            }
            continue;
          }
          group = { summary: new SeriesSummary(reading, compactIntervalMs, summaryLimits), rawBytes: 0, saved: 0, rows: 0 };
          groups.set(key, group);
          horizon = Math.max(horizon, intervalStart(reading.ts, compactIntervalMs) + compactIntervalMs);
        }
        if (!group.summary.add(row.seq, reading)) continue;
        folded += 1;
        group.rawBytes += row.bytes;
        touched.add(group);
      }
      for (const group of touched) {
        if (group.summary.count < 2) continue;
        const size = Buffer.byteLength(JSON.stringify(group.summary.build()));
        const rows = group.summary.count - 1;
        const saved = group.rawBytes - size + rows * OUTBOX_ROW_OVERHEAD_BYTES;
        // A summary of a few readings can be larger than they are: it is only written when it pays.
        freedRows -= group.rows;
        freedCost -= group.saved;
        group.rows = saved > 0 ? rows : 0;
        group.saved = saved > 0 ? saved : 0;
        freedRows += group.rows;
        freedCost += group.saved;
      }
      const depthAfter = totals.depth - freedRows;
      const costAfter = cost(totals.depth, totals.bytes) - freedCost;
      // Enough: the headroom is free, or the bound holds and one transaction has done its share
      // (a long commit delays every device's PUBACK); the next episode continues.
      if (!enough && depthAfter <= targetRows && costAfter <= targetCost) enough = true;
      if (!enough && folded >= COMPACT_EPISODE_MAX && depthAfter <= maxRows && costAfter <= maxBytes) enough = true;
      if (stop || (enough && ++finishing > COMPACT_FINISH_CHUNKS)) break;
    }

    let readings = 0;
    let summaries = 0;
    let firstTs = Infinity;
    let lastTs = -Infinity;
    const byDevice = new Map<string, { readings: number; summaries: number; firstTs: number; lastTs: number }>();
    for (const group of groups.values()) {
      if (group.rows === 0) continue;
      const reading = group.summary.build();
      const payload = JSON.stringify(reading);
      const size = Buffer.byteLength(payload);
      // Rows were added in seq order: the first is the oldest, whose seq the summary takes.
      const [keep, ...rest] = group.summary.seqs;
      if (keep === undefined) continue;
      writeSummary.run(reading.ts, reading.receivedAt, size, payload, keep);
      if (reading.receivedAt < receivedFloor) receivedFloor = reading.receivedAt;
      for (const seq of rest) deleteVictim.run(seq);
      totals.depth -= rest.length;
      totals.bytes += size - group.rawBytes;
      const span = group.summary.span;
      const device = byDevice.get(reading.deviceId) ?? { readings: 0, summaries: 0, firstTs: Infinity, lastTs: -Infinity };
      byDevice.set(reading.deviceId, device);
      device.readings += group.summary.count;
      device.summaries += 1;
      device.firstTs = Math.min(device.firstTs, span.firstTs);
      device.lastTs = Math.max(device.lastTs, span.lastTs);
      readings += group.summary.count;
      summaries += 1;
      firstTs = Math.min(firstTs, span.firstTs);
      lastTs = Math.max(lastTs, span.lastTs);
    }
    if (summaries === 0) return undefined;
    const now = Math.floor(clock.now());
    for (const [deviceId, d] of byDevice) compactions.record(deviceId, d.readings, d.summaries, d.firstTs, d.lastTs, now);
    return { readings, summaries, firstTs, lastTs };
  }

  const appendTx = db.transaction(
    (
      readings: readonly DeviceReading[],
      inFlight: { has(seq: number): boolean },
      pipelineState: readonly SavedSeriesState[],
    ): {
      seqs: number[];
      payloads: string[];
      sizes: number[];
      droppedSeqs: number[];
      refused: number;
      totals: Totals;
      compacted: CompactionResult | undefined;
    } => {
      const totals: Totals = { depth, bytes };
      const drops = new Map<DropReason, Victim[]>();
      trimAged(totals, inFlight, drops);
      const payloads: string[] = new Array<string>(readings.length);
      const sizes: number[] = new Array<number>(readings.length);
      let groupBytes = 0;
      for (let i = 0; i < readings.length; i += 1) {
        const reading = readings[i]!;
        if (reading.receivedAt < receivedFloor) receivedFloor = reading.receivedAt;
        const payload = JSON.stringify(reading);
        payloads[i] = payload;
        sizes[i] = Buffer.byteLength(payload);
        groupBytes += sizes[i]!;
      }
      let accepted = readings.length;
      if (refuseNew) {
        // All or nothing: a device message can hold several readings, and storing part of one
        // would store that part twice when the device publishes it again.
        if (totals.depth + readings.length > maxRows || cost(totals.depth + readings.length, totals.bytes + groupBytes) > maxBytes) accepted = 0;
      }
      const seqs = insertRows(readings, payloads, sizes, accepted);
      if (accepted > 0) {
        totals.depth += accepted;
        totals.bytes += groupBytes;
      }
      const compacted = compact ? compactOldest(totals, inFlight, seqs[seqs.length - 1] ?? newest ?? -1) : undefined;
      // Under 'compact' too: whatever compaction could not free is dropped, so the bound holds.
      if (!refuseNew) trimOldest(totals, inFlight, drops);
      const droppedSeqs = settleDrops(drops);
      writeState.run(totals.depth, totals.bytes);
      // A refused group was not processed as far as the devices know: they publish it again.
      if (seqs.length === readings.length) savePipelineState(pipelineState);
      return { seqs, payloads, sizes, droppedSeqs, refused: readings.length - seqs.length, totals, compacted };
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

  /**
   * Inserts the first `count` readings with multi-row statements; returns their seqs. Rows of one
   * statement get consecutive seqs (AUTOINCREMENT, one writer), the last being lastInsertRowid.
   */
  function insertRows(readings: readonly DeviceReading[], payloads: readonly string[], sizes: readonly number[], count: number): number[] {
    const seqs: number[] = [];
    const args: (string | number)[] = [];
    let i = 0;
    for (const rows of INSERT_CHUNKS) {
      const statement = inserts.get(rows)!;
      while (count - i >= rows) {
        args.length = rows * INSERT_COLUMNS;
        for (let k = 0; k < rows; k += 1) {
          const reading = readings[i + k]!;
          const at = k * INSERT_COLUMNS;
          args[at] = reading.deviceId;
          args[at + 1] = reading.ts;
          args[at + 2] = reading.receivedAt;
          args[at + 3] = sizes[i + k]!;
          args[at + 4] = payloads[i + k]!;
        }
        const last = Number(statement.run(args).lastInsertRowid);
        for (let seq = last - rows + 1; seq <= last; seq += 1) seqs.push(seq);
        i += rows;
      }
    }
    return seqs;
  }

  /**
   * Deletes by runs of consecutive seqs, one range statement each: a run of consecutive integers
   * holds no other row, so exactly the seqs asked for go (an acked batch is usually one run).
   */
  const deleteTx = db.transaction((seqs: readonly number[]): { rows: number; freed: number } => {
    let rows = 0;
    let freed = 0;
    let start = 0;
    while (start < seqs.length) {
      const first = seqs[start]!;
      let end = start;
      while (end + 1 < seqs.length && seqs[end + 1] === seqs[end]! + 1) end += 1;
      const last = seqs[end]!;
      start = end + 1;
      if (ledger.hasOpenGaps()) {
        for (const row of deleteRangeNamed.all(first, last)) {
          rows += 1;
          freed += row.bytes;
          ledger.delivered(row.device_id, row.seq);
        }
      } else {
        const freedBytes = deleteRange.all(first, last);
        rows += freedBytes.length;
        for (const size of freedBytes) freed += size;
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

  /**
   * A write the drain depends on. On a full disk it gets one more try once `onDiskFull` freed
   * space, or else once a checkpoint let the WAL start over in the room it already has.
   */
  function drainStorage<T>(what: string, fn: () => T): T {
    try {
      return storage(what, fn);
    } catch (err) {
      if (!isDiskFull(err) || !makeRoom()) throw err;
      return storage(what, fn);
    }
  }

  function makeRoom(): boolean {
    if (options.onDiskFull?.() === true) return true;
    try {
      const [result] = db.pragma('wal_checkpoint(RESTART)') as { busy: number }[];
      return result?.busy === 0;
    } catch {
      return false;
    }
  }

  /**
   * Rows handed out may have reached the database: remembered in the file so a restart knows too.
   * Rows in between that were skipped are in flight, hence handed out before. When the mark
   * cannot be written (a full disk), memory still guards this run; only a crash before the next
   * successful mark could then let one of them be compacted.
   */
  function rememberSent(first: number, last: number): void {
    sent.add(first, last);
    try {
      markSent.run(first, last);
    } catch {
      // Kept in memory for this run; sending must not stop because the disk is full.
    }
  }

  /** Housekeeping after a compaction committed; a failure only leaves stale ranges for later. */
  function forgetSentBelowOldest(): void {
    try {
      const low = oldestSeq.get()?.seq ?? NO_SEQ_LIMIT;
      sent.forgetBelow(low);
      forgetSent.run(low);
    } catch {
      // Stale ranges name no row; they go at the next compaction or start.
    }
  }

  /** What peek hands out; under `whenFull: 'compact'` remembered first as possibly sent. */
  function remembered(out: OutboxEntry[]): OutboxEntry[] {
    const last = out[out.length - 1];
    if (last === undefined) return out;
    if (compact) rememberSent(out[0]!.seq, last.seq);
    // Handed out, the recent rows have done their work: held on, they would only cost the
    // collector (a batch resent after a timeout reads the file).
    recent.forgetUpTo(last.seq);
    return out;
  }

  /** After an append committed: what it stored joins the recent rows, what it removed or rewrote leaves them. */
  function rememberRecent(result: {
    seqs: readonly number[];
    payloads: readonly string[];
    sizes: readonly number[];
    droppedSeqs: readonly number[];
    compacted: CompactionResult | undefined;
  }): void {
    // Compaction rewrites rows in place: every row held (none above the newest seq) goes.
    if (result.compacted) recent.forgetUpTo(newest ?? -1);
    else forgetRecent(result.droppedSeqs);
    recent.committed(result.seqs, result.sizes, result.payloads);
  }

  /** Rows about to be removed (or just removed) leave the recent rows, with every older one. */
  function forgetRecent(seqs: readonly number[]): void {
    let highest = -1;
    for (const seq of seqs) if (seq > highest) highest = seq;
    recent.forgetUpTo(highest);
  }

  /** Up to `wanted` rows above `after`, from memory when the recent rows hold all of them, else from the file up to where they begin. */
  function peekPage(after: number, upToSeq: number, wanted: number): { rows: readonly StoredReading[]; complete: boolean } {
    if (after >= recent.floor) return { rows: recent.page(after, upToSeq, wanted), complete: true };
    const page = scan.all(after, Math.min(upToSeq, recent.floor), wanted);
    const rows = new Array<StoredReading>(page.length);
    for (let i = 0; i < page.length; i += 1) {
      const [seq, stored, json] = page[i]!;
      rows[i] = new StoredReading(seq, stored, json);
    }
    // A short page from the file ends only the file's part when the recent rows go further.
    return { rows, complete: upToSeq <= recent.floor };
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
        rememberRecent(result);
        if (result.droppedSeqs.length === 0 && wasEmpty && result.seqs.length > 0) oldestTs = readings[0]?.receivedAt ?? null;
        if (result.compacted) {
          oldestTs = depth === 0 ? null : (oldest.get()?.received_at ?? null);
          forgetSentBelowOldest();
        }
        return {
          seqs: result.seqs,
          droppedSeqs: result.droppedSeqs,
          refused: result.refused,
          ...(result.compacted ? { compacted: result.compacted } : {}),
        };
      });
    },
    peek({ limit, maxBytes: budget, exclude, rowOverhead = 0, afterSeq = -1, upToSeq = NO_SEQ_LIMIT }) {
      return storage('peek', () => {
        const out: OutboxEntry[] = [];
        if (limit <= 0) return out;
        let total = 0;
        // Starts at the caller's cursor, so rows already handed out are not read again; the
        // in-flight rows above it are a bounded set. Read in pages sized to what the byte budget
        // should take at the outbox's mean row size, so one read is nearly always enough.
        const meanRow = depth > 0 ? bytes / depth + rowOverhead : 1;
        let after = afterSeq;
        for (;;) {
          const wanted = Math.max(1, Math.min(limit - out.length, Math.ceil((budget - total) / Math.max(1, meanRow)) + PEEK_SLACK_ROWS));
          const { rows, complete } = peekPage(after, upToSeq, wanted);
          for (const row of rows) {
            after = row.seq;
            if (exclude.has(row.seq)) continue;
            const size = row.bytes + rowOverhead;
            if (out.length > 0 && total + size > budget) return remembered(out);
            out.push(row);
            total += size;
            if (out.length >= limit) return remembered(out);
          }
          if (rows.length < wanted) {
            if (complete) return remembered(out);
            // The file held nothing more up to where the recent rows begin: continue in memory.
            after = Math.max(after, recent.floor);
          }
        }
      });
    },
    delete(seqs) {
      if (seqs.length === 0) return 0;
      forgetRecent(seqs);
      return drainStorage('delete', () => {
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
      forgetRecent(seqs);
      return drainStorage('settle', () => {
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
      return drainStorage('expire', () => {
        const result = expireTx(expireOptions.inFlight ?? nothingInFlight);
        forgetRecent(result.droppedSeqs);
        afterDrops(result.droppedSeqs, result.totals);
        return result.droppedSeqs;
      });
    },
    stats() {
      return { depth, bytes, oldestTs, dropped: ledger.totals(), ...(compact ? { compacted: compactions.totals() } : {}) };
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
    compactedByDevice(limit = 1000) {
      return storage('compactedByDevice', () => compactions.byDevice(limit));
    },
    nextBatchId() {
      return drainStorage('nextBatchId', () => {
        if (batchIdNext >= batchIdReserved) {
          reserveBatchIds.run(batchIdNext + BATCH_ID_BLOCK);
          batchIdReserved = batchIdNext + BATCH_ID_BLOCK;
        }
        return batchIdNext++;
      });
    },
    corrupt: opened.corrupt,
    setMaxBytes(next) {
      maxBytes = next;
    },
    fileUsage() {
      return storage('fileUsage', () => {
        const pageSize = readPageSize.get()?.page_size ?? 4096;
        const pages = readPageCount.get()?.page_count ?? 0;
        const free = readFreelist.get()?.freelist_count ?? 0;
        let walBytes = 0;
        try {
          walBytes = options.path === ':memory:' ? 0 : statSync(`${options.path}-wal`).size;
        } catch {
          // No WAL yet.
        }
        return { fileBytes: pages * pageSize, usedFileBytes: (pages - free) * pageSize, walBytes, walLimitBytes: walPages * (pageSize + WAL_FRAME_HEADER_BYTES) };
      });
    },
    close() {
      if (db.open) db.close();
    },
  };
}
