// The ingestor's data path, one stage per file, in this order:
//   decode (decode.ts) -> validate (validate.ts) -> dedupe (dedupe.ts) -> process (process.ts)
//   -> map (map.ts) -> write (write.ts) -> roll up (rollup.ts) -> ack (ack.ts) -> account (accounting.ts)
// Everything up to handing points to the writer is synchronous and never waits on the database,
// so the MQTT handler that calls `accept` returns at once. Readings of devices that publish
// directly come in through `acceptDirect` (from the journal, journal.ts) and take the same path:
//   direct decode (direct.ts, the gateway's decoders) -> skew (skew.ts) -> device dedupe
//   (device-dedupe.ts) -> map -> write; a direct dead letter keeps the message and its topic, and
//   replays through the same steps (replay.ts: an operator's replay of a dead letter joins at the writer).
// Gateway readings also pass skew.ts and device-dedupe.ts after the gateway-seq dedupe.
import type { Ack, ErrorCode, Limits, Reading, Rejection } from '@ferry/protocol';
import { BATCH_VERSION, FerryError, parseUplinkTopic } from '@ferry/protocol';
import { isDiskFull } from '@ferry/runtime';
import type { Clock, Logger } from '@ferry/runtime';
import type { DeadLetterStore, NewDeadLetter } from '@ferry/deadletter';
import type { Point, PointMapping, Sink, SinkWriteResult } from '@ferry/sinks';
import { decodeBatchMessage } from './decode.js';
import type { DecodedMessage } from './decode.js';
import { seqOf } from './validate.js';
import type { ValidatedReading, ValidationContext } from './validate.js';
import { applySkewPolicy, limitsWithoutSkew } from './skew.js';
import type { SkewPolicy } from './skew.js';
import { contentPointSeq, deviceIdentity } from './device-dedupe.js';
import type { DeviceDedupeStore, DeviceIdentity } from './device-dedupe.js';
import { decodeDirect } from './direct.js';
import type { DeviceTopics, DirectEntry } from './direct.js';
import { contentHash } from './content-hash.js';
import type { DedupeEntry, DedupeStore } from './dedupe.js';
import { mapReading } from './map.js';
import { createClassifier, rawJson, refusalsOf } from './classify.js';
import type { ReadingProcessor } from './process.js';
import type { ConfirmedReading, Rollups } from './rollup.js';
import { createReplay } from './replay.js';
import { createWriter } from './write.js';
import { writerIntents } from './intents.js';
import type { Intent, IntentLog } from './intents.js';
import type { WritePolicy, Writer, WriterEvents } from './write.js';
import { BatchTracker, envelopeRejectionAck } from './ack.js';
import type { ReadingOutcome } from './ack.js';
import type { Accounting } from './accounting.js';

/** Whoever waits for a reading's outcome: the batch that brought it, or an operator's replay. */
export interface Party {
  settle(seq: number | null, outcome: ReadingOutcome): void;
}

/** The accounting source of readings from devices that publish directly: a '/' is never in a gateway id. */
export const DIRECT_SOURCE = '/direct';

/** A reading handed to the writer and not yet settled. */
export interface PendingWrite {
  /** A gateway's reading (keyed by gateway seq) or a direct device's (keyed by its journal row). */
  readonly origin: 'gateway' | 'direct';
  readonly gatewayId: string;
  /** The gateway seq; for a direct reading its journal row id (never recorded as a seq). */
  readonly seq: number;
  /** The device's own identity, recorded once written so a device's republish is recognised. */
  readonly device: DeviceIdentity | undefined;
  readonly hash: string;
  /** null when processing left nothing to write raw (the reading is still recorded and rolled up). */
  readonly point: Point | null;
  /** The reading as processed, for the rollups; undefined without rollups. */
  readonly rolled: Reading | undefined;
  readonly deviceId: string;
  /** The reading as received, for a dead letter should the sink refuse it. */
  readonly raw: unknown;
  readonly owner: Party;
  /** Replays keep their original dead letter; a refusal is not filed twice. */
  readonly deadLetterOnRefusal: boolean;
  /** Copies of the same reading that arrived while it was being written (a resend): each learns 'duplicate'. */
  readonly copies: Party[];
  /** A direct reading's device message: what its dead letter keeps, so a replay decodes it again. */
  readonly message?: DirectEntry;
}

