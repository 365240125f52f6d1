import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFerryError } from '@ferry/protocol';
import { startInfluxd, type InfluxdHandle } from '@ferry/testkit';
import type { FieldValue, Point } from '../src/index.js';
import { checkPoint, createInfluxV1Sink, createSink, MAX_TIMESTAMP_NS, MIN_TIMESTAMP_NS } from '../src/index.js';
import { sinkContract, sortStored, type StoredPoint } from './contract.js';

/** InfluxQL identifier: double-quoted, with backslash and double quote escaped. */
function ident(name: string): string {
  return `"${name.replace(/["\\]/g, '\\$&')}"`;
}

/** InfluxDB's RFC3339 times carry up to nine fraction digits; JSON numbers (epoch=ns) would lose them. */
function rfc3339ToNs(text: string): bigint {
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(text);
  if (!match?.[1]) throw new Error(`unexpected time ${text}`);
  return BigInt(Date.parse(`${match[1]}Z`)) * 1_000_000n + BigInt((match[2] ?? '').padEnd(9, '0'));
}

async function readMeasurement(influxd: InfluxdHandle, db: string, measurement: string): Promise<StoredPoint[]> {
  const points: StoredPoint[] = [];
  // GROUP BY * puts tags in the series and leaves only fields as columns.
  for (const series of await influxd.query(db, `SELECT * FROM ${ident(measurement)} GROUP BY *`)) {
    const tags = Object.fromEntries(Object.entries(series.tags ?? {}).filter(([, v]) => v !== ''));
    for (const row of series.values) {
      const fields = Object.fromEntries(
        series.columns.flatMap((column, i) => (i > 0 && row[i] !== null && row[i] !== undefined ? [[column, row[i] as FieldValue]] : [])),
      );
      points.push({ measurement: series.name, tags, fields, timestampNs: rfc3339ToNs(String(row[0])) });
    }
  }
  return points;
}

async function readInflux(influxd: InfluxdHandle, db: string): Promise<StoredPoint[]> {
  const [listing] = await influxd.query(db, 'SHOW MEASUREMENTS');
  const names = (listing?.values ?? []).map((row) => String(row[0]));
  const points: StoredPoint[] = [];
  for (const name of names) points.push(...(await readMeasurement(influxd, db, name)));
  return points;
}

sinkContract('influxdb1 (influxd)', async () => {
  const influxd = await startInfluxd();
  await influxd.createDatabase('ferry');
  const sink = createInfluxV1Sink({ url: influxd.url, database: 'ferry', timeoutMs: 2_000 });
  return {
    sink,
    readBack: () => readInflux(influxd, 'ferry'),
    stopDatabase: () => influxd.kill(),
    cleanup: async () => {
      await sink.close();
      await influxd.stop();
    },
  };
});

