// The contract every Sink implementation runs (like aedes-persistence's abstract.js): what a
// write confirms is in the database with its exact values, a repeated write adds nothing,
// names survive whatever characters they hold, one bad point costs only itself, and an
// unreachable database is reported as such, never as the data's fault.
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import type { Reading } from '@ferry/protocol';
import type { FieldValue, Point, Sink } from '../src/index.js';
import { readingToPoint } from '../src/index.js';

export interface StoredPoint {
  measurement: string;
  tags: Record<string, string>;
  fields: Record<string, FieldValue>;
  timestampNs: bigint;
}

export interface SinkUnderTest {
  sink: Sink;
  /** Every point in the database, as the database returns it. */
  readBack: () => Promise<StoredPoint[]>;
  /** Makes the database unreachable or unwritable (server killed, file locked...). */
  stopDatabase: () => Promise<void>;
  /** Closes the sink and removes the database. */
  cleanup: () => Promise<void>;
}

/** What a database keeps of a point; the contract expects exactly that. */
export interface SinkCapabilities {
  /** VictoriaMetrics keeps only numbers: a string field becomes a bogus 0 sample. */
  readonly stringFields: boolean;
  /** VictoriaMetrics returns booleans as 1 and 0. */
  readonly booleanFields: boolean;
  /** VictoriaMetrics truncates timestamps to milliseconds. */
  readonly timestampResolution: 'ns' | 'ms';
}

export const FULL_FIDELITY: SinkCapabilities = { stringFields: true, booleanFields: true, timestampResolution: 'ns' };

const T0 = 1_700_000_000_123_456_789n;
const SECOND_NS = 1_000_000_000n;

