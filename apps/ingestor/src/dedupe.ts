// Stage 3, dedupe: which gateway sequence numbers were already settled, persisted in SQLite so a
// resend after an ack was lost, or after an ingestor restart, is recognised.
//
// A seq is recorded only after the sink confirmed its point (or refused it for good). A crash
// while the write is in flight, or between the sink's confirmation and this record, leaves the
// seq unrecorded: the gateway resends and the seq looks new. readingToPoint yields the very same
// point (same measurement, tags and nanosecond timestamp), which InfluxDB replaces rather than
// adds; VictoriaMetrics would keep a second sample, so the chunk's write intent (intents.ts, kept
// in this file and ended in the records' transaction) makes the next writer ask the database first.
//
// Window: per gateway only seqs greater than (highest seq seen - windowPerGateway) are kept.
// Gateway seqs are monotonic, so this is "the newest N" and pruning is one range delete on the
// primary key. A reading below the window is treated as new and written again (an overwrite, see
// above); what the bound discarded is counted in `pruned`.
//
// Durability: WAL with synchronous=FULL, since the ack that deletes a batch at the gateway follows
// the commit, and the rollup windows are saved in the same transaction: a record lost to a power
// cut would let a resend be counted twice in a rollup (test/faults/power-cut.test.ts).
import type Database from 'better-sqlite3';
import type { ErrorCode } from '@ferry/protocol';
import { openSqlite } from '@ferry/runtime';
import { sameContent } from './content-hash.js';

/** What a settled seq ended as. */
export type SeenRecord =
  | { readonly hash: string; readonly outcome: 'written' }
  | { readonly hash: string; readonly outcome: 'rejected'; readonly code: ErrorCode; readonly reason: string };

export type DedupeEntry = SeenRecord & { readonly gatewayId: string; readonly seq: number };

export type DedupeVerdict =
  | { readonly kind: 'new' }
  /** Written before with the same content: ack it as a duplicate, write nothing. */
  | { readonly kind: 'duplicate' }
  /** Written before with different content: never merge silently. */
  | { readonly kind: 'conflict'; readonly reason: string }
  /** Refused for good before, same content: report the same refusal, do not dead-letter again. */
  | { readonly kind: 'rejected-before'; readonly code: ErrorCode; readonly reason: string };

/**
 * Pure: what a reading with content `hash` is, given what its seq was recorded as. `content` (the
 * reading as received) lets a record stored by an earlier release, in its hash form, still match.
 */
const NEW: DedupeVerdict = { kind: 'new' };

export function judge(seen: SeenRecord | undefined, hash: string, content?: unknown): DedupeVerdict {
  if (!seen) return NEW;
  const same = content === undefined ? seen.hash === hash : sameContent(seen.hash, hash, content);
  if (seen.outcome === 'written') {
    return same ? { kind: 'duplicate' } : { kind: 'conflict', reason: `seq already written with different content (hash ${seen.hash}, now ${hash})` };
  }
  // A refused reading resent with other content is new content: let it be judged on its own.
  return same ? { kind: 'rejected-before', code: seen.code, reason: seen.reason } : { kind: 'new' };
}

/** Pure: the highest seq that falls out of a gateway's window; seqs at or below it are forgotten. */
export function windowFloor(maxSeq: number, windowPerGateway: number): number {
  return maxSeq - windowPerGateway;
}

export interface DedupeCounts {
  /** Seqs held now. */
  readonly held: number;
  /** Seqs the window discarded, all gateways, since the file was created. */
  readonly pruned: number;
}

export interface DedupeStore {
  lookup(gatewayId: string, seq: number): SeenRecord | undefined;
  /**
   * Records settled seqs in one transaction, then prunes each touched gateway's window. A written
   * seq replaces an earlier refusal (a successful replay); a refusal never replaces anything.
   * Returns how many seqs the window discarded.
   */
  record(entries: readonly DedupeEntry[]): number;
  counts(): DedupeCounts;
  /** The highest seq of a gateway the window let go (what lookup() no longer knows), or undefined when none yet. */
  windowFloor?(gatewayId: string): number | undefined;
  close(): void;
  /**
   * The SQLite connection, when there is one: a stage that must save its own state atomically with
   * record() (the rollup windows, rollup.ts) calls record() inside a transaction of this connection.
   */
  readonly database?: Database.Database;
}

