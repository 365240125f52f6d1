// The embedded sink: points in one SQLite file, the default store for a single Raspberry Pi.
// One row per field of a point, keyed like InfluxDB keys a value (measurement, series, field,
// time), so a repeated write overwrites itself instead of adding a point.
//
// Durability (journal_mode=WAL):
// - synchronous=FULL (default): the WAL is fsynced at every commit, before write() resolves.
//   A power cut loses nothing that write() confirmed (provided the storage honours fsync; cheap
//   SD cards may not).
// - synchronous=NORMAL: the WAL is fsynced only at checkpoints. A process crash loses nothing,
//   but a power cut can roll back the writes committed since the last checkpoint, i.e. points
//   whose readings were already acknowledged to the gateway and deleted from its outbox. The
//   file stays consistent either way. Choose it only if losing the last seconds is acceptable.
// Values: floats are SQLite REALs (exact, except that -0 reads back as 0), booleans 0/1
// integers, strings text, each in its own column so the type survives.
import type Database from 'better-sqlite3';
import { FerryError } from '@ferry/protocol';
import { openSqlite } from '@ferry/runtime';
import type { FieldValue, Point, PointRejection, Sink, SinkWriteResult } from './sink.js';
import { checkPoint, seriesTags } from './point-rules.js';

export interface SqliteSinkOptions {
  /** File path; its directory is created when missing. `:memory:` works for throwaway stores. */
  readonly path: string;
  /** Default `full`: see the module comment for what a power cut can lose at each level. */
  readonly synchronous?: 'normal' | 'full' | undefined;
  /** How long a write waits for a lock held by another connection before failing as unavailable. Default 2 s. */
  readonly busyTimeoutMs?: number | undefined;
}

export interface PointQuery {
  /** All measurements when absent. */
  readonly measurement?: string | undefined;
  /** Only points whose series has all these tags with these values. */
  readonly tags?: Readonly<Record<string, string>> | undefined;
  /** Only this field (and only points that have it). */
  readonly field?: string | undefined;
  /** Inclusive, epoch nanoseconds. */
  readonly from?: bigint | undefined;
  /** Exclusive, epoch nanoseconds. */
  readonly to?: bigint | undefined;
  /** At most this many points (not rows), earliest first. */
  readonly limit?: number | undefined;
}

export interface SqliteSink extends Sink {
  /** Number of points (measurement, series, timestamp), of one measurement or all. */
  count(measurement?: string): number;
  /** Points regrouped from their fields, ordered by time then series. */
  query(query?: PointQuery): Point[];
}