/** One reading of a direct message (or the message itself, when it could not be read), with whoever waits for it. */
export type DirectUnit =
  | { readonly kind: 'refused'; readonly rejection: Rejection; readonly deviceId: string | undefined; readonly party: Party }
  | { readonly kind: 'duplicate'; readonly party: Party }
  | { readonly kind: 'copy'; readonly of: PendingWrite; readonly party: Party }
  | { readonly kind: 'write'; readonly item: PendingWrite & { readonly owner: Party } };

export type AcceptResult = 'accepted' | 'shed' | 'envelope-invalid' | 'ignored' | 'failed';

type DecodedBatch = Extract<DecodedMessage, { ok: true }>;

/**
 * State shared with other ingestors (cluster/types.ts): before a batch is judged, what its seqs and
 * device identities were recorded as is read from the shared stores.
 */
export interface SharedStateLoader {
  prefetch(gatewayId: string, seqs: readonly number[], identities: readonly DeviceIdentity[]): Promise<void>;
}

/** The device identities of a batch's valid readings, for SharedStateLoader.prefetch. */
function identitiesOf(validated: readonly ValidatedReading[], gatewayId: string): DeviceIdentity[] {
  const out: DeviceIdentity[] = [];
  for (const v of validated) {
    if (!v.ok) continue;
    const identity = deviceIdentity(v.reading, 'gateway', gatewayId);
    if (identity) out.push(identity);
  }
  return out;
}

/** The ingestor's own SQLite files a reading's path writes to, besides the sink. */
export type LocalStore = 'dedupe' | 'device-dedupe' | 'deadletters';

export interface QueueBounds {
  /** Batches held in memory (received, not acked yet). */
  readonly maxBatches: number;
  /** Readings held in memory across those batches. */
  readonly maxReadings: number;
}

export interface PipelineEvents extends WriterEvents {
  batch?(result: AcceptResult, readings: number): void;
  /** A gateway's batch taken with shared state ended without an ack (failed, dropped at stop): its lease may go. */
  released?(gatewayId: string): void;
  deadLettered?(code: ErrorCode, count: number): void;
  pruned?(count: number): void;
  /** A reading recognised by its device identity (a device's republish), by origin. */
  deviceDuplicate?(origin: 'gateway' | 'direct'): void;
  /** A reading whose device time was out of the skew window and was written anyway. */
  skewed?(how: 'clamped' | 'flagged'): void;
  /** Fields or tags the database's name rules refuse, left out of a point (the rest is written). */
  namesDropped?(problems: readonly string[]): void;
  /** Device identities the device window's bound discarded. */
  devicePruned?(count: number): void;
  /** Age of a batch when it arrived (envelope sentAt to receive), ms. */
  batchLag?(ms: number): void;
  /** A write to a local store went through (no `err`) or failed: what tells a full disk (DiskFullState, in ingestor.ts). */
  storage?(store: LocalStore, err?: unknown): void;
  /**
   * Readings the database confirmed, once recorded and settled: for the health model. `point` is
   * what was written raw (after processing; null when processing left nothing to write raw).
   */
  readingsWritten?(items: readonly { readonly gatewayId: string; readonly origin: 'gateway' | 'direct'; readonly reading: unknown; readonly point: Point | null }[]): void;
}

export interface DirectOptions {
  readonly topics: DeviceTopics;
  /** The gateway tag on direct readings' points. */
  readonly gatewayTag: string;
}

export interface PipelineOptions {
  readonly limits: Limits;
  readonly mapping: PointMapping;
  readonly maxBatchBytes: number;
  /**
   * Take v1 batches (no nonce; their acks can be forged by anyone who guesses a batch id) while a
   * fleet moves to v2. Default false: refused with FERRY_ERR_ENVELOPE_INVALID and dead-lettered.
   */
  readonly acceptBatchesWithoutNonce?: boolean | undefined;
  readonly queue: QueueBounds;
  readonly write: WritePolicy;
  readonly sink: Sink;
  readonly dedupe: DedupeStore;
  /** Default: none persisted (republishes are still caught while the first copy is in memory). */
  readonly deviceDedupe?: DeviceDedupeStore | undefined;
  /** Default 'deadletter'. */
  readonly skewPolicy?: SkewPolicy | undefined;
  readonly direct?: DirectOptions | undefined;
  readonly deadLetters: DeadLetterStore;
  readonly accounting: Accounting;
  /** Per-metric pipelines (cleaning, filtering) run on each new reading before its point is built. */
  readonly processor?: ReadingProcessor | undefined;
  /** Continuous rollups of what the database confirmed, saved in the dedupe store's transaction. */
  readonly rollups?: Rollups | undefined;
  /** With state shared through Redis: the batch path waits for its records (cluster/). */
  readonly shared?: SharedStateLoader | undefined;
  /** Write intents (intents.ts): what a writer that died mid-write may have left in the database is not written twice. */
  readonly intents?: IntentLog | undefined;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Publishes an ack; called once per settled batch. */
  readonly sendAck: (ack: Ack) => void;
  readonly events?: PipelineEvents;
}

