import { describe, expect, it } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import type { DeadLetterStore } from '@ferry/deadletter';
import { createConfirm, storageRecorder } from '../src/confirm.js';
import type { DedupeEntry, DedupeStore } from '../src/dedupe.js';
import type { DeviceDedupeStore } from '../src/device-dedupe.js';
import type { ReadingOutcome } from '../src/ack.js';
import type { PendingWrite } from '../src/pipeline.js';
import type { ConfirmedReading, Rollups } from '../src/rollup.js';
import type { Reading } from '@ferry/protocol';
import { reading } from './fixtures.js';

/** A confirmation over stores that record in memory; the device store fails as often as `deviceFailures` says. */
function rig(deviceFailures: number) {
  const recordedSeqs: DedupeEntry[][] = [];
  const rolledUp: ConfirmedReading[][] = [];
  const settled: { seq: number | null; outcome: ReadingOutcome }[] = [];
  let failuresLeft = deviceFailures;
  const dedupe: DedupeStore = {
    lookup: () => undefined,
    record(entries) {
      recordedSeqs.push([...entries]);
      return 0;
    },
    counts: () => ({ held: 0, pruned: 0 }),
    close() {},
  };
  const deviceDedupe: DeviceDedupeStore = {
    lookup: () => undefined,
    record() {
      if (failuresLeft > 0) {
        failuresLeft--;
        throw new Error('database or disk is full');
      }
      return 0;
    },
    held: 0,
    close() {},
  };
  // Only commit() is reached by a confirmation.
  const rollups = {
    commit<T>(readings: readonly ConfirmedReading[], alsoRecord: () => T): T {
      rolledUp.push([...readings]);
      return alsoRecord();
    },
  } as unknown as Rollups;
  const owner = { settle: (seq: number | null, outcome: ReadingOutcome) => settled.push({ seq, outcome }) };
  const item = (seq: number): PendingWrite => {
    const r: Reading = reading(seq);
    return { origin: 'gateway', gatewayId: 'gw-1', seq, device: undefined, hash: `h${seq}`, point: null, rolled: r, deviceId: r.deviceId, raw: r, owner, deadLetterOnRefusal: true, copies: [] };
  };
  const confirm = createConfirm({
    dedupe,
    deviceDedupe,
    deadLetters: {} as DeadLetterStore,
    rollups,
    intents: undefined,
    pointsMayBeMissing: true,
    sinkDescription: 'test sink',
    inMemory: new Map(),
    inMemoryDevice: new Map(),
    recordIn: storageRecorder({}),
    clock: { now: () => 1_000 },
    logger: silentLogger(),
    events: {},
  });
  return { confirm, item, recordedSeqs, rolledUp, settled };
}

describe('confirm', () => {
  it('rolls a chunk up once when recording it fails after the seqs were committed and the writer confirms it again', () => {
    const { confirm, item, recordedSeqs, rolledUp, settled } = rig(2);
    const chunk = [item(1), item(2), item(3)];
    const result = { written: 0, rejected: [] };
    expect(() => confirm(chunk, result, undefined)).toThrow('disk is full');
    expect(() => confirm(chunk, result, undefined)).toThrow('disk is full');
    expect(settled).toEqual([]);
    confirm(chunk, result, undefined);

    // The seqs are recorded on every try (an idempotent upsert), the rollup windows on the first only.
    expect(rolledUp.map((readings) => readings.length)).toEqual([3]);
    expect(recordedSeqs.map((entries) => entries.map((e) => e.seq))).toEqual([
      [1, 2, 3],
      [1, 2, 3],
      [1, 2, 3],
    ]);
    expect(settled.map((s) => [s.seq, s.outcome.kind])).toEqual([
      [1, 'written'],
      [2, 'written'],
      [3, 'written'],
    ]);

    // The next chunk is a chunk of its own: rolled up.
    confirm([item(4), item(5)], result, undefined);
    expect(rolledUp.map((readings) => readings.map((r) => r.reading.seq))).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
  });
});