interface FieldRow {
  measurement: string;
  series: string;
  tags: string;
  field: string;
  value_float: number | null;
  value_bool: bigint | null;
  value_text: string | null;
  ts_ns: bigint;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS point_fields (
    measurement TEXT NOT NULL,
    -- The series identity: JSON [key, value] pairs sorted by key, empty values dropped.
    series TEXT NOT NULL,
    -- The same tags as a JSON object, for filtering with json_each.
    tags TEXT NOT NULL,
    field TEXT NOT NULL,
    value_float REAL,
    value_bool INTEGER,
    value_text TEXT,
    ts_ns INTEGER NOT NULL,
    CHECK ((value_float IS NOT NULL) + (value_bool IS NOT NULL) + (value_text IS NOT NULL) = 1),
    UNIQUE (measurement, series, field, ts_ns)
  ) STRICT;
  CREATE INDEX IF NOT EXISTS point_fields_by_time ON point_fields (measurement, ts_ns);
`;

function typedValue(value: FieldValue): [number | null, number | null, string | null] {
  if (typeof value === 'number') return [value, null, null];
  if (typeof value === 'boolean') return [null, value ? 1 : 0, null];
  return [null, null, value];
}

function fieldValueOf(row: FieldRow): FieldValue {
  if (row.value_float !== null) return row.value_float;
  if (row.value_bool !== null) return row.value_bool !== 0n;
  return row.value_text ?? '';
}

export function createSqliteSink(opts: SqliteSinkOptions): SqliteSink {
  const description = `sqlite ${opts.path}`;
  const db = openSqlite({
    path: opts.path,
    what: 'SQLite sink',
    synchronous: opts.synchronous === 'normal' ? 'normal' : 'full',
    busyTimeoutMs: opts.busyTimeoutMs ?? 2_000,
    setup: (d) => d.exec(SCHEMA),
  });

  const upsert = db.prepare(`
    INSERT INTO point_fields (measurement, series, tags, field, value_float, value_bool, value_text, ts_ns)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (measurement, series, field, ts_ns) DO UPDATE SET
      tags = excluded.tags, value_float = excluded.value_float,
      value_bool = excluded.value_bool, value_text = excluded.value_text`);
  const writeAll = db.transaction((points: readonly Point[]) => {
    for (const point of points) {
      const tags = seriesTags(point);
      const series = JSON.stringify(tags);
      const tagObject = JSON.stringify(Object.fromEntries(tags));
      for (const [field, value] of Object.entries(point.fields)) {
        upsert.run(point.measurement, series, tagObject, field, ...typedValue(value), point.timestampNs);
      }
    }
  });
  const countAll = db.prepare('SELECT COUNT(*) AS n FROM (SELECT DISTINCT measurement, series, ts_ns FROM point_fields)');
  const countOne = db.prepare('SELECT COUNT(*) AS n FROM (SELECT DISTINCT series, ts_ns FROM point_fields WHERE measurement = ?)');
  const beginImmediate = db.prepare('BEGIN IMMEDIATE');
  const rollback = db.prepare('ROLLBACK');
  // Query shapes vary with the filters given; each distinct shape is prepared once.
  const queryStatements = new Map<string, Database.Statement>();
  let closed = false;

  function assertOpen(): void {
    if (closed) throw new FerryError('FERRY_ERR_NOT_READY', `${description}: sink is closed`, { sink: description });
  }

  function queryPoints(query: PointQuery = {}): Point[] {
    assertOpen();
    const clauses: string[] = [];
    const params: unknown[] = [];
    if (query.measurement !== undefined) {
      clauses.push('measurement = ?');
      params.push(query.measurement);
    }
    if (query.field !== undefined) {
      clauses.push('field = ?');
      params.push(query.field);
    }
    if (query.from !== undefined) {
      clauses.push('ts_ns >= ?');
      params.push(query.from);
    }
    if (query.to !== undefined) {
      clauses.push('ts_ns < ?');
      params.push(query.to);
    }
    for (const [key, value] of Object.entries(query.tags ?? {})) {
      clauses.push('EXISTS (SELECT 1 FROM json_each(p.tags) AS t WHERE t.key = ? AND t.value = ?)');
      params.push(key, value);
    }
    const where = clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '';
    const limit = query.limit !== undefined ? 'LIMIT ?' : '';
    // Choose the points first (so the limit counts points, not fields), then fetch their fields.
    const sql = `
      WITH chosen AS (
        SELECT DISTINCT measurement, series, ts_ns FROM point_fields AS p ${where}
        ORDER BY ts_ns, measurement, series ${limit}
      )
      SELECT p.* FROM point_fields AS p
      JOIN chosen AS c ON p.measurement = c.measurement AND p.series = c.series AND p.ts_ns = c.ts_ns
      ${query.field !== undefined ? 'WHERE p.field = ?' : ''}
      ORDER BY p.ts_ns, p.measurement, p.series, p.field`;
    if (query.limit !== undefined) params.push(query.limit);
    if (query.field !== undefined) params.push(query.field);
    let statement = queryStatements.get(sql);
    if (!statement) {
      statement = db.prepare(sql).safeIntegers(true);
      queryStatements.set(sql, statement);
    }
    // Rows arrive grouped by point; fields are collected as entries, never assigned by key,
    // so a field named `__proto__` stays a field.
    const groups: Array<{ key: string; first: FieldRow; fields: Array<[string, FieldValue]> }> = [];
    for (const row of statement.all(...params) as FieldRow[]) {
      const key = JSON.stringify([row.measurement, row.series, String(row.ts_ns)]);
      let group = groups.at(-1);
      if (group?.key !== key) {
        group = { key, first: row, fields: [] };
        groups.push(group);
      }
      group.fields.push([row.field, fieldValueOf(row)]);
    }
    return groups.map(({ first, fields }) => ({
      measurement: first.measurement,
      tags: JSON.parse(first.tags) as Record<string, string>,
      fields: Object.fromEntries(fields),
      timestampNs: first.ts_ns,
    }));
  }

  return {
    description,
    async write(points: readonly Point[]): Promise<SinkWriteResult> {
      assertOpen();
      const rejected: PointRejection[] = [];
      const valid: Point[] = [];
      points.forEach((point, index) => {
        const problem = checkPoint(point);
        if (problem) rejected.push({ index, reason: problem });
        else valid.push(point);
      });
      try {
        writeAll(valid);
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        throw new FerryError(
          'FERRY_ERR_SINK_UNAVAILABLE',
          `${description}: write failed: ${err instanceof Error ? err.message : String(err)}`,
          { sink: description, ...(typeof code === 'string' ? { sqliteCode: code } : {}) },
          { cause: err },
        );
      }
      return { written: valid.length, rejected };
    },
    async ping(): Promise<boolean> {
      if (closed) return false;
      // Writable now, not merely readable: take the write lock and let it go.
      try {
        beginImmediate.run();
        rollback.run();
        return true;
      } catch {
        return false;
      }
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      db.close();
    },
    count(measurement?: string): number {
      assertOpen();
      const row = (measurement === undefined ? countAll.get() : countOne.get(measurement)) as { n: number };
      return row.n;
    },
    query: queryPoints,
  };
}