export type ReplayResult =
  | { readonly outcome: 'written' | 'duplicate'; readonly id: number }
  | { readonly outcome: 'rejected'; readonly id: number; readonly code: ErrorCode; readonly reason: string }
  /** Handed to the writer but not confirmed within the wait (the sink is down): it lands later and is marked then. */
  | { readonly outcome: 'pending'; readonly id: number }
  | { readonly outcome: 'not-found'; readonly id: number }
  | { readonly outcome: 'unreplayable'; readonly id: number; readonly reason: string };

export interface PipelineState {
  /** Batches received and not acked yet. */
  readonly pendingBatches: number;
  /** Readings held in memory across those batches. */
  readonly pendingReadings: number;
  /** Direct readings taken from the journal and not settled yet. */
  readonly pendingDirect: number;
  /** Receive time (epoch ms) of the oldest batch not acked yet. */
  readonly oldestPendingAt: number | undefined;
  /** Points buffered for the writer. */
  readonly queuedPoints: number;
  /** Chunks being written or waiting to retry. */
  readonly writingChunks: number;
}

export interface Pipeline {
  /** Takes one MQTT message from the batch subscription. Synchronous, never throws. */
  accept(topic: string, payload: Uint8Array): AcceptResult;
  /**
   * Takes one journaled direct-device message; `settled` runs once it is written, a duplicate or
   * dead-lettered, and the journal row may go. Synchronous; throws only when local storage failed
   * (the row stays in the journal and is taken again after a restart).
   */
  acceptDirect(entry: DirectEntry, settled: () => void): void;
  replay(id: number, waitMs: number): Promise<ReplayResult>;
  state(): PipelineState;
  /** Batches of a gateway taken and not acked yet. */
  inFlight(gatewayId: string): number;
  /** Stops taking batches and waits (bounded) for in-flight writes; true when all were confirmed. */
  stop(timeoutMs: number): Promise<boolean>;
}

const WRITTEN: ReadingOutcome = { kind: 'written' };

/** What a reading's write intent is keyed by: its gateway's seq, or a direct reading's journal row. */
function intentSource(item: PendingWrite): string {
  return item.origin === 'direct' ? DIRECT_SOURCE : item.gatewayId;
}
const DUPLICATE: ReadingOutcome = { kind: 'duplicate' };

