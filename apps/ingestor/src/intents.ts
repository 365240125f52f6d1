// Write intents: the one window the dedupe records cannot close on their own. A chunk is recorded
// only after the database confirmed it, so a kill -9 while its write is in flight (or between the
// confirmation and the record) leaves points in the database that no record knows of. The gateway
// resends them and they look new. InfluxDB replaces a point written again; VictoriaMetrics keeps a
// second sample. So before a chunk's first write the writer notes, durably, which readings it is
// about to write (an intent: runs of consecutive keys per source), and ends the intent in the same
// transaction as the chunk's records. An intent still open when a writer is gone (found when the
// store is opened, or when another ingestor takes the gateway over) makes its readings suspects:
// before one is written again, the sink is asked whether the database holds it already
// (Sink.present), and what it holds is settled as written without a second write.
//
// Keys: a gateway's seqs, or a direct device's journal rows under DIRECT_SOURCE.
import type Database from 'better-sqlite3';
import type { WriterIntents } from './write.js';

/** Consecutive keys first..last of one source that one chunk is writing. */
export interface IntentRun {
  readonly source: string;
  readonly first: number;
  readonly last: number;
}

/** A chunk's open intent, as the log returned it: ends with `IntentLog.end`. */
export interface Intent {
  readonly runs: readonly IntentRun[];
  /** Opaque to the writer: what the log needs to end it. */
  readonly ref: unknown;
}

/** Runs no longer than this, so one row never grows without bound. */
const MAX_RUN = 10_000;

/** Pure: the keys of a chunk's items as runs of consecutive keys per source, in the order they come. */
export function intentRuns<T>(items: readonly T[], sourceOf: (item: T) => string, seqOf: (item: T) => number): IntentRun[] {
  const runs: { source: string; first: number; last: number }[] = [];
  let run: { source: string; first: number; last: number } | undefined;
  for (const item of items) {
    const source = sourceOf(item);
    const seq = seqOf(item);
    if (run && run.source === source && seq === run.last + 1 && seq - run.first < MAX_RUN) run.last = seq;
    else runs.push((run = { source, first: seq, last: seq }));
  }
  return runs;
}

/** An open run of a writer that is gone, with the keys of it not settled yet. */
interface SuspectRun {
  readonly id: string;
  readonly first: number;
  readonly last: number;
  /** When the dead writer's write has surely landed or failed (epoch ms): the database is asked only then. */
  readonly askAfter: number;
  left: number;
  readonly settled: Set<number>;
}

/** An orphan run as a log loads it. */
export interface OrphanRun extends IntentRun {
  /** Unique in the log; what `Suspects.settle` reports back once the run is settled. */
  readonly id: string;
  /** When the write it notes has surely landed or failed (epoch ms). */
  readonly askAfter: number;
}

/**
 * Pure: the open runs of writers that are gone, indexed for lookup. Runs are few (a dead
 * writer's chunks in flight), so each source keeps a short list.
 */
export class Suspects {
  private readonly bySource = new Map<string, SuspectRun[]>();
  private count = 0;

  /** Runs held (a run leaves once each of its keys was settled). */
  get size(): number {
    return this.count;
  }

  add(runs: readonly OrphanRun[]): void {
    for (const r of runs) {
      let list = this.bySource.get(r.source);
      if (!list) this.bySource.set(r.source, (list = []));
      if (list.some((s) => s.id === r.id)) continue;
      list.push({ id: r.id, first: r.first, last: r.last, askAfter: r.askAfter, left: r.last - r.first + 1, settled: new Set() });
      this.count++;
    }
  }

  /** When the database may be asked about this key (Suspect.askAfter), or undefined when no orphan run covers it (or it was settled). */
  covering(source: string, seq: number): number | undefined {
    return this.find(source, seq)?.askAfter;
  }

  /** The id of the orphan run covering this key (not settled yet), or undefined. */
  runOf(source: string, seq: number): string | undefined {
    return this.find(source, seq)?.id;
  }

  private find(source: string, seq: number): SuspectRun | undefined {
    if (this.count === 0) return undefined;
    const list = this.bySource.get(source);
    if (!list) return undefined;
    return list.find((r) => seq >= r.first && seq <= r.last && !r.settled.has(seq));
  }

  /** The key was settled (written, found in the database, or refused): returns the ids of runs now fully settled. */
  settle(source: string, seq: number): string[] {
    if (this.count === 0) return [];
    const list = this.bySource.get(source);
    if (!list) return [];
    const done: string[] = [];
    for (let i = list.length - 1; i >= 0; i--) {
      const r = list[i]!;
      if (seq < r.first || seq > r.last || r.settled.has(seq)) continue;
      r.settled.add(seq);
      if (--r.left > 0) continue;
      done.push(r.id);
      list.splice(i, 1);
      this.count--;
    }
    if (list.length === 0) this.bySource.delete(source);
    return done;
  }

  /** Drops a source's runs (its gateway went to another ingestor, which loads them itself); returns their ids. */
  drop(source: string): string[] {
    const list = this.bySource.get(source);
    if (!list) return [];
    this.bySource.delete(source);
    this.count -= list.length;
    return list.map((r) => r.id);
  }
}

