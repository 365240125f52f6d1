// Stage: confirm. Runs once the sink confirmed a chunk (write.ts): files the database's refusals as
// dead letters, records every seq (with the rollup windows and the chunk's write intent in one
// transaction) and the device identities, then settles each reading's owner and copies and hands
// the written readings to the health model. Until this has run, nothing of the chunk is acked.
import type { Clock, Logger } from '@ferry/runtime';
import type { DeadLetterStore, NewDeadLetter } from '@ferry/deadletter';
import type { Point, SinkWriteResult } from '@ferry/sinks';
import type { ReadingOutcome } from './ack.js';
import { rawJson } from './classify.js';
import type { DedupeEntry, DedupeStore } from './dedupe.js';
import type { DeviceDedupeStore, DeviceIdentity } from './device-dedupe.js';
import type { Intent, IntentLog } from './intents.js';
import type { ConfirmedReading, Rollups } from './rollup.js';
import { DIRECT_SOURCE, directLetter, fileLetters } from './direct-path.js';
import type { LocalStore, PendingWrite, PipelineEvents } from './pipeline.js';

/** What a reading's write intent is keyed by: its gateway's seq, or a direct reading's journal row. */
export function intentSource(item: PendingWrite): string {
  return item.origin === 'direct' ? DIRECT_SOURCE : item.gatewayId;
}

/** One write to a local store, reported to `events.storage` either way; a failure is thrown on. */
export type RecordIn = <T>(store: LocalStore, write: () => T) => T;

export function storageRecorder(events: PipelineEvents): RecordIn {
  return <T>(store: LocalStore, write: () => T): T => {
    let result: T;
    try {
      result = write();
    } catch (err) {
      events.storage?.(store, err);
      throw err;
    }
    events.storage?.(store);
    return result;
  };
}

export interface ConfirmOptions {
  readonly dedupe: DedupeStore;
  readonly deviceDedupe: DeviceDedupeStore;
  readonly deadLetters: DeadLetterStore;
  readonly rollups: Rollups | undefined;
  readonly intents: IntentLog | undefined;
  /** Processing may leave a reading nothing to write raw (its point null): the sink counts fewer points than readings. */
  readonly pointsMayBeMissing: boolean;
  /** Named in a refused reading's dead letter. */
  readonly sinkDescription: string;
  /** Readings being written, per gateway and seq, and by device identity (pipeline.ts registers them). */
  readonly inMemory: Map<string, Map<number, PendingWrite>>;
  readonly inMemoryDevice: Map<string, PendingWrite>;
  readonly recordIn: RecordIn;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly events: PipelineEvents;
}

const WRITTEN: ReadingOutcome = { kind: 'written' };
const DUPLICATE: ReadingOutcome = { kind: 'duplicate' };
const NONE_REFUSED: ReadonlyMap<number, string> = new Map();

/** What one chunk's confirmation records, gathered before anything is written locally. */
interface ChunkRecords {
  readonly entries: DedupeEntry[];
  readonly identities: DeviceIdentity[];
  readonly rolled: ConfirmedReading[];
  readonly letters: NewDeadLetter[];
  readonly letterItems: PendingWrite[];
}

/**
 * The confirmation the writer calls (WriterOptions.confirm). It may run again for the same chunk
 * and result when a local store failed: every step is one a second pass may repeat.
 */