export interface DedupeStoreOptions {
  readonly path: string;
  readonly windowPerGateway: number;
}

interface SeenRow {
  hash: string;
  outcome: number;
  code: string | null;
  reason: string | null;
}

const WRITTEN = 1;
const REJECTED = 2;

/**
 * A run holds at most this many seqs, so a lookup reads only runs that start in
 * [seq - MAX_RUN + 1, seq]. Never lower it: longer runs stored before would no longer be found.
 */
const MAX_RUN = 10_000;

/** Every hash this release computes has this length (content-hash.ts); a run stores them end to end. */
const HASH_LENGTH = 17;

interface RunRow {
  first_seq: number;
  last_seq: number;
  hashes: string;
}

export function openDedupeStore(options: DedupeStoreOptions): DedupeStore {
  // Two tables. seen_runs: written seqs, one row per run of consecutive seqs recorded together
  // (their hashes end to end), so recording a chunk costs a row per gateway run, not per reading.
  // seen: one row per refused seq, per written seq that cannot join a run, and the rows of
  // releases before the runs. A written record (in either) wins over a refusal.
  const db = openSqlite({
    path: options.path,
    what: 'dedupe store',
    // full: the gateway deletes a batch on the ack that follows this commit, and the rollup windows
    // are saved in the same transaction; a record lost to a power cut would let a resend count twice.
    synchronous: 'full',
    setup: (d) =>
      d.exec(`
      CREATE TABLE IF NOT EXISTS seen (
        gateway TEXT NOT NULL,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        outcome INTEGER NOT NULL,
        code TEXT,
        reason TEXT,
        PRIMARY KEY (gateway, seq)
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS seen_runs (
        gateway TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        hashes TEXT NOT NULL,
        PRIMARY KEY (gateway, first_seq)
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS windows (
        gateway TEXT PRIMARY KEY,
        max_seq INTEGER NOT NULL,
        pruned INTEGER NOT NULL DEFAULT 0
      );
    `),
  });
  const selectSeen = db.prepare<[string, number], SeenRow>('SELECT hash, outcome, code, reason FROM seen WHERE gateway = ? AND seq = ?');
  const upsertWritten = db.prepare<[string, number, string]>(
    `INSERT INTO seen (gateway, seq, hash, outcome, code, reason) VALUES (?, ?, ?, ${WRITTEN}, NULL, NULL)
     ON CONFLICT (gateway, seq) DO UPDATE SET hash = excluded.hash, outcome = ${WRITTEN}, code = NULL, reason = NULL`,
  );
  const insertRejected = db.prepare<[string, number, string, string, string]>(
    `INSERT INTO seen (gateway, seq, hash, outcome, code, reason) VALUES (?, ?, ?, ${REJECTED}, ?, ?)
     ON CONFLICT (gateway, seq) DO NOTHING`,
  );
  const insertRun = db.prepare<[string, number, number, string]>(
    'INSERT INTO seen_runs (gateway, first_seq, last_seq, hashes) VALUES (?, ?, ?, ?) ON CONFLICT (gateway, first_seq) DO NOTHING',
  );
  // A run's seqs are written now: earlier rows for them (a refusal, a replay) are superseded.
  const deleteRowsIn = db.prepare<[string, number, number]>('DELETE FROM seen WHERE gateway = ? AND seq BETWEEN ? AND ?');
  const selectRun = db.prepare<[string, number, number, number], RunRow>(
    'SELECT first_seq, last_seq, hashes FROM seen_runs WHERE gateway = ? AND first_seq BETWEEN ? AND ? AND last_seq >= ? ORDER BY first_seq DESC LIMIT 1',
  );
  const selectWindow = db.prepare<[string], { max_seq: number }>('SELECT max_seq FROM windows WHERE gateway = ?');
  const upsertWindow = db.prepare<[string, number, number]>(
    `INSERT INTO windows (gateway, max_seq, pruned) VALUES (?, ?, ?)
     ON CONFLICT (gateway) DO UPDATE SET max_seq = excluded.max_seq, pruned = pruned + excluded.pruned`,
  );
  const deleteBelow = db.prepare<[string, number]>('DELETE FROM seen WHERE gateway = ? AND seq <= ?');
  // Whole runs below the floor (first_seq <= last_seq, so the first bound only narrows the scan of the key).
  const runsBelow = db.prepare<[string, number, number], { n: number | null }>(
    'SELECT SUM(last_seq - first_seq + 1) AS n FROM seen_runs WHERE gateway = ? AND first_seq <= ? AND last_seq <= ?',
  );
  const deleteRunsBelow = db.prepare<[string, number, number]>('DELETE FROM seen_runs WHERE gateway = ? AND first_seq <= ? AND last_seq <= ?');
  const countHeld = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM seen');
  const countInRuns = db.prepare<[], { n: number | null }>('SELECT SUM(last_seq - first_seq + 1) AS n FROM seen_runs');
  const sumPruned = db.prepare<[], { n: number | null }>('SELECT SUM(pruned) AS n FROM windows');

  // The highest seq per gateway, cached: every lookup needs it to know the window. A gateway with
  // no window yet is cached too (as -1), or each of its readings would cost a query until the first record.
  const maxSeqs = new Map<string, number>();
  const maxSeqOf = (gatewayId: string): number | undefined => {
    let maxSeq = maxSeqs.get(gatewayId);
    if (maxSeq === undefined) {
      maxSeq = selectWindow.get(gatewayId)?.max_seq ?? -1;
      maxSeqs.set(gatewayId, maxSeq);
    }
    return maxSeq < 0 ? undefined : maxSeq;
  };

  /** Pure: written entries as runs of consecutive seqs per gateway; entries that cannot join one come back alone. */
  function runsOf(written: readonly DedupeEntry[]): { gatewayId: string; first: number; last: number; hashes: string }[] {
    const sorted = written.every((e, i) => i === 0 || e.gatewayId !== written[i - 1]!.gatewayId || e.seq > written[i - 1]!.seq)
      ? written
      : [...written].sort((a, b) => (a.gatewayId < b.gatewayId ? -1 : a.gatewayId > b.gatewayId ? 1 : a.seq - b.seq));
    const runs: { gatewayId: string; first: number; last: number; hashes: string }[] = [];
    // A run's hashes are gathered in a list and joined once: concatenated one by one they would be
    // a chain of thousands of pieces that SQLite's binding has to flatten, a cost per piece.
    let run: { gatewayId: string; first: number; last: number; hashes: string[] } | undefined;
    const close = (r: { gatewayId: string; first: number; last: number; hashes: string[] }): void => {
      runs.push({ gatewayId: r.gatewayId, first: r.first, last: r.last, hashes: r.hashes.length === 1 ? r.hashes[0]! : r.hashes.join('') });
    };
    for (const e of sorted) {
      if (run && run.gatewayId === e.gatewayId && e.seq === run.last + 1 && e.seq - run.first < MAX_RUN) {
        run.last = e.seq;
        run.hashes.push(e.hash);
      } else {
        if (run) close(run);
        run = { gatewayId: e.gatewayId, first: e.seq, last: e.seq, hashes: [e.hash] };
      }
    }
    if (run) close(run);
    return runs;
  }

  /** Per gateway, the highest seq a record() touched (its window moves to it) and how many seqs the window discarded. */
  interface Recorded {
    readonly touched: Map<string, number>;
    readonly pruned: number;
  }

  const recordAll = db.transaction((entries: readonly DedupeEntry[]): Recorded => {
    const touched = new Map<string, number>();
    const written: DedupeEntry[] = [];
    // A chunk holds runs of one gateway's seqs: the highest seq is kept in a local while the
    // gateway stays the same and put in `touched` when it changes (not a map update per entry).
    let gatewayOf: string | undefined;
    let highest = -1;
    for (const e of entries) {
      if (e.outcome === 'written') {
        // A hash of another form (a test's, or a future one's) cannot sit in a run: its own row.
        if (e.hash.length === HASH_LENGTH) written.push(e);
        else upsertWritten.run(e.gatewayId, e.seq, e.hash);
      } else insertRejected.run(e.gatewayId, e.seq, e.hash, e.code, e.reason);
      if (e.gatewayId !== gatewayOf) {
        if (gatewayOf !== undefined) touched.set(gatewayOf, highest);
        gatewayOf = e.gatewayId;
        highest = touched.get(gatewayOf) ?? -1;
      }
      if (e.seq > highest) highest = e.seq;
    }
    if (gatewayOf !== undefined) touched.set(gatewayOf, highest);
    for (const run of runsOf(written)) {
      deleteRowsIn.run(run.gatewayId, run.first, run.last);
      if (insertRun.run(run.gatewayId, run.first, run.last, run.hashes).changes === 0) {
        // A run already starts at this seq (seqs written again after the window let them go): rows.
        for (let seq = run.first; seq <= run.last; seq++) {
          const at = (seq - run.first) * HASH_LENGTH;
          upsertWritten.run(run.gatewayId, seq, run.hashes.slice(at, at + HASH_LENGTH));
        }
      }
    }
    let pruned = 0;
    for (const [gatewayId, batchMax] of touched) {
      const maxSeq = Math.max(maxSeqOf(gatewayId) ?? -1, batchMax);
      const floor = windowFloor(maxSeq, options.windowPerGateway);
      let removed = 0;
      if (floor >= 0) {
        removed += deleteBelow.run(gatewayId, floor).changes;
        const inRuns = runsBelow.get(gatewayId, floor, floor)?.n ?? 0;
        if (inRuns > 0) {
          deleteRunsBelow.run(gatewayId, floor, floor);
          removed += inRuns;
        }
      }
      upsertWindow.run(gatewayId, maxSeq, removed);
      pruned += removed;
    }
    return { touched, pruned };
  });

  // The run the last lookup found, per gateway: a resent batch looks up its seqs one after another.
  const lastRun = new Map<string, RunRow>();
  function hashInRuns(gatewayId: string, seq: number): string | undefined {
    let run = lastRun.get(gatewayId);
    if (!run || seq < run.first_seq || seq > run.last_seq) {
      run = selectRun.get(gatewayId, seq - MAX_RUN + 1, seq, seq);
      if (!run) return undefined;
      lastRun.set(gatewayId, run);
    }
    const at = (seq - run.first_seq) * HASH_LENGTH;
    return run.hashes.slice(at, at + HASH_LENGTH);
  }

  let open = true;
  return {
    database: db,
    lookup(gatewayId, seq) {
      const maxSeq = maxSeqOf(gatewayId);
      // Above the highest recorded seq nothing is stored: the common case (a gateway's new batch) costs no query.
      if (maxSeq === undefined || seq > maxSeq) return undefined;
      if (seq <= windowFloor(maxSeq, options.windowPerGateway)) return undefined;
      const row = selectSeen.get(gatewayId, seq);
      if (row?.outcome === WRITTEN) return { hash: row.hash, outcome: 'written' };
      const inRun = hashInRuns(gatewayId, seq);
      if (inRun !== undefined) return { hash: inRun, outcome: 'written' };
      if (!row) return undefined;
      return { hash: row.hash, outcome: 'rejected', code: (row.code ?? 'FERRY_ERR_SINK_REJECTED') as ErrorCode, reason: row.reason ?? '' };
    },
    record(entries) {
      if (entries.length === 0) return 0;
      // Update the caches only after the commit: a failed transaction must not move the window.
      const { touched, pruned } = recordAll(entries);
      lastRun.clear();
      for (const [gatewayId, batchMax] of touched) maxSeqs.set(gatewayId, Math.max(maxSeqs.get(gatewayId) ?? -1, batchMax));
      return pruned;
    },
    windowFloor(gatewayId) {
      const maxSeq = maxSeqOf(gatewayId);
      return maxSeq === undefined ? undefined : windowFloor(maxSeq, options.windowPerGateway);
    },
    counts() {
      return { held: (countHeld.get()?.n ?? 0) + (countInRuns.get()?.n ?? 0), pruned: sumPruned.get()?.n ?? 0 };
    },
    close() {
      if (!open) return;
      open = false;
      db.close();
    },
  };
}
