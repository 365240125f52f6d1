// The embedded sink: points in one SQLite file, the default store for a single Raspberry Pi.
// A point is keyed like InfluxDB keys it (measurement, series, time), so a repeated write
// overwrites itself instead of adding a point; a field written again for the same series and
// time is overwritten, the point's other fields are kept.
//
// Schema (PRAGMA user_version = 1):
// - series (id, measurement, series, tags): one row per measurement and tag set. `series` is
//   the identity, JSON [key, value] pairs sorted by key in UTF-8 byte order with empty values
//   dropped; `tags` the same tags as a JSON object.
// - points (series_id, ts_ns, fields): one row per point, UNIQUE (series_id, ts_ns); `fields`
//   is a JSON object of the point's fields (number, boolean or string). The rowid is arrival
//   order: an overwrite keeps the row and its rowid.
// - point_fields: a VIEW with one row per field, for reading the file with plain SQL:
//   measurement, series, tags, field, value_float (REAL, for numbers), value_bool (1/0),
//   value_text, ts_ns, and rowid (the point's rowid). Exactly one value_* column is not null.
//   e.g. SELECT json_extract(tags, '$.device') AS device, ts_ns, value_float FROM point_fields
//   WHERE measurement = 'telemetry' AND field = 'temperature' ORDER BY ts_ns
//   (value_float is SQLite's own parse of the JSON number: for some values of extreme magnitude
//   it differs from the written one in the last bit; query() returns the exact value.)
// Files written before the schema had a version (a point_fields TABLE, one row per field) are
// migrated in one transaction when opened (one way: older versions cannot write the result);
// the freed pages stay in the file until a VACUUM.
//
// Durability (journal_mode=WAL):
// - synchronous=FULL (default): the WAL is fsynced at every commit, before write() resolves.
//   A power cut loses nothing that write() confirmed (provided the storage honours fsync; cheap
//   SD cards may not).
// - synchronous=NORMAL: the WAL is fsynced only at checkpoints. A process crash loses nothing,
//   but a power cut can roll back the writes committed since the last checkpoint, i.e. points
//   whose readings were already acknowledged to the gateway and deleted from its outbox. The
//   file stays consistent either way. Choose it only if losing the last seconds is acceptable.
// Values: numbers are kept as JS writes them (exact, except that -0 reads back as 0), booleans
// as JSON true/false, strings as text, so the type survives.
import type Database from 'better-sqlite3';
import { FerryError } from '@ferry/protocol';
import { openSqlite } from '@ferry/runtime';
import type { FieldValue, Point, PointRejection, Sink, SinkWriteResult } from './sink.js';
import { checkPoint, compareUtf8, seriesTags } from './point-rules.js';

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

interface PointRow {
  measurement: string;
  tags: string;
  fields: string;
  ts_ns: bigint;
}

const SCHEMA_VERSION = 1;

const SCHEMA = `
  CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    series TEXT NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (measurement, series)
  ) STRICT;
  CREATE TABLE points (
    series_id INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    fields TEXT NOT NULL,
    -- Also the index that finds a series' points in a time range.
    UNIQUE (series_id, ts_ns)
  ) STRICT;
`;

// A view cannot have a rowid of its own: the point's rowid is a column named rowid, so
// "ORDER BY rowid" over point_fields still means arrival order.
const POINT_FIELDS_VIEW = `
  CREATE VIEW point_fields AS
  SELECT s.measurement AS measurement, s.series AS series, s.tags AS tags, f.key AS field,
    CASE WHEN f.type IN ('integer', 'real') THEN CAST(f.value AS REAL) END AS value_float,
    CASE f.type WHEN 'true' THEN 1 WHEN 'false' THEN 0 END AS value_bool,
    CASE WHEN f.type = 'text' THEN f.value END AS value_text,
    p.ts_ns AS ts_ns, p.rowid AS rowid
  FROM points AS p JOIN series AS s ON s.id = p.series_id, json_each(p.fields) AS f;
`;