export function createConfirm(options: ConfirmOptions): (chunk: readonly PendingWrite[], result: SinkWriteResult, intent: unknown) => void {
  const { dedupe, deviceDedupe, deadLetters, rollups, intents, recordIn, events, inMemory, inMemoryDevice } = options;
  /** Readings whose refusal is filed as a dead letter already: a confirmation run again does not file it twice. */
  const filed = new WeakSet<PendingWrite>();
  /**
   * Chunks whose seqs and rollup windows are committed: a confirmation run again (the writer retries
   * it with the same chunk, and only the writer confirms) does not roll them up twice. A mark per
   * chunk, not per reading: a WeakSet entry per reading cost about 4 ms of CPU per 10,000 readings.
   */
  const recorded = new WeakSet<readonly PendingWrite[]>();

  function refusalsOf(chunk: readonly PendingWrite[], result: SinkWriteResult): ReadonlyMap<number, string> {
    if (result.rejected.length === 0 && result.written === chunk.length) return NONE_REFUSED;
    const refused = new Map<number, string>();
    for (const r of result.rejected) refused.set(r.index, r.reason);
    let points = chunk.length;
    if (options.pointsMayBeMissing) for (const item of chunk) if (!item.point) points--;
    if (result.written + refused.size !== points) {
      options.logger.warn({ points, written: result.written, rejected: refused.size }, 'sink result does not add up; going by the rejected indices');
    }
    return refused;
  }

  function refusalLetter(item: PendingWrite, reason: string): NewDeadLetter {
    const refusal = { code: 'FERRY_ERR_SINK_REJECTED' as const, reason, issues: [{ database: options.sinkDescription, message: reason }] };
    if (item.message) return directLetter(item.message, refusal, item.deviceId);
    return {
      source: item.origin === 'gateway' ? { gatewayId: item.gatewayId, deviceId: item.deviceId, seq: item.seq } : { deviceId: item.deviceId },
      ...refusal,
      payload: rawJson(item.raw),
    };
  }

  function gather(chunk: readonly PendingWrite[], refused: ReadonlyMap<number, string>): ChunkRecords {
    const records: ChunkRecords = { entries: [], identities: [], rolled: [], letters: [], letterItems: [] };
    const rolledBefore = recorded.has(chunk);
    for (let index = 0; index < chunk.length; index++) {
      const item = chunk[index]!;
      const reason = refused.size === 0 ? undefined : refused.get(index);
      if (reason === undefined) {
        if (item.origin === 'gateway') records.entries.push({ gatewayId: item.gatewayId, seq: item.seq, hash: item.hash, outcome: 'written' });
        if (item.device) records.identities.push(item.device);
        if (item.rolled && !rolledBefore) {
          // A direct reading has no dedupe.db record: its identity is kept with the windows instead.
          records.rolled.push({ gatewayTag: item.gatewayId, reading: item.rolled, ...(item.origin === 'direct' ? { once: `${item.deviceId}\u0000${item.hash}` } : {}) });
        }
        continue;
      }
      if (item.origin === 'gateway') records.entries.push({ gatewayId: item.gatewayId, seq: item.seq, hash: item.hash, outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason });
      if (item.deadLetterOnRefusal && !filed.has(item)) {
        records.letterItems.push(item);
        records.letters.push(refusalLetter(item, reason));
      }
    }
    return records;
  }

  /**
   * Each step may throw (a full disk); nothing is settled yet then, and the writer comes back with
   * the same result. Dead letters are filed once per reading (`filed`), the seqs with the rollup
   * windows once per chunk (`recorded`; an idempotent upsert besides), device identities
   * idempotently. The order matters across a crash too: the windows commit before the device
   * identities, so a crash in between leaves a reading that is counted (its seq, or its rollup
   * `once` key, stops a second count when it comes again), never one that device dedupe calls a
   * duplicate uncounted.
   */
  function record(chunk: readonly PendingWrite[], records: ChunkRecords, intent: unknown): void {
    fileLetters(records.letters, deadLetters, recordIn, events);
    for (const item of records.letterItems) filed.add(item);
    // The windows are saved in the same transaction as the seqs: a resend is a duplicate, or counted
    // once. The chunk's write intent ends there too: after a crash, either the records say what the
    // database holds, or the intent still marks its readings for a look in the database.
    const recordAll = (): number => {
      const n = dedupe.record(records.entries);
      if (intents && intent) intents.end(intent as Intent);
      return n;
    };
    const pruned = recordIn('dedupe', () =>
      rollups && records.rolled.length > 0 ? rollups.commit(records.rolled, recordAll) : dedupe.database ? dedupe.database.transaction(recordAll)() : recordAll(),
    );
    recorded.add(chunk);
    if (intents && intents.suspects.size > 0) for (const item of chunk) intents.settled(intentSource(item), item.seq);
    const devicePruned = recordIn('device-dedupe', () => deviceDedupe.record(records.identities, options.clock.now()));
    if (pruned > 0) events.pruned?.(pruned);
    if (devicePruned > 0) events.devicePruned?.(devicePruned);
  }

  /** Every reading of the chunk leaves the in-memory registry and learns its outcome, as do its copies. */
  function settle(chunk: readonly PendingWrite[], refused: ReadonlyMap<number, string>): void {
    const written: { gatewayId: string; origin: 'gateway' | 'direct'; reading: unknown; point: Point | null }[] | undefined = events.readingsWritten ? [] : undefined;
    // A chunk holds runs of one gateway's readings: its map is looked up again only when the gateway changes.
    let perGatewayOf: string | undefined;
    let perGateway: Map<number, PendingWrite> | undefined;
    for (let index = 0; index < chunk.length; index++) {
      const item = chunk[index]!;
      if (item.origin === 'gateway') {
        if (item.gatewayId !== perGatewayOf) {
          perGatewayOf = item.gatewayId;
          perGateway = inMemory.get(item.gatewayId);
        }
        perGateway?.delete(item.seq);
      }
      if (item.device) inMemoryDevice.delete(item.device.slot);
      const reason = refused.size === 0 ? undefined : refused.get(index);
      const outcome: ReadingOutcome = reason === undefined ? WRITTEN : { kind: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason };
      item.owner.settle(item.seq, outcome);
      for (const copy of item.copies) copy.settle(item.seq, reason === undefined ? DUPLICATE : outcome);
      if (reason === undefined && written) written.push({ gatewayId: item.gatewayId, origin: item.origin, reading: item.raw, point: item.point });
    }
    if (written) events.readingsWritten?.(written);
  }

  return (chunk, result, intent) => {
    const refused = refusalsOf(chunk, result);
    record(chunk, gather(chunk, refused), intent);
    settle(chunk, refused);
  };
}