/**
 * The writer's view of a log (write.ts): chunks begun as runs, suspects looked up by key. `begin`
 * wraps the note (the pipeline reports its storage outcome).
 */
export function writerIntents<T>(
  log: IntentLog,
  key: { readonly source: (item: T) => string; readonly seq: (item: T) => number },
  begin: (note: () => Intent | Promise<Intent>) => unknown,
): WriterIntents<T> {
  const waitForWriters = log.waitForWriters?.bind(log);
  return {
    begin: (chunk) => begin(() => log.begin(intentRuns(chunk, key.source, key.seq))),
    askAfter: (item) => log.suspects.covering(key.source(item), key.seq(item)),
    waitForWriters: waitForWriters && ((items) => waitForWriters(items.map((item) => ({ source: key.source(item), seq: key.seq(item) })))),
  };
}

/**
 * Where a writer keeps its intents: the dedupe store's SQLite file (one ingestor), or Redis
 * (cluster/shared-intents.ts), where an ingestor that takes a gateway over finds the intents the
 * last holder left.
 */
export interface IntentLog {
  /** Notes, durably, that a chunk with these runs is about to be written. Throws (or rejects) when it cannot: the chunk waits. */
  begin(runs: readonly IntentRun[]): Intent | Promise<Intent>;
  /**
   * The chunk's records are committed: its intent goes. With SQLite this runs inside the records'
   * transaction (IntentLog.inTransaction), so either both are there after a crash or neither.
   */
  end(intent: Intent): void;
  /** Open runs of writers that are gone. */
  readonly suspects: Suspects;
  /** A suspect key was settled: once a whole run is, it leaves the log. */
  settled(source: string, seq: number): void;
  /**
   * Resolves once the writers of the runs covering these suspect keys can no longer write (gone
   * from the deployment, or their note ended): only then is the database asked. Without it (one
   * ingestor, whose last run is dead) the database is asked at once.
   */
  waitForWriters?(keys: readonly { readonly source: string; readonly seq: number }[]): Promise<void>;
}

export interface SqliteIntentLogOptions {
  /** The dedupe store's connection: intents end in the same transaction as the records. */
  readonly db: Database.Database;
  readonly clock: { now(): number };
  /** Per gateway, orphan runs wholly below this seq are dropped at open (the dedupe window let them go). */
  readonly floorOf: (source: string) => number | undefined;
  /**
   * How long after the log is opened the last run's writes have surely landed: that run is dead
   * (its sockets closed with it), so only a request the database had wholly received can still be
   * applied, which takes it milliseconds. Default 500 ms.
   */
  readonly graceMs?: number | undefined;
}

interface IntentRow {
  id: number;
  source: string;
  first_seq: number;
  last_seq: number;
  at: number;
}

/**
 * The intents of a single ingestor, in its dedupe.db. Every row there at open was left by a
 * process that is gone (one ingestor owns a data dir), so they are all orphans.
 */
export function openSqliteIntentLog(options: SqliteIntentLogOptions): IntentLog {
  const { db, clock } = options;
  db.exec(`
    CREATE TABLE IF NOT EXISTS write_intents (
      id INTEGER PRIMARY KEY,
      source TEXT NOT NULL,
      first_seq INTEGER NOT NULL,
      last_seq INTEGER NOT NULL,
      at INTEGER NOT NULL
    );
  `);
  const insert = db.prepare<[string, number, number, number]>('INSERT INTO write_intents (source, first_seq, last_seq, at) VALUES (?, ?, ?, ?)');
  const deleteRange = db.prepare<[number, number]>('DELETE FROM write_intents WHERE id BETWEEN ? AND ?');
  const deleteOne = db.prepare<[number]>('DELETE FROM write_intents WHERE id = ?');
  const suspects = new Suspects();
  const orphans = db.prepare<[], IntentRow>('SELECT id, source, first_seq, last_seq, at FROM write_intents ORDER BY id').all();
  const gone: number[] = [];
  const kept: OrphanRun[] = [];
  const askAfter = clock.now() + (options.graceMs ?? 500);
  for (const row of orphans) {
    const floor = options.floorOf(row.source);
    if (floor !== undefined && row.last_seq <= floor) gone.push(row.id);
    else kept.push({ id: String(row.id), source: row.source, first: row.first_seq, last: row.last_seq, askAfter });
  }
  suspects.add(kept);
  if (gone.length > 0) db.transaction(() => gone.forEach((id) => deleteOne.run(id)))();

  const beginAll = db.transaction((runs: readonly IntentRun[], at: number): { first: number; last: number } => {
    let first = 0;
    let last = 0;
    runs.forEach((r, i) => {
      const id = Number(insert.run(r.source, r.first, r.last, at).lastInsertRowid);
      if (i === 0) first = id;
      last = id;
    });
    return { first, last };
  });

  return {
    suspects,
    begin(runs) {
      // One connection, one writer: a chunk's rows get consecutive ids, so it ends with one range delete.
      return { runs, ref: runs.length === 0 ? undefined : beginAll(runs, clock.now()) };
    },
    end(intent) {
      const ids = intent.ref as { first: number; last: number } | undefined;
      if (ids) deleteRange.run(ids.first, ids.last);
    },
    settled(source, seq) {
      for (const id of suspects.settle(source, seq)) deleteOne.run(Number(id));
    },
  };
}
