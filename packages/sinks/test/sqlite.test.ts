import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import type { Point } from '../src/index.js';
import { compareUtf8, createSink, createSqliteSink, seriesTags, type SqliteSink } from '../src/index.js';
import { sinkContract, type SinkUnderTest } from './contract.js';

/** Writes points as the sink did before its schema had a version: one row per field (DDL and upsert copied from it). */
function writeOldSchema(path: string, points: readonly Point[]): void {
  const db = new Database(path);
  try {
    db.exec(`
      CREATE TABLE IF NOT EXISTS point_fields (
        measurement TEXT NOT NULL,
        series TEXT NOT NULL,
        tags TEXT NOT NULL,
        field TEXT NOT NULL,
        value_float REAL,
        value_bool INTEGER,
        value_text TEXT,
        ts_ns INTEGER NOT NULL,
        CHECK ((value_float IS NOT NULL) + (value_bool IS NOT NULL) + (value_text IS NOT NULL) = 1),
        UNIQUE (measurement, series, field, ts_ns)
      ) STRICT;
      CREATE INDEX IF NOT EXISTS point_fields_by_time ON point_fields (measurement, ts_ns);`);
    const upsert = db.prepare(`
      INSERT INTO point_fields (measurement, series, tags, field, value_float, value_bool, value_text, ts_ns)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (measurement, series, field, ts_ns) DO UPDATE SET
        tags = excluded.tags, value_float = excluded.value_float,
        value_bool = excluded.value_bool, value_text = excluded.value_text`);
    for (const point of points) {
      const tags = seriesTags(point);
      for (const [field, value] of Object.entries(point.fields)) {
        const typed = typeof value === 'number' ? [value, null, null] : typeof value === 'boolean' ? [null, value ? 1 : 0, null] : [null, null, value];
        upsert.run(point.measurement, JSON.stringify(tags), JSON.stringify(Object.fromEntries(tags)), field, ...typed, point.timestampNs);
      }
    }
  } finally {
    db.close();
  }
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ferry-sinks-sqlite-'));
}

