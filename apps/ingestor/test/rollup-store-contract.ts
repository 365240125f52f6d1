// The contract every RollupStateStore runs (rollup-store.ts): the SQLite store of one ingestor and
// the Redis store the ingestors share. A subject wraps a store with the dedupe store its saves are
// atomic with, and with what the shared store needs around it (taking a gateway over before its
// series are read, a flush before its effects are visible); for SQLite those are no-ops.
import { afterEach, describe, expect, it } from 'vitest';
import type { DedupeEntry, SeenRecord } from '../src/dedupe.js';
import type { RollupPointItem, RollupSave, RollupStateStore } from '../src/rollup-store.js';

export interface RollupStoreSubject {
  readonly store: RollupStateStore;
  /** Records a chunk's seqs in the dedupe store the saves are atomic with: what `alsoRecord` does. */
  record(entries: readonly DedupeEntry[]): number;
  /** What the dedupe store holds for a seq, read as the next holder reads it. */
  lookup(gatewayId: string, seq: number): Promise<SeenRecord | undefined>;
  /** Takes the gateway (a new lease holder loads its windows); a no-op for one process. */
  take(gatewayTag: string): Promise<void>;
  /** Points the store handed over to be written again: left by the last run or by the last holder. */
  readonly leftovers: RollupPointItem[];
  /** Resolves once every save so far is stored. */
  settle(): Promise<void>;
  /** Settles and closes this store, then opens another on the same state: a restart, or the next lease holder. */
  reopen(): Promise<RollupStoreSubject>;
  /** Idempotent. */
  close(): Promise<void>;
}

export interface RollupStoreImplementation {
  readonly name: string;
  /** A store on fresh, empty state. */
  open(): Promise<RollupStoreSubject>;
}

const SEP = '\u0000';
const seriesKey = (gatewayTag: string, deviceId: string): string => `${gatewayTag}${SEP}${deviceId}${SEP}v${SEP}60000`;
const point = (gatewayTag: string, deviceId: string, windowStart: number, version: number, count: number): RollupPointItem => ({
  key: `${seriesKey(gatewayTag, deviceId)}${SEP}${windowStart}`,
  version,
  gatewayTag,
  point: { measurement: 'telemetry_1m', tags: { device: deviceId, gateway: gatewayTag }, fields: { v_count: count }, timestampNs: BigInt(windowStart) * 1_000_000n },
});
const written = (gatewayId: string, seq: number): DedupeEntry => ({ gatewayId, seq, hash: `h${seq}`, outcome: 'written' });

