import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { Point } from '../src/index.js';
import { createSink, createSqliteSink, type SqliteSink } from '../src/index.js';
import { sinkContract, type SinkUnderTest } from './contract.js';

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

  it('is built by createSink from a validated config', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const sink = createSink({ type: 'sqlite', path: join(dir, 'nested', 'points.db') }) as SqliteSink;
    sinks.push(sink);
    expect(await sink.ping()).toBe(true);
    expect(sink.description).toContain('nested');
  });
});