export function createPipeline(options: PipelineOptions): Pipeline {
  const { dedupe, deadLetters, accounting, clock, logger, events = {} } = options;
  const deviceDedupe: DeviceDedupeStore = options.deviceDedupe ?? { lookup: () => undefined, record: () => 0, held: 0, close: () => undefined };
  const skewPolicy: SkewPolicy = options.skewPolicy ?? 'deadletter';
  /** Readings being written, per gateway and seq, so a resend meanwhile waits instead of writing twice. */
  const inMemory = new Map<string, Map<number, PendingWrite>>();
  /** Readings being written, by device identity, so a device's republish meanwhile waits instead of writing twice. */
  const inMemoryDevice = new Map<string, PendingWrite>();
  const looseLimits = limitsWithoutSkew(options.limits);
  /** Receive times of batches not acked yet, in arrival order. */
  const pendingSince = new Map<BatchTracker, number>();
  let pendingBatches = 0;
  let pendingReadings = 0;
  let pendingDirect = 0;
  /** Batches waiting for their shared records (options.shared). */
  let prefetching = 0;
  /** Batches per gateway taken and not acked yet (prefetching or tracked): when its lease may go. */
  const inFlight = new Map<string, number>();
  const inFlightAdd = (gatewayId: string, n: number): void => {
    const left = (inFlight.get(gatewayId) ?? 0) + n;
    if (left > 0) inFlight.set(gatewayId, left);
    else inFlight.delete(gatewayId);
  };
  let stopped = false;

  const { processor, rollups } = options;

  /**
   * Process, then map: a new reading's raw point (null when nothing is left to write raw) and what
   * the rollups take once it is confirmed. Runs once per new reading; resends are caught before.
   */
  const namesDropped = (problems: readonly string[]): void => events.namesDropped?.(problems);
  function build(reading: Reading, gatewayTag: string): { point: Point | null; rolled: Reading | undefined } {
    if (!processor && !rollups) return { point: mapReading(reading, gatewayTag, options.mapping, namesDropped), rolled: undefined };
    const processed = processor ? processor.process(reading) : reading;
    const raw = processed && rollups ? rollups.rawPart(processed) : processed;
    return { point: raw ? mapReading(raw, gatewayTag, options.mapping, namesDropped) : null, rolled: (rollups && processed) || undefined };
  }

  const { check, classify, classifyDevice } = createClassifier({ limits: options.limits, skewPolicy, dedupe, deviceDedupe, inMemory, inMemoryDevice, build, events });

  const intentLog = options.intents;
  const writer: Writer<PendingWrite> = createWriter<PendingWrite>({
    sink: options.sink,
    policy: options.write,
    clock,
    confirm,
    intents: intentLog && writerIntents(intentLog, { source: intentSource, seq: (item) => item.seq }, (note) => recordIn('dedupe', note)),
    events,
  });

  /** Readings whose refusal is filed as a dead letter already: a confirmation run again does not file it twice. */
  const filed = new WeakSet<PendingWrite>();
  /** Readings whose seqs and rollup windows are committed: a confirmation run again does not roll them up twice. */
  const recorded = new WeakSet<PendingWrite>();

  /** One write to a local store, reported to `events.storage` either way; a failure is thrown on. */
  function recordIn<T>(store: LocalStore, write: () => T): T {
    let result: T;
    try {
      result = write();
    } catch (err) {
      events.storage?.(store, err);
      throw err;
    }
    events.storage?.(store);
    return result;
  }

  /** Runs when the sink confirmed a chunk: file refusals, record every seq, then settle. */
  function confirm(chunk: readonly PendingWrite[], result: SinkWriteResult, intent: unknown): void {
    const refused = new Map<number, string>();
    for (const r of result.rejected) refused.set(r.index, r.reason);
    const points = processor || rollups ? chunk.reduce((n, item) => (item.point ? n + 1 : n), 0) : chunk.length;
    if (result.written + refused.size !== points) {
      logger.warn({ points, written: result.written, rejected: refused.size }, 'sink result does not add up; going by the rejected indices');
    }
    const rolled: ConfirmedReading[] = [];
    const letters: NewDeadLetter[] = [];
    const letterItems: PendingWrite[] = [];
    const entries: DedupeEntry[] = [];
    const identities: DeviceIdentity[] = [];
    chunk.forEach((item, index) => {
      const reason = refused.get(index);
      if (reason === undefined) {
        if (item.origin === 'gateway') entries.push({ gatewayId: item.gatewayId, seq: item.seq, hash: item.hash, outcome: 'written' });
        if (item.device) identities.push(item.device);
        if (item.rolled && !recorded.has(item)) {
          // A direct reading has no dedupe.db record: its identity is kept with the windows instead.
          rolled.push({ gatewayTag: item.gatewayId, reading: item.rolled, ...(item.origin === 'direct' ? { once: `${item.deviceId}\u0000${item.hash}` } : {}) });
        }
        return;
      }
      if (item.origin === 'gateway') entries.push({ gatewayId: item.gatewayId, seq: item.seq, hash: item.hash, outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason });
      if (item.deadLetterOnRefusal && !filed.has(item)) {
        letterItems.push(item);
        const refusal = { code: 'FERRY_ERR_SINK_REJECTED' as const, reason, issues: [{ database: options.sink.description, message: reason }] };
        letters.push(
          item.message
            ? directLetter(item.message, refusal, item.deviceId)
            : {
                source: item.origin === 'gateway' ? { gatewayId: item.gatewayId, deviceId: item.deviceId, seq: item.seq } : { deviceId: item.deviceId },
                ...refusal,
                payload: rawJson(item.raw),
              },
        );
      }
    });
    // Each may throw (a full disk); nothing is settled yet then, and the writer comes back here
    // with the same result. So every step is one a second pass may repeat: dead letters are
    // filed once per reading (`filed`), the seqs with the rollup windows once per chunk
    // (`recorded`; an idempotent upsert besides), device identities idempotently. The order
    // matters across a crash too: the windows commit before the device identities, so a crash in
    // between leaves a reading that is counted (its seq, or its rollup `once` key, stops a second
    // count when it comes again), never one that device dedupe calls a duplicate uncounted.
    if (letters.length > 0) {
      recordIn('deadletters', () => deadLetters.addMany(letters));
      for (const item of letterItems) filed.add(item);
      events.deadLettered?.('FERRY_ERR_SINK_REJECTED', letters.length);
    }
    // The windows are saved in the same transaction as the seqs: a resend is a duplicate, or counted
    // once. The chunk's write intent ends there too: after a crash, either the records say what the
    // database holds, or the intent still marks its readings for a look in the database.
    const recordAll = (): number => {
      const n = dedupe.record(entries);
      if (intentLog && intent) intentLog.end(intent as Intent);
      return n;
    };
    const pruned = recordIn('dedupe', () =>
      rollups && rolled.length > 0 ? rollups.commit(rolled, recordAll) : dedupe.database ? dedupe.database.transaction(recordAll)() : recordAll(),
    );
    for (const item of chunk) recorded.add(item);
    if (intentLog && intentLog.suspects.size > 0) for (const item of chunk) intentLog.settled(intentSource(item), item.seq);
    const devicePruned = recordIn('device-dedupe', () => deviceDedupe.record(identities, clock.now()));
    if (pruned > 0) events.pruned?.(pruned);
    if (devicePruned > 0) events.devicePruned?.(devicePruned);
    const written: { gatewayId: string; origin: 'gateway' | 'direct'; reading: unknown; point: Point | null }[] = [];
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
      const reason = refused.get(index);
      const outcome: ReadingOutcome = reason === undefined ? WRITTEN : { kind: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason };
      item.owner.settle(item.seq, outcome);
      for (const copy of item.copies) copy.settle(item.seq, reason === undefined ? DUPLICATE : outcome);
      if (reason === undefined) written.push({ gatewayId: item.gatewayId, origin: item.origin, reading: item.raw, point: item.point });
    }
    events.readingsWritten?.(written);
  }

  function batchParty(tracker: BatchTracker): Party & { arm(): void } {
    let armed = false;
    const finishIfComplete = (): void => {
      if (!armed || !tracker.complete) return;
      armed = false;
      pendingSince.delete(tracker);
      pendingBatches--;
      inFlightAdd(tracker.gatewayId, -1);
      pendingReadings -= tracker.size;
      options.sendAck(tracker.toAck(clock.now()));
    };
    return {
      settle(seq, outcome) {
        tracker.settle(seq, outcome);
        accounting.settle(tracker.gatewayId, outcome.kind === 'rejected' ? { rejected: outcome.code } : outcome.kind);
        finishIfComplete();
      },
      arm() {
        armed = true;
        finishIfComplete();
      },
    };
  }

  function register(item: PendingWrite): void {
    if (item.device) inMemoryDevice.set(item.device.slot, item);
    if (item.origin === 'direct') return;
    let perGateway = inMemory.get(item.gatewayId);
    if (!perGateway) inMemory.set(item.gatewayId, (perGateway = new Map<number, PendingWrite>()));
    perGateway.set(item.seq, item);
  }

  function rejectEnvelope(
    gatewayId: string,
    topic: string,
    payload: Uint8Array,
    rejection: Rejection,
    batchId: number | undefined,
    nonce: string | undefined,
  ): AcceptResult {
    recordIn('deadletters', () =>
      deadLetters.add({
        source: { gatewayId, topic },
        code: rejection.code,
        reason: rejection.reason,
        ...(rejection.issues ? { issues: rejection.issues } : {}),
        payload: Buffer.from(payload),
      }),
    );
    events.deadLettered?.(rejection.code, 1);
    logger.warn({ gatewayId, batchId, code: rejection.code, reason: rejection.reason }, 'batch envelope refused and dead-lettered');
    // Without a batch id there is nothing to ack; the gateway will resend and be refused again.
    if (batchId !== undefined) options.sendAck(envelopeRejectionAck(gatewayId, batchId, nonce, rejection.code, rejection.reason, clock.now()));
    return 'envelope-invalid';
  }

  /** 'deferred': taken, and reported through events.batch once its shared records are read. */
  function acceptBatch(topic: string, payload: Uint8Array, counted: { readings: number }): AcceptResult | 'deferred' {
    const parsed = parseUplinkTopic(topic);
    if (!parsed || parsed.kind !== 'batch' || stopped) return 'ignored';
    if (pendingBatches + prefetching >= options.queue.maxBatches || pendingReadings >= options.queue.maxReadings) {
      // Not acked: the gateway still holds these readings and resends them after its ack timeout.
      return 'shed';
    }
    const { gatewayId } = parsed;
    const decoded = decodeBatchMessage(gatewayId, payload, options.maxBatchBytes);
    if (!decoded.ok) return rejectEnvelope(gatewayId, topic, payload, decoded.rejection, decoded.batchId, decoded.nonce);
    if (decoded.header.nonce === undefined && options.acceptBatchesWithoutNonce !== true) {
      const rejection: Rejection = {
        code: 'FERRY_ERR_ENVELOPE_INVALID',
        reason: `batch envelope v${decoded.header.v} has no nonce: this ingestor takes v${BATCH_VERSION} batches only (acceptBatchesWithoutNonce allows v${decoded.header.v} during a transition)`,
        issues: [{ path: ['nonce'], message: 'required' }],
      };
      return rejectEnvelope(gatewayId, topic, payload, rejection, decoded.header.batchId, undefined);
    }

    const now = clock.now();
    const sameGateway = decoded.header.gatewayId === gatewayId;
    const ctx: ValidationContext = { topicGatewayId: gatewayId, envelopeGatewayId: decoded.header.gatewayId, limits: looseLimits, now };
    events.batchLag?.(Math.max(0, now - decoded.header.sentAt));
    const validated = decoded.readings.map((raw) => check(raw, ctx));
    const shared = options.shared;
    if (!shared) return takeBatch(gatewayId, decoded, validated, sameGateway, now, counted);
    // Shared state: the records of these seqs and identities come from Redis first. Later batches
    // of the gateway wait behind this one (one connection answers in order), so each is judged
    // after the ones before it have registered what they write.
    prefetching++;
    inFlightAdd(gatewayId, 1);
    counted.readings = decoded.readings.length;
    shared.prefetch(gatewayId, validated.map((v, i) => (v.ok ? v.reading.seq : seqOf(decoded.readings[i]))).filter((seq): seq is number => seq !== null), identitiesOf(validated, gatewayId)).then(
      () => {
        prefetching--;
        inFlightAdd(gatewayId, -1);
        const later = { readings: 0 };
        let result: AcceptResult;
        try {
          result = stopped ? 'ignored' : takeBatch(gatewayId, decoded, validated, sameGateway, clock.now(), later);
        } catch (err) {
          if (!isDiskFull(err)) logger.error({ err, topic }, 'batch could not be taken; it will be resent');
          result = 'failed';
        }
        events.batch?.(result, later.readings);
        if (result !== 'accepted') events.released?.(gatewayId);
      },
      (err: unknown) => {
        prefetching--;
        inFlightAdd(gatewayId, -1);
        events.released?.(gatewayId);
        logger.error({ err, topic }, 'shared dedupe records could not be read; the batch is not acked and will be resent');
        events.batch?.('failed', 0);
      },
    );
    return 'deferred';
  }

  function takeBatch(
    gatewayId: string,
    decoded: DecodedBatch,
    validated: readonly ValidatedReading[],
    sameGateway: boolean,
    now: number,
    counted: { readings: number },
  ): AcceptResult {
    // The tracker and its party have no effect until readings are settled or it is armed.
    const tracker = new BatchTracker(gatewayId, decoded.header.batchId, decoded.readings.length, decoded.header.nonce);
    const party = batchParty(tracker);
    const batchWrites = new Map<number, PendingWrite>();
    const batchDevices = new Map<string, PendingWrite>();
    const classified = decoded.readings.map((raw, index) => {
      const c = classify(raw, validated[index]!, gatewayId, sameGateway, party, batchWrites, batchDevices);
      if (c.kind === 'write') {
        batchWrites.set(c.item.seq, c.item);
        if (c.item.device) batchDevices.set(c.item.device.slot, c.item);
      }
      return c;
    });

    // Dead letters first: a refusal is acked only once its reading is kept. If this throws,
    // nothing else has changed and the batch is simply not acked.
    const { letters, records } = refusalsOf(classified);
    if (letters.length > 0) {
      recordIn('deadletters', () => deadLetters.addMany(letters));
      const byCode = new Map<ErrorCode, number>();
      for (const l of letters) byCode.set(l.code, (byCode.get(l.code) ?? 0) + 1);
      for (const [code, n] of byCode) events.deadLettered?.(code, n);
    }
    if (records.length > 0) {
      try {
        const pruned = recordIn('dedupe', () => dedupe.record(records));
        if (pruned > 0) events.pruned?.(pruned);
      } catch (err) {
        // Costs only a second dead letter should this batch be resent.
        logger.warn({ err, gatewayId }, 'could not record refused seqs');
      }
    }

    pendingBatches++;
    inFlightAdd(gatewayId, 1);
    pendingSince.set(tracker, now);
    pendingReadings += tracker.size;
    accounting.received(gatewayId, tracker.size);
    counted.readings = tracker.size;
    const toWrite: PendingWrite[] = [];
    for (const c of classified) {
      switch (c.kind) {
        case 'refused':
          party.settle(c.seq, { kind: 'rejected', code: c.rejection.code, reason: c.rejection.reason });
          break;
        case 'duplicate':
          if (c.device) events.deviceDuplicate?.('gateway');
          party.settle(c.seq, { kind: 'duplicate' });
          break;
        case 'copy': {
          const ownSeq = c.seq;
          if (ownSeq === undefined) c.of.copies.push(party);
          else {
            events.deviceDuplicate?.('gateway');
            c.of.copies.push({ settle: (_seq, outcome) => party.settle(ownSeq, outcome) });
          }
          break;
        }
        case 'write':
          register(c.item);
          toWrite.push(c.item);
          break;
      }
    }
    party.arm();
    writer.push(toWrite);
    return 'accepted';
  }

  const replay = createReplay({
    deadLetters,
    dedupe,
    limits: options.limits,
    direct: options.direct,
    clock,
    logger,
    writing: (gatewayId, seq) => inMemory.get(gatewayId)?.get(seq),
    planDirect: (entry, direct, partyFor) => planDirect(entry, direct, partyFor, false),
    build,
    write(items) {
      for (const item of items) register(item);
      writer.push(items);
    },
  });

  return {
    accept(topic, payload) {
      let result: AcceptResult | 'deferred';
      const counted = { readings: 0 };
      try {
        result = acceptBatch(topic, payload, counted);
        if (result === 'deferred') return 'accepted';
      } catch (err) {
        // Local storage failed (dead-letter store): not acked, so the gateway resends it later. A
        // full disk was reported through events.storage, logged once per episode there.
        if (!isDiskFull(err)) logger.error({ err, topic }, 'batch could not be taken; it will be resent');
        result = 'failed';
      }
      events.batch?.(result, counted.readings);
      return result;
    },

    replay(id, waitMs) {
      if (stopped) return Promise.reject(new FerryError('FERRY_ERR_NOT_READY', 'the ingestor is closing'));
      return replay(id, waitMs);
    },

    acceptDirect(entry, settled) {
      acceptDirectEntry(entry, settled);
    },

    inFlight(gatewayId) {
      return inFlight.get(gatewayId) ?? 0;
    },

    state() {
      let oldestPendingAt: number | undefined;
      for (const at of pendingSince.values()) {
        oldestPendingAt = at;
        break;
      }
      return { pendingBatches, pendingReadings, pendingDirect, oldestPendingAt, queuedPoints: writer.queued, writingChunks: writer.writing };
    },

    async stop(timeoutMs) {
      stopped = true;
      const drained = await writer.stop(timeoutMs);
      // After the readings' writer: its last confirmations may complete windows. What is not written
      // now stays in the rollup outbox for the next run.
      const rolledUp = rollups ? await rollups.stop(timeoutMs) : true;
      return drained && rolledUp;
    },
  };

  /** A direct message's dead letter: the message as received, its topic, and its receive time (a replay decodes it as it was). */
  function directLetter(entry: DirectEntry, r: Rejection, deviceId: string | undefined): NewDeadLetter {
    return {
      source: { topic: entry.topic, ...(deviceId !== undefined ? { deviceId } : {}) },
      code: r.code,
      reason: r.reason,
      ...(r.issues ? { issues: r.issues } : {}),
      payload: entry.payload,
      at: entry.receivedAt,
    };
  }

  /**
   * Decode, skew policy and device dedupe for one direct message: one unit per reading (or one
   * refusal for a message that could not be read), each with its own party. No side effects yet
   * but the skew events: the caller files the dead letters first.
   */
  function planDirect(
    entry: DirectEntry,
    direct: DirectOptions,
    partyFor: () => Party,
    deadLetterOnRefusal: boolean,
  ): { units: DirectUnit[]; dropped: readonly Rejection[]; deviceId: string | undefined } {
    const decoded = decodeDirect(entry, direct.topics, looseLimits);
    const { deviceId } = decoded;
    if (!decoded.ok) return { units: [{ kind: 'refused', rejection: decoded.rejection, deviceId, party: partyFor() }], dropped: [], deviceId };
    // Readings of one message (two identical lines of line protocol) dedupe against each other too.
    const messageDevices = new Map<string, PendingWrite>();
    const units = decoded.readings.map((decodedReading): DirectUnit => {
      const party = partyFor();
      const verdict = applySkewPolicy(decodedReading, options.limits, skewPolicy, entry.receivedAt);
      if (!verdict.ok) return { kind: 'refused', rejection: verdict.rejection, deviceId: decodedReading.deviceId, party };
      if (verdict.skewed) events.skewed?.(verdict.skewed);
      const reading = verdict.reading;
      // Always defined for a direct reading: at worst (receive time, content).
      const device = deviceIdentity(reading, 'direct', direct.gatewayTag);
      const byDevice = classifyDevice(device, messageDevices);
      switch (byDevice.kind) {
        case 'conflict':
          return { kind: 'refused', rejection: { code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason: byDevice.reason }, deviceId: reading.deviceId, party };
        case 'duplicate':
          return { kind: 'duplicate', party };
        case 'copy':
          return { kind: 'copy', of: byDevice.of, party };
        case 'new': {
          const hash = device?.hash ?? contentHash(reading);
          // The point's sub-millisecond part: the deviceSeq when sent, else from the content, so a
          // republish maps to the very same point (an overwrite, never a second point).
          const pointSeq = reading.deviceSeq ?? (device ? contentPointSeq(device) : Number.parseInt(hash.slice(1, 9), 16));
          const item: PendingWrite = {
            origin: 'direct',
            gatewayId: direct.gatewayTag,
            seq: entry.id,
            device,
            hash,
            ...build({ ...reading, seq: pointSeq }, direct.gatewayTag),
            deviceId: reading.deviceId,
            raw: reading,
            owner: party,
            deadLetterOnRefusal,
            copies: [],
            message: entry,
          };
          if (device) messageDevices.set(device.slot, item);
          return { kind: 'write', item };
        }
      }
    });
    return { units, dropped: decoded.dropped, deviceId };
  }

  function acceptDirectEntry(entry: DirectEntry, settled: () => void): void {
    const direct = options.direct;
    if (!direct) throw new FerryError('FERRY_ERR_NOT_READY', 'direct devices are not configured');
    // The journal row goes once every reading of its message is settled.
    let open = 0;
    const partyFor = (): Party => {
      let settledOnce = false;
      return {
        settle(_seq, outcome) {
          if (settledOnce) return;
          settledOnce = true;
          pendingDirect--;
          accounting.settle(DIRECT_SOURCE, outcome.kind === 'rejected' ? { rejected: outcome.code } : outcome.kind);
          if (--open === 0) settled();
        },
      };
    };
    const { units, dropped, deviceId } = planDirect(entry, direct, partyFor, true);

    // Kept first: the journal row goes only once its dead letters are safe. If this throws the row stays.
    const letters = [
      ...dropped.map((r) => directLetter(entry, { ...r, reason: `${r.reason}; the rest of the reading was kept` }, deviceId)),
      ...units.flatMap((u) => (u.kind === 'refused' ? [directLetter(entry, u.rejection, u.deviceId)] : [])),
    ];
    if (letters.length > 0) {
      recordIn('deadletters', () => deadLetters.addMany(letters));
      const byCode = new Map<ErrorCode, number>();
      for (const l of letters) byCode.set(l.code, (byCode.get(l.code) ?? 0) + 1);
      for (const [code, n] of byCode) events.deadLettered?.(code, n);
    }

    if (units.length === 0) {
      // Nothing to write (a command topic, a Sparkplug BIRTH that only defines aliases).
      settled();
      return;
    }
    open = units.length;
    pendingDirect += units.length;
    accounting.received(DIRECT_SOURCE, units.length);
    const toWrite: PendingWrite[] = [];
    for (const unit of units) {
      switch (unit.kind) {
        case 'refused':
          unit.party.settle(null, { kind: 'rejected', code: unit.rejection.code, reason: unit.rejection.reason });
          break;
        case 'duplicate':
          events.deviceDuplicate?.('direct');
          unit.party.settle(null, { kind: 'duplicate' });
          break;
        case 'copy':
          events.deviceDuplicate?.('direct');
          unit.of.copies.push(unit.party);
          break;
        case 'write':
          register(unit.item);
          toWrite.push(unit.item);
          break;
      }
    }
    writer.push(toWrite);
  }
}