export function rollupStoreContract(implementation: RollupStoreImplementation): void {
  describe(`RollupStateStore contract: ${implementation.name}`, () => {
    const subjects: RollupStoreSubject[] = [];
    afterEach(async () => {
      for (const s of subjects.splice(0).reverse()) await s.close();
    });
    const open = async (): Promise<RollupStoreSubject> => {
      const s = await implementation.open();
      subjects.push(s);
      return s;
    };
    const reopen = async (s: RollupStoreSubject): Promise<RollupStoreSubject> => {
      const again = await s.reopen();
      subjects.push(again);
      return again;
    };
    const save = (series: [string, string, number][], points: RollupPointItem[] = []): RollupSave => ({
      series: series.map(([gatewayTag, deviceId, version]) => ({ key: seriesKey(gatewayTag, deviceId), gatewayTag, saved: { state: `{"n":${version}}`, version } })),
      points,
    });

    it('saves a chunk\'s windows and points with its records, and the next holder finds all three', async () => {
      const a = await open();
      await a.take('gw');
      expect(a.store.holds('gw')).toBe(true);
      const p = point('gw', 'd1', 0, 0, 3);
      const pruned = a.store.commit(() => save([['gw', 'd1', 1]], [p]), () => a.record([written('gw', 1), written('gw', 2)]));
      expect(pruned).toBe(0);
      expect(a.store.series(seriesKey('gw', 'd1'), 'gw')).toEqual({ state: '{"n":1}', version: expect.any(Number) as number });
      const b = await reopen(a);
      await b.take('gw');
      expect(b.store.series(seriesKey('gw', 'd1'), 'gw')?.state).toBe('{"n":1}');
      expect(b.leftovers).toEqual([p]);
      expect((await b.lookup('gw', 2))?.outcome).toBe('written');
    });

    it('saves nothing when the chunk\'s records fail before they are made', async () => {
      const a = await open();
      await a.take('gw');
      expect(() =>
        a.store.commit(
          () => save([['gw', 'd1', 1]], [point('gw', 'd1', 0, 0, 1)]),
          () => {
            throw new Error('disk full');
          },
        ),
      ).toThrow('disk full');
      expect(a.store.series(seriesKey('gw', 'd1'), 'gw')).toBeUndefined();
      const b = await reopen(a);
      await b.take('gw');
      expect(b.store.series(seriesKey('gw', 'd1'), 'gw')).toBeUndefined();
      expect(b.leftovers).toEqual([]);
      expect(b.store.outboxSize()).toBe(0);
      expect(await b.lookup('gw', 1)).toBeUndefined();
    });

    it('keeps the latest save of a series, with or without records in the same commit', async () => {
      const a = await open();
      await a.take('gw');
      a.store.commit(() => save([['gw', 'd1', 1], ['gw', 'd2', 1]]), () => a.record([written('gw', 1)]));
      a.store.commit(() => save([['gw', 'd1', 2]]), () => a.record([written('gw', 2)]));
      // Windows closed by the wall clock: no records to ride with.
      a.store.commit(() => save([['gw', 'd2', 2]]), () => undefined);
      const b = await reopen(a);
      await b.take('gw');
      expect(b.store.series(seriesKey('gw', 'd1'), 'gw')?.state).toBe('{"n":2}');
      expect(b.store.series(seriesKey('gw', 'd2'), 'gw')?.state).toBe('{"n":2}');
    });

    it('leaves for the next holder only the points the database did not confirm, at their newest revision', async () => {
      const a = await open();
      await a.take('gw');
      const first = point('gw', 'd1', 0, 0, 1);
      const second = point('gw', 'd1', 60_000, 0, 2);
      a.store.commit(() => save([['gw', 'd1', 1]], [first, second]), () => a.record([written('gw', 1)]));
      expect(a.store.outboxSize()).toBe(2);
      a.store.confirmed([first]);
      expect(a.store.outboxSize()).toBe(1);
      // A correction of the second window is saved before its first revision is confirmed: that confirmation leaves it.
      const corrected = point('gw', 'd1', 60_000, 1, 3);
      a.store.commit(() => save([['gw', 'd1', 2]], [corrected]), () => a.record([written('gw', 2)]));
      a.store.confirmed([second]);
      expect(a.store.outboxSize()).toBe(1);
      const b = await reopen(a);
      await b.take('gw');
      expect(b.leftovers).toEqual([corrected]);
      b.store.confirmed([corrected]);
      const c = await reopen(b);
      await c.take('gw');
      expect(c.leftovers).toEqual([]);
    });

    it('keeps the series of each gateway apart', async () => {
      const a = await open();
      await a.take('gw-1');
      await a.take('gw-2');
      a.store.commit(() => save([['gw-1', 'd1', 1], ['gw-2', 'd1', 1]], [point('gw-2', 'd1', 0, 0, 1)]), () => a.record([written('gw-1', 1), written('gw-2', 1)]));
      a.store.commit(() => save([['gw-1', 'd1', 2]]), () => a.record([written('gw-1', 2)]));
      const b = await reopen(a);
      await b.take('gw-2');
      expect(b.store.series(seriesKey('gw-2', 'd1'), 'gw-2')?.state).toBe('{"n":1}');
      expect(b.leftovers.map((p) => p.gatewayTag)).toEqual(['gw-2']);
      await b.take('gw-1');
      expect(b.store.series(seriesKey('gw-1', 'd1'), 'gw-1')?.state).toBe('{"n":2}');
    });
  });
}