// The schema before versioning: one row per field (user_version 0). Copied into the new
// tables keeping arrival order; numbers are rendered by JS (SQLite's own JSON rendering of a
// REAL keeps only 15 digits).
const MIGRATE_FROM_POINT_FIELDS_TABLE = `
  INSERT INTO series (measurement, series, tags)
    SELECT measurement, series, tags FROM point_fields GROUP BY measurement, series ORDER BY MIN(rowid);
  INSERT INTO points (series_id, ts_ns, fields)
    SELECT s.id, f.ts_ns, json_group_object(f.field,
      CASE
        WHEN f.value_float IS NOT NULL THEN json(ferry_json_number(f.value_float))
        WHEN f.value_bool IS NOT NULL THEN json(CASE f.value_bool WHEN 0 THEN 'false' ELSE 'true' END)
        ELSE f.value_text
      END)
    FROM point_fields AS f JOIN series AS s ON s.measurement = f.measurement AND s.series = f.series
    GROUP BY s.id, f.ts_ns ORDER BY MIN(f.rowid);
  DROP INDEX IF EXISTS point_fields_by_time;
  DROP TABLE point_fields;
`;

function setUpSchema(db: Database.Database, what: string): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version === SCHEMA_VERSION) return;
  if (version > SCHEMA_VERSION) {
    throw new FerryError('FERRY_ERR_STORAGE', `${what}: schema version ${version} is newer than this version of Ferry understands (${SCHEMA_VERSION})`, {
      schemaVersion: version,
    });
  }
  db.function('ferry_json_number', { deterministic: true }, (value: unknown) => JSON.stringify(value));
  // IMMEDIATE, and the version read again inside: two processes opening the file at once
  // migrate it once.
  db.transaction(() => {
    if ((db.pragma('user_version', { simple: true }) as number) === SCHEMA_VERSION) return;
    const old = db.prepare<[], { type: string }>("SELECT type FROM sqlite_schema WHERE name = 'point_fields'").get();
    db.exec(SCHEMA);
    if (old?.type === 'table') db.exec(MIGRATE_FROM_POINT_FIELDS_TABLE);
    db.exec(POINT_FIELDS_VIEW);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

/** Past this many series the cache starts over: it only saves a lookup, the series table is the truth. */
const MAX_CACHED_SERIES = 100_000;

function byKey(a: [string, FieldValue], b: [string, FieldValue]): number {
  return compareUtf8(a[0], b[0]);
}

export function createSqliteSink(opts: SqliteSinkOptions): SqliteSink {
  const description = `sqlite ${opts.path}`;
  const db = openSqlite({
    path: opts.path,
    what: 'SQLite sink',
    synchronous: opts.synchronous === 'normal' ? 'normal' : 'full',
    busyTimeoutMs: opts.busyTimeoutMs ?? 2_000,
    setup: (d) => setUpSchema(d, `SQLite sink ${opts.path}`),
  });

  const findSeries = db.prepare<[string, string], number>('SELECT id FROM series WHERE measurement = ? AND series = ?').pluck();
  const insertSeries = db.prepare<[string, string, string]>('INSERT INTO series (measurement, series, tags) VALUES (?, ?, ?)');
  // Merges like InfluxDB: a field written again is overwritten, the point's other fields kept.
  // (json_patch deletes a field patched with null; field values are never null.)
  const upsertPoint = db.prepare<[number, bigint, string]>(`
    INSERT INTO points (series_id, ts_ns, fields) VALUES (?, ?, ?)
    ON CONFLICT (series_id, ts_ns) DO UPDATE SET fields = json_patch(fields, excluded.fields)`);
  // measurement + NUL + series JSON -> series id (checkPoint refuses control characters in a measurement).
  const seriesIds = new Map<string, number>();

  function seriesIdOf(measurement: string, key: string, tags: Array<[string, string]>, series: string, added: string[]): number {
    let id = findSeries.get(measurement, series);
    if (id === undefined) id = Number(insertSeries.run(measurement, series, JSON.stringify(Object.fromEntries(tags))).lastInsertRowid);
    if (seriesIds.size >= MAX_CACHED_SERIES) seriesIds.clear();
    seriesIds.set(key, id);
    added.push(key);
    return id;
  }

  const writeAll = db.transaction((points: readonly Point[], added: string[]) => {
    for (const point of points) {
      const tags = seriesTags(point);
      const series = JSON.stringify(tags);
      const key = `${point.measurement}\u0000${series}`;
      const id = seriesIds.get(key) ?? seriesIdOf(point.measurement, key, tags, series, added);
      upsertPoint.run(id, point.timestampNs, JSON.stringify(point.fields));
    }
  });
  const countAll = db.prepare<[], number>('SELECT COUNT(*) FROM points').pluck();
  const countOne = db
    .prepare<[string], number>('SELECT COUNT(*) FROM series AS s CROSS JOIN points AS p ON p.series_id = s.id WHERE s.measurement = ?')
    .pluck();
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
    const seriesClauses: string[] = [];
    const pointClauses: string[] = [];
    const params: unknown[] = [];
    if (query.measurement !== undefined) {
      seriesClauses.push('measurement = ?');
      params.push(query.measurement);
    }
    for (const [key, value] of Object.entries(query.tags ?? {})) {
      seriesClauses.push('EXISTS (SELECT 1 FROM json_each(tags) AS t WHERE t.key = ? AND t.value = ?)');
      params.push(key, value);
    }
    if (query.from !== undefined) {
      pointClauses.push('p.ts_ns >= ?');
      params.push(query.from);
    }
    if (query.to !== undefined) {
      pointClauses.push('p.ts_ns < ?');
      params.push(query.to);
    }
    if (query.field !== undefined) {
      pointClauses.push('EXISTS (SELECT 1 FROM json_each(p.fields) AS f WHERE f.key = ?)');
      params.push(query.field);
    }
    const where = (clauses: string[]): string => (clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '');
    const limit = query.limit !== undefined ? 'LIMIT ?' : '';
    if (query.limit !== undefined) params.push(query.limit);
    // The series are chosen first (few rows: the tag filter runs once per series, not once per
    // point), then their points are reached through (series_id, ts_ns), never by scanning the
    // points table: MATERIALIZED and CROSS JOIN keep the planner to that order.
    const sql = `
      WITH s AS MATERIALIZED (SELECT id, measurement, series, tags FROM series ${where(seriesClauses)})
      SELECT s.measurement AS measurement, s.tags AS tags, p.fields AS fields, p.ts_ns AS ts_ns
      FROM s CROSS JOIN points AS p ON p.series_id = s.id
      ${where(pointClauses)}
      ORDER BY p.ts_ns, s.measurement, s.series ${limit}`;
    let statement = queryStatements.get(sql);
    if (!statement) {
      statement = db.prepare(sql).safeIntegers(true);
      queryStatements.set(sql, statement);
    }
    return (statement.all(...params) as PointRow[]).map((row) => {
      // JSON.parse defines every key as an own property, so a field named `__proto__` stays a
      // field; entries are sorted by name as the rows of the old one-row-per-field table were.
      const stored = Object.entries(JSON.parse(row.fields) as Record<string, FieldValue>);
      const fields = query.field === undefined ? stored.sort(byKey) : stored.filter(([name]) => name === query.field);
      return {
        measurement: row.measurement,
        tags: JSON.parse(row.tags) as Record<string, string>,
        fields: Object.fromEntries(fields),
        timestampNs: row.ts_ns,
      };
    });
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
      const added: string[] = [];
      try {
        writeAll(valid, added);
      } catch (err) {
        // The series rows inserted by this write were rolled back with it.
        for (const key of added) seriesIds.delete(key);
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
      return measurement === undefined ? countAll.get()! : countOne.get(measurement)!;
    },
    query: queryPoints,
  };
}