sinkContract('sqlite', async (): Promise<SinkUnderTest> => {
  const dir = tempDir();
  const path = join(dir, 'points.db');
  const sink = createSqliteSink({ path, busyTimeoutMs: 50 });
  let locker: Database.Database | undefined;
  return {
    sink,
    readBack: async () => sink.query(),
    // Another connection holding the write lock: the realistic way an SQLite file stops
    // taking writes (a backup, another process), short of a full disk.
    stopDatabase: async () => {
      locker = new Database(path);
      locker.exec('BEGIN EXCLUSIVE');
    },
    cleanup: async () => {
      locker?.close();
      await sink.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('sqlite sink', () => {
  const dirs: string[] = [];
  const sinks: SqliteSink[] = [];
  function open(name = 'points.db', synchronous?: 'normal' | 'full'): { sink: SqliteSink; path: string } {
    const dir = tempDir();
    dirs.push(dir);
    const path = join(dir, name);
    const sink = createSqliteSink({ path, synchronous });
    sinks.push(sink);
    return { sink, path };
  }
  afterEach(async () => {
    for (const sink of sinks.splice(0)) await sink.close();
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  const T = 1_700_000_000_000_000_000n;
  const point = (device: string, offset: bigint, fields: Point['fields'], extraTags: Record<string, string> = {}): Point => ({
    measurement: 'telemetry',
    tags: { device, gateway: 'gw-1', ...extraTags },
    fields,
    timestampNs: T + offset,
  });

  it('keeps its points in a WAL-mode file, at either synchronous level', async () => {
    for (const synchronous of ['full', 'normal'] as const) {
      const { sink, path } = open(`${synchronous}.db`, synchronous);
      expect(await sink.write([point('d1', 0n, { temperature: 20 })])).toEqual({ written: 1, rejected: [] });
      const db = new Database(path, { readonly: true });
      try {
        expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      } finally {
        db.close();
      }
      expect(sink.description).toBe(`sqlite ${path}`);
    }
  });

  it('overwrites a field value written again for the same series and time, as InfluxDB does', async () => {
    const { sink } = open();
    await sink.write([point('d1', 0n, { temperature: 20, state: 'a' })]);
    await sink.write([point('d1', 0n, { temperature: 21, humidity: 50 })]);
    expect(sink.count()).toBe(1);
    expect(sink.query()).toEqual([
      { measurement: 'telemetry', tags: { device: 'd1', gateway: 'gw-1' }, fields: { temperature: 21, humidity: 50, state: 'a' }, timestampNs: T },
    ]);
  });

  it('treats tag order and empty tag values as the same series', async () => {
    const { sink } = open();
    await sink.write([{ measurement: 'm', tags: { b: '2', a: '1' }, fields: { v: 1 }, timestampNs: T }]);
    await sink.write([{ measurement: 'm', tags: { a: '1', b: '2', c: '' }, fields: { v: 2 }, timestampNs: T }]);
    expect(sink.query()).toEqual([{ measurement: 'm', tags: { a: '1', b: '2' }, fields: { v: 2 }, timestampNs: T }]);
  });

  it('keeps each value type: float, boolean and string', async () => {
    const { sink } = open();
    await sink.write([point('d1', 0n, { f: 0.1 + 0.2, big: 1e300, tiny: 5e-324, neg: -7.5, whole: 21, yes: true, no: false, s: 'x', empty: '' })]);
    const [stored] = sink.query();
    expect(stored?.fields).toEqual({ f: 0.30000000000000004, big: 1e300, tiny: 5e-324, neg: -7.5, whole: 21, yes: true, no: false, s: 'x', empty: '' });
    expect(typeof stored?.fields.whole).toBe('number');
  });

  it('keeps a field or tag named __proto__ as an ordinary name', async () => {
    const { sink } = open();
    const fields = Object.fromEntries([['__proto__', 1], ['constructor', 2]]) as Point['fields'];
    const tags = Object.fromEntries([['__proto__', 'x']]) as Point['tags'];
    await sink.write([{ measurement: 'm', tags, fields, timestampNs: T }]);
    const [stored] = sink.query();
    expect(Object.keys(stored?.fields ?? {}).sort()).toEqual(['__proto__', 'constructor']);
    expect(Object.getPrototypeOf(stored?.fields)).toBe(Object.prototype);
    expect(Object.keys(stored?.tags ?? {})).toEqual(['__proto__']);
  });

  it('counts points, not fields, per measurement or in all', async () => {
    const { sink } = open();
    await sink.write([
      point('d1', 0n, { a: 1, b: 2, c: 3 }),
      point('d2', 0n, { a: 1 }),
      point('d1', 1n, { a: 1 }),
      { measurement: 'device_status', tags: { device: 'd1' }, fields: { online: true }, timestampNs: T },
    ]);
    expect(sink.count()).toBe(4);
    expect(sink.count('telemetry')).toBe(3);
    expect(sink.count('device_status')).toBe(1);
    expect(sink.count('nothing')).toBe(0);
  });

  it('queries by measurement, tags, field and time range, earliest first, with a limit counted in points', async () => {
    const { sink } = open();
    await sink.write([
      point('d1', 3n, { temperature: 3, humidity: 30 }, { room: 'a b,c=d "q"' }),
      point('d1', 1n, { temperature: 1, humidity: 10 }, { room: 'a b,c=d "q"' }),
      point('d2', 2n, { temperature: 2, humidity: 20 }, { room: 'other' }),
      point('d1', 5n, { humidity: 50 }, { room: 'a b,c=d "q"' }),
      { measurement: 'device_status', tags: { device: 'd1' }, fields: { online: true }, timestampNs: T + 1n },
    ]);
    const times = (points: Point[]): bigint[] => points.map((p) => p.timestampNs - T);
    expect(times(sink.query({ measurement: 'telemetry' }))).toEqual([1n, 2n, 3n, 5n]);
    expect(times(sink.query({ measurement: 'telemetry', tags: { device: 'd1' } }))).toEqual([1n, 3n, 5n]);
    expect(times(sink.query({ measurement: 'telemetry', tags: { device: 'd1', room: 'a b,c=d "q"' } }))).toEqual([1n, 3n, 5n]);
    expect(times(sink.query({ measurement: 'telemetry', tags: { device: 'd1', room: 'other' } }))).toEqual([]);
    expect(times(sink.query({ measurement: 'telemetry', from: T + 2n, to: T + 5n }))).toEqual([2n, 3n]);
    expect(times(sink.query({ measurement: 'telemetry', limit: 2 }))).toEqual([1n, 2n]);
    const onlyTemperature = sink.query({ measurement: 'telemetry', field: 'temperature' });
    expect(times(onlyTemperature)).toEqual([1n, 2n, 3n]);
    expect(onlyTemperature.every((p) => Object.keys(p.fields).join() === 'temperature')).toBe(true);
    expect(sink.query({ measurement: 'telemetry', tags: { device: 'd1' }, limit: 1 })).toEqual([
      { measurement: 'telemetry', tags: { device: 'd1', gateway: 'gw-1', room: 'a b,c=d "q"' }, fields: { temperature: 1, humidity: 10 }, timestampNs: T + 1n },
    ]);
    expect(times(sink.query())).toEqual([1n, 1n, 2n, 3n, 5n]);
  });

  it('keeps what it confirmed across a reopen of the file', async () => {
    const first = open();
    await first.sink.write([point('d1', 0n, { temperature: 20 })]);
    await first.sink.close();
    const again = createSqliteSink({ path: first.path });
    sinks.push(again);
    expect(again.count()).toBe(1);
  });

  it('merges a point written again field by field, keeping each type, with names holding dots, quotes, Unicode or __proto__', async () => {
    const { sink } = open();
    const first = Object.fromEntries([['__proto__', 1], ['a.b', 'x'], ['naïve 🚀', true], ["it's", 2.5]]) as Point['fields'];
    const second = Object.fromEntries([['__proto__', 'now text'], ['$.c', false], ['[0]', -0.5], ['empty', '']]) as Point['fields'];
    const tags = { device: 'd1', 'rä"um.x': 'Zürich "☃"', __x: '$.y' };
    await sink.write([{ measurement: 'm', tags, fields: first, timestampNs: T }]);
    await sink.write([{ measurement: 'm', tags, fields: second, timestampNs: T }]);
    const [stored, ...more] = sink.query();
    expect(more).toEqual([]);
    expect(stored?.tags).toEqual(tags);
    expect(Object.entries(stored?.fields ?? {}).sort()).toEqual(
      [['__proto__', 'now text'], ['a.b', 'x'], ['naïve 🚀', true], ["it's", 2.5], ['$.c', false], ['[0]', -0.5], ['empty', '']].sort(),
    );
    expect(Object.getPrototypeOf(stored?.fields)).toBe(Object.prototype);
    expect(sink.query({ field: '__proto__' }).map((p) => Object.entries(p.fields))).toEqual([[['__proto__', 'now text']]]);
  });

  it('forgets a series whose write rolled back, so the next write of that series stores it again', async () => {
    const { sink, path } = open();
    // Another connection makes the point insert fail after the series row went in.
    const other = new Database(path);
    try {
      other.exec('CREATE TRIGGER refuse BEFORE INSERT ON points WHEN NEW.ts_ns = 666 BEGIN SELECT RAISE(ABORT, \'refused\'); END');
      const failure: unknown = await sink.write([point('d9', 0n, { a: 1 }), { ...point('d9', 0n, { a: 2 }), timestampNs: 666n }]).catch((err: unknown) => err);
      expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
      expect(other.prepare('SELECT COUNT(*) FROM series').pluck().get()).toBe(0);
      other.exec('DROP TRIGGER refuse');
    } finally {
      other.close();
    }
    await sink.write([point('d9', 1n, { a: 3 })]);
    expect(sink.query()).toEqual([{ measurement: 'telemetry', tags: { device: 'd9', gateway: 'gw-1' }, fields: { a: 3 }, timestampNs: T + 1n }]);
  });

  it('answers plain SQL on the point_fields view with the columns of the old table, rowid in arrival order', async () => {
    const { sink, path } = open();
    await sink.write([point('d2', 5_000_000n, { n: 1, v: 2.5 }), point('d1', 3_000_000n, { n: 2, v: -1, ok: true, s: 'x' })]);
    await sink.write([point('d2', 5_000_000n, { n: 7 }), point('d1', 1_000_000n, { n: 3, v: 0.1 + 0.2 })]);
    const db = new Database(path, { readonly: true });
    try {
      // As test/faults/devices.ts and test/faults/edge-kill9.test.ts read the file.
      expect(
        db
          .prepare(
            "SELECT json_extract(tags, '$.device') AS device, CAST(value_float AS INTEGER) AS n, rowid FROM point_fields WHERE measurement = 'telemetry' AND field = 'n' ORDER BY rowid",
          )
          .all(),
      ).toEqual([
        { device: 'd2', n: 7, rowid: 1 },
        { device: 'd1', n: 2, rowid: 2 },
        { device: 'd1', n: 3, rowid: 3 },
      ]);
      expect(
        db
          .prepare(
            "SELECT json_extract(tags, '$.device') AS device, ts_ns / 1000000 AS ts, value_float AS v FROM point_fields WHERE measurement = 'telemetry' AND field = 'v' ORDER BY ts_ns",
          )
          .all(),
      ).toEqual([
        { device: 'd1', ts: Number(T / 1_000_000n) + 1, v: 0.30000000000000004 },
        { device: 'd1', ts: Number(T / 1_000_000n) + 3, v: -1 },
        { device: 'd2', ts: Number(T / 1_000_000n) + 5, v: 2.5 },
      ]);
      expect(
        db
          .prepare("SELECT measurement, series, tags, field, value_float, value_bool, value_text, ts_ns FROM point_fields WHERE field IN ('ok', 's') ORDER BY field")
          .safeIntegers(true)
          .all(),
      ).toEqual([
        { measurement: 'telemetry', series: '[["device","d1"],["gateway","gw-1"]]', tags: '{"device":"d1","gateway":"gw-1"}', field: 'ok', value_float: null, value_bool: 1n, value_text: null, ts_ns: T + 3_000_000n },
        { measurement: 'telemetry', series: '[["device","d1"],["gateway","gw-1"]]', tags: '{"device":"d1","gateway":"gw-1"}', field: 's', value_float: null, value_bool: null, value_text: 'x', ts_ns: T + 3_000_000n },
      ]);
      expect(db.prepare('SELECT typeof(value_float) FROM point_fields WHERE field = ?').pluck().get('n')).toBe('real');
    } finally {
      db.close();
    }
  });

  it('migrates a file of the one-row-per-field schema on open, keeping every point, its types and its arrival order', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const path = join(dir, 'old.db');
    const old = [
      point('d2', 2n, { temperature: 0.1 + 0.2, third: 1 / 3, big: 1e300, tiny: 5e-324, whole: 21, huge: 2 ** 64 }),
      point('d1', 1n, { door: true, shut: false, state: 'idle', json: '[1,{"a":2}]', empty: '' }, { room: 'Zürich "☃" 🚀' }),
      { measurement: 'device_status', tags: { device: 'd1' }, fields: Object.fromEntries([['__proto__', 1], ['a.b', 2]]) as Point['fields'], timestampNs: T },
      point('d2', 2n, { temperature: 22.5 }),
    ];
    writeOldSchema(path, old);
    const sink = createSqliteSink({ path });
    sinks.push(sink);
    expect(sink.count()).toBe(3);
    const byKey = (p: Point): string => `${p.measurement} ${p.timestampNs - T} ${p.tags.device ?? ''}`;
    const stored = new Map(sink.query().map((p) => [byKey(p), p]));
    expect(stored.get('telemetry 2 d2')).toEqual({ ...old[0], fields: { temperature: 22.5, third: 1 / 3, big: 1e300, tiny: 5e-324, whole: 21, huge: 2 ** 64 } });
    expect(stored.get('telemetry 1 d1')).toEqual(old[1]);
    expect(Object.entries(stored.get('device_status 0 d1')?.fields ?? {}).sort()).toEqual([['__proto__', 1], ['a.b', 2]]);
    for (const p of stored.values()) for (const v of Object.values(p.fields)) expect(['number', 'boolean', 'string']).toContain(typeof v);
    expect(sink.query({ measurement: 'telemetry', tags: { room: 'Zürich "☃" 🚀' }, field: 'door' })).toEqual([{ ...old[1], fields: { door: true } }]);

    // New writes merge into migrated points and add new ones.
    await sink.write([point('d2', 2n, { humidity: 40, big: -1 }), point('d2', 9n, { temperature: 1 })]);
    expect(sink.count()).toBe(4);
    expect(sink.query({ tags: { device: 'd2' }, from: T + 2n, limit: 1 })).toEqual([
      { ...old[0], fields: { temperature: 22.5, third: 1 / 3, big: -1, tiny: 5e-324, whole: 21, huge: 2 ** 64, humidity: 40 } },
    ]);
    await sink.close();

    const db = new Database(path, { readonly: true });
    try {
      expect(db.pragma('user_version', { simple: true })).toBe(1);
      expect(db.prepare("SELECT type FROM sqlite_schema WHERE name = 'point_fields'").pluck().get()).toBe('view');
      expect(db.prepare("SELECT name FROM sqlite_schema WHERE name LIKE '%point_fields%' AND type = 'index'").all()).toEqual([]);
      // Arrival order survives: the point first written first keeps the smallest rowid.
      expect(db.prepare("SELECT json_extract(tags, '$.device') || ' ' || (ts_ns - ?) FROM point_fields WHERE field IN ('temperature', 'door', 'a.b') ORDER BY rowid").pluck().all(T)).toEqual([
        'd2 2',
        'd1 1',
        'd1 0',
        'd2 9',
      ]);
    } finally {
      db.close();
    }
  });

  it('identifies a series by its tags in UTF-8 byte order, above U+FFFF too', async () => {
    const { sink, path } = open();
    await sink.write([{ measurement: 'm', tags: { '😀': '2', '\uff61': '1', a: '0', ab: '3' }, fields: { v: 1 }, timestampNs: T }]);
    await sink.write([{ measurement: 'm', tags: { ab: '3', '\uff61': '1', a: '0', '😀': '2' }, fields: { w: 2 }, timestampNs: T }]);
    expect(sink.count()).toBe(1);
    const db = new Database(path, { readonly: true });
    try {
      expect(db.prepare('SELECT series FROM series').pluck().all()).toEqual([JSON.stringify([['a', '0'], ['ab', '3'], ['\uff61', '1'], ['😀', '2']])]);
    } finally {
      db.close();
    }
    const names = ['', 'a', 'ab', 'b', '\ud7ff', '\ue000', '\uff61', '\uffff', '😀', '😀a', '🚀', '\ud83d', '\ude00', 'x\ud800', 'x\ud800\udc00', 'x\udc00'];
    for (const a of names) {
      for (const b of names) expect([a, b, compareUtf8(a, b)]).toEqual([a, b, Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))]);
    }
  });

  it('refuses a file whose schema is newer than it understands', () => {
    const dir = tempDir();
    dirs.push(dir);
    const path = join(dir, 'newer.db');
    const db = new Database(path);
    db.pragma('user_version = 2');
    db.close();
    expect(() => createSqliteSink({ path })).toThrow(expect.objectContaining({ code: 'FERRY_ERR_STORAGE' }) as Error);
  });

  it('is built by createSink from a validated config', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const sink = createSink({ type: 'sqlite', path: join(dir, 'nested', 'points.db') }) as SqliteSink;
    sinks.push(sink);
    expect(await sink.ping()).toBe(true);
    expect(sink.description).toContain('nested');
  });
});