describe('influxdb1 sink against influxd', () => {
  let influxd: InfluxdHandle;
  let databases = 0;
  beforeAll(async () => {
    influxd = await startInfluxd();
  });
  afterAll(async () => {
    await influxd.stop();
  });
  async function freshDatabase(): Promise<string> {
    databases += 1;
    const name = `db${databases}`;
    await influxd.createDatabase(name);
    return name;
  }
  const T = 1_700_000_000_000_000_000n;

  it('finds the points influxd drops in a partial write, returns them with its message, and counts the rest once', async () => {
    const db = await freshDatabase();
    const sink = createInfluxV1Sink({ url: influxd.url, database: db });
    const first: Point = { measurement: 'm', tags: { d: 'a' }, fields: { v: 1.5 }, timestampNs: T };
    expect(await sink.write([first])).toEqual({ written: 1, rejected: [] });
    const batch: Point[] = [
      { measurement: 'm', tags: { d: 'b' }, fields: { v: 2 }, timestampNs: T + 1n },
      // v is already a float in this shard: influxd drops this one and writes the others (400 partial write).
      { measurement: 'm', tags: { d: 'c' }, fields: { v: 'text' }, timestampNs: T + 2n },
      { measurement: 'm', tags: { d: 'd' }, fields: { v: 3 }, timestampNs: T + 3n },
      // influxd refuses `time` as a field key.
      { measurement: 'm', tags: { d: 'e' }, fields: { time: 4 }, timestampNs: T + 4n },
      { measurement: 'm', tags: { d: 'f' }, fields: { v: 5 }, timestampNs: T + 5n },
    ];
    const result = await sink.write(batch);
    expect(result.written).toBe(3);
    expect(result.rejected.map((r) => r.index)).toEqual([1, 3]);
    expect(result.rejected[0]?.reason).toMatch(/partial write: field type conflict: input field "v" on measurement "m" is type string, already exists as type float/);
    expect(result.rejected[1]?.reason).toMatch(/"time"/);
    const stored = await readMeasurement(influxd, db, 'm');
    expect(sortStored(stored)).toEqual(sortStored([first, batch[0]!, batch[2]!, batch[4]!].map((p) => ({ ...p, tags: { ...p.tags }, fields: { ...p.fields } }))));
    await sink.close();
  });

  it('reports a database that does not exist as unavailable (HTTP 404), dead-lettering nothing', async () => {
    const sink = createInfluxV1Sink({ url: influxd.url, database: 'missing' });
    const failure: unknown = await sink.write([{ measurement: 'm', tags: {}, fields: { v: 1 }, timestampNs: T }]).catch((err: unknown) => err);
    expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    expect((failure as Error).message).toMatch(/database not found/);
    expect((failure as { details: unknown }).details).toMatchObject({ status: 404 });
    await sink.close();
  });

  it('reports an unknown retention policy as unavailable (influxd answers 500), and writes to a named one', async () => {
    const db = await freshDatabase();
    const point: Point = { measurement: 'm', tags: {}, fields: { v: 1 }, timestampNs: T };
    const wrong = createSink({ type: 'influxdb1', url: influxd.url, database: db, retentionPolicy: 'nope' });
    const failure: unknown = await wrong.write([point]).catch((err: unknown) => err);
    expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    expect((failure as Error).message).toMatch(/retention policy not found/);
    const right = createSink({ type: 'influxdb1', url: influxd.url, database: db, retentionPolicy: 'autogen' });
    expect(await right.write([point])).toEqual({ written: 1, rejected: [] });
    expect(right.description).toBe(`influxdb1 ${influxd.url} db=${db} rp=autogen`);
    await wrong.close();
    await right.close();
  });

  it('keeps timestamps at both ends of the range InfluxDB accepts, to the nanosecond', async () => {
    const db = await freshDatabase();
    const sink = createInfluxV1Sink({ url: influxd.url, database: db });
    const points: Point[] = [
      { measurement: 'm', tags: {}, fields: { v: 1 }, timestampNs: MIN_TIMESTAMP_NS },
      { measurement: 'm', tags: {}, fields: { v: 2 }, timestampNs: MAX_TIMESTAMP_NS },
      { measurement: 'm', tags: {}, fields: { v: 3 }, timestampNs: T + 1n },
    ];
    expect(await sink.write(points)).toEqual({ written: 3, rejected: [] });
    expect(sortStored(await readMeasurement(influxd, db, 'm'))).toEqual(sortStored(points.map((p) => ({ ...p, tags: {}, fields: { ...p.fields } }))));
    await sink.close();
  });

  it('writes floats that read back as the same double: 1e+21, 5e-324, -0, 0.1+0.2, the largest double', async () => {
    const db = await freshDatabase();
    const sink = createInfluxV1Sink({ url: influxd.url, database: db });
    const fields = { a: 1e21, b: 5e-324, c: -0, d: 0.1 + 0.2, e: Number.MAX_VALUE, f: -1.234456e78, g: 21 };
    await sink.write([{ measurement: 'floats', tags: {}, fields, timestampNs: T }]);
    const [stored] = await readMeasurement(influxd, db, 'floats');
    for (const [key, value] of Object.entries(fields)) expect(Object.is(stored?.fields[key], value)).toBe(true);
    await sink.close();
  });

  it('round-trips generated points with hostile names and any values through influxd', async () => {
    const db = await freshDatabase();
    const sink = createInfluxV1Sink({ url: influxd.url, database: db });
    const nameChar = fc.constantFrom(' ', ',', '=', '"', "'", '\\', '#', 'a', 'Z', '0', 'é', 'ß', '日', '🚀', '🌡️');
    // String values may hold control characters; names may not (checkPoint refuses them).
    const char = fc.oneof(nameChar, fc.constantFrom('\t', '\u0000', '\u0001', '\u007f'));
    const name = fc.oneof(fc.string({ unit: nameChar, minLength: 1, maxLength: 8 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 8 }));
    // influxd refuses `time` as a tag or field key; a field and a tag with one key come back renamed `_1`.
    const key = name.filter((k) => k !== 'time');
    const value: fc.Arbitrary<FieldValue> = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.string({ unit: 'grapheme', maxLength: 16 }), fc.string({ unit: char, maxLength: 16 }));
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        name,
        fc.dictionary(key, name, { maxKeys: 3 }),
        fc.dictionary(key, value, { minKeys: 1, maxKeys: 3 }),
        fc.bigInt({ min: 1_600_000_000_000_000_000n, max: 1_800_000_000_000_000_000n }),
        async (measurementName, tags, fields, timestampNs) => {
          fc.pre(Object.keys(fields).every((f) => !(f in tags)));
          run += 1;
          // One measurement per run: a field keeps one type per shard.
          const point: Point = { measurement: `${measurementName}|${run}`, tags, fields, timestampNs };
          fc.pre(checkPoint(point) === undefined);
          expect(await sink.write([point])).toEqual({ written: 1, rejected: [] });
          const stored = await readMeasurement(influxd, db, point.measurement);
          expect(stored).toHaveLength(1);
          const [got] = stored;
          expect(got?.measurement).toBe(point.measurement);
          expect(got?.tags).toEqual(tags);
          expect(got?.timestampNs).toBe(timestampNs);
          expect(Object.keys(got?.fields ?? {}).sort()).toEqual(Object.keys(fields).sort());
          for (const [k, v] of Object.entries(fields)) expect(Object.is(got?.fields[k], v)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
    await sink.close();
  });
});