function compareStored(a: StoredPoint, b: StoredPoint): number {
  const ka = JSON.stringify([a.measurement, String(a.timestampNs).padStart(25, '0'), Object.entries(a.tags).sort(), Object.entries(a.fields).sort()]);
  const kb = JSON.stringify([b.measurement, String(b.timestampNs).padStart(25, '0'), Object.entries(b.tags).sort(), Object.entries(b.fields).sort()]);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

export function sortStored(points: readonly StoredPoint[]): StoredPoint[] {
  return [...points].sort(compareStored);
}

export function sinkContract(name: string, makeSink: () => Promise<SinkUnderTest>, capabilities: SinkCapabilities = FULL_FIDELITY): void {
  /** The points as the database can keep them (only the fields it can store). */
  function writable(points: readonly Point[]): Point[] {
    return points.map((p) => ({
      ...p,
      fields: Object.fromEntries(Object.entries(p.fields).filter(([, v]) => capabilities.stringFields || typeof v !== 'string')),
    }));
  }

  /** What the database should answer for points it confirmed. */
  function expected(points: readonly Point[]): StoredPoint[] {
    return sortStored(
      points.map((p) => ({
        measurement: p.measurement,
        tags: Object.fromEntries(Object.entries(p.tags).filter(([, v]) => v !== '')),
        fields: Object.fromEntries(
          Object.entries(p.fields).map(([k, v]) => [k, typeof v === 'boolean' && !capabilities.booleanFields ? (v ? 1 : 0) : v]),
        ),
        timestampNs: capabilities.timestampResolution === 'ms' ? (p.timestampNs / 1_000_000n) * 1_000_000n : p.timestampNs,
      })),
    );
  }

  describe(`Sink contract: ${name}`, () => {
    let current: SinkUnderTest | undefined;

    async function open(): Promise<SinkUnderTest> {
      current = await makeSink();
      return current;
    }

    afterEach(async () => {
      await current?.cleanup();
      current = undefined;
    });

    it('confirms a batch and the database holds its exact values', async () => {
      const { sink, readBack } = await open();
      const points = writable([
        {
          measurement: 'telemetry',
          tags: { device: 'dev-1', gateway: 'gw-1' },
          fields: { temperature: 21.5, humidity: 40.25, door_open: true, state: 'heating' },
          timestampNs: T0,
        },
        {
          measurement: 'telemetry',
          tags: { device: 'dev-2', gateway: 'gw-1' },
          fields: { temperature: -3.125, humidity: 0, door_open: false, state: 'idle' },
          timestampNs: T0 + SECOND_NS,
        },
        { measurement: 'device_status', tags: { device: 'dev-1', gateway: 'gw-1' }, fields: { online: true, battery: 0.875 }, timestampNs: T0 },
      ]);
      expect(await sink.write(points)).toEqual({ written: 3, rejected: [] });
      expect(sortStored(await readBack())).toEqual(expected(points));
    });

    it('keeps one point when the same points are written again (a repeated write overwrites itself)', async () => {
      const { sink, readBack } = await open();
      const points = writable([
        { measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 20.5, state: 'ok' }, timestampNs: T0 },
        { measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 20.75, state: 'ok' }, timestampNs: T0 + SECOND_NS },
      ]);
      expect((await sink.write(points)).written).toBe(2);
      expect((await sink.write(points)).written).toBe(2);
      expect((await sink.write(points.slice(1))).written).toBe(1);
      expect(sortStored(await readBack())).toEqual(expected(points));
    });

    it('keeps two readings of one device in the same millisecond as two points', async () => {
      const { sink, readBack } = await open();
      const reading: Reading = {
        seq: 41,
        deviceId: 'dev-1',
        kind: 'telemetry',
        ts: 1_700_000_000_123,
        tsSource: 'device',
        receivedAt: 1_700_000_000_125,
        metrics: { temperature: 21.25 },
      };
      const points = [readingToPoint(reading, 'gw-1'), readingToPoint({ ...reading, seq: 42, metrics: { temperature: 21.5 } }, 'gw-1')];
      expect(points[0]?.timestampNs).not.toBe(points[1]?.timestampNs);
      expect(await sink.write(points)).toEqual({ written: 2, rejected: [] });
      const stored = await readBack();
      expect(stored).toHaveLength(2);
      expect(sortStored(stored)).toEqual(expected(points));
    });

    it('writes names with spaces, commas, equals signs, quotes, backslashes, Unicode and emoji unchanged', async () => {
      // (A double quote is refused in field keys only: see checkPoint.)
      const { sink, readBack } = await open();
      const points = writable([
        {
          measurement: 'room temp, "quoted" = \'single\' C:\\sensors',
          tags: {
            'tag key, with=all three': 'value with space, comma=equals "double" \'single\'',
            'back\\slash': 'C:\\temp\\new',
            'unicode ü': 'Zürich ☃ 日本語 Ω',
            '🌡️ sensor': '🚀🔥 emoji',
          },
          fields: {
            "field key, =x 'q'": 1.5,
            'naïve 🚀 \\d': 2,
            'text field': 'say "hi", path C:\\dir\\ and ends with backslash \\',
          },
          timestampNs: T0,
        },
      ]);
      expect(await sink.write(points)).toEqual({ written: 1, rejected: [] });
      expect(sortStored(await readBack())).toEqual(expected(points));
    });

    it('drops a tag whose value is empty instead of refusing the point', async () => {
      const { sink, readBack } = await open();
      const point: Point = { measurement: 'telemetry', tags: { device: 'dev-1', site: '' }, fields: { temperature: 19 }, timestampNs: T0 };
      expect(await sink.write([point])).toEqual({ written: 1, rejected: [] });
      expect(await readBack()).toEqual([{ measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 19 }, timestampNs: expected([point])[0]?.timestampNs }]);
    });

    it('writes the valid points of a mixed batch and returns each invalid one in rejected with its index', async () => {
      const { sink, readBack } = await open();
      const good = (i: number): Point => ({ measurement: 'telemetry', tags: { device: `dev-${i}` }, fields: { temperature: 20 + i }, timestampNs: T0 + BigInt(i) });
      const batch: Point[] = [
        good(0),
        { measurement: 'telemetry', tags: { device: 'no-fields' }, fields: {}, timestampNs: T0 },
        good(2),
        { measurement: 'telemetry', tags: { device: 'nan' }, fields: { temperature: Number.NaN }, timestampNs: T0 },
        { measurement: 'telemetry', tags: { device: 'line\nbreak' }, fields: { temperature: 1 }, timestampNs: T0 },
        good(5),
      ];
      const result = await sink.write(batch);
      expect(result.written).toBe(3);
      expect(result.rejected.map((r) => r.index)).toEqual([1, 3, 4]);
      expect(result.rejected[0]?.reason).toMatch(/no fields/);
      expect(result.rejected[1]?.reason).toMatch(/NaN/);
      expect(result.rejected[2]?.reason).toMatch(/line break/);
      expect(sortStored(await readBack())).toEqual(expected([good(0), good(2), good(5)]));
    });

    it('confirms an empty batch without writing anything', async () => {
      const { sink, readBack } = await open();
      expect(await sink.write([])).toEqual({ written: 0, rejected: [] });
      expect(await readBack()).toEqual([]);
    });

    it('rejects a write with FERRY_ERR_SINK_UNAVAILABLE and answers ping() false while the database is down', async () => {
      const { sink, stopDatabase } = await open();
      expect(await sink.ping()).toBe(true);
      await stopDatabase();
      expect(await sink.ping()).toBe(false);
      const point: Point = { measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 20 }, timestampNs: T0 };
      const failure: unknown = await sink.write([point]).then(
        () => 'resolved',
        (err: unknown) => err,
      );
      expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    });

    it('refuses writes with FERRY_ERR_NOT_READY after close() and answers ping() false', async () => {
      const { sink } = await open();
      await sink.close();
      expect(await sink.ping()).toBe(false);
      const failure: unknown = await sink.write([]).then(
        () => 'resolved',
        (err: unknown) => err,
      );
      expect(isFerryError(failure, 'FERRY_ERR_NOT_READY')).toBe(true);
    });

    it('present(), where the sink has it, answers one boolean per point and false for every point never written', async () => {
      const { sink } = await open();
      if (!sink.present) return;
      const written = writable([{ measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 20.5, state: 'ok' }, timestampNs: T0 }]);
      await sink.write(written);
      const never: Point[] = [
        { measurement: 'telemetry', tags: { device: 'dev-2' }, fields: { temperature: 20.5 }, timestampNs: T0 },
        { measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 20.5 }, timestampNs: T0 + SECOND_NS },
        { measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 21 }, timestampNs: T0 },
      ];
      const answer = await sink.present([...written, ...never]);
      expect(answer).toHaveLength(4);
      expect(answer.slice(1)).toEqual([false, false, false]);
      expect(await sink.present([])).toEqual([]);
    });

    it('present(), where the sink has it, rejects with FERRY_ERR_SINK_UNAVAILABLE while the database is down', async () => {
      const { sink, stopDatabase } = await open();
      if (!sink.present) return;
      await stopDatabase();
      const point: Point = { measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 20 }, timestampNs: T0 };
      const failure: unknown = await sink.present([point]).then(
        () => 'resolved',
        (err: unknown) => err,
      );
      expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    });

    it('describes itself without credentials', async () => {
      const { sink } = await open();
      expect(sink.description.length).toBeGreaterThan(0);
      expect(sink.description).not.toMatch(/password|secret|token=/i);
    });
  });
}
