// The ingestor's data path, one stage per file, in this order:
//   decode (decode.ts) -> validate (validate.ts) -> dedupe (dedupe.ts, classify.ts) -> process (process.ts)
//   -> map (map.ts) -> write (write.ts) -> confirm: record, settle (confirm.ts) -> roll up (rollup.ts)
//   -> ack (ack.ts) -> account (accounting.ts) -> health (readingsWritten: health.ts)
// Everything up to handing points to the writer is synchronous and never waits on the database,
// so the MQTT handler that calls `accept` returns at once. Readings of devices that publish
// directly come in through `acceptDirect` (from the journal, journal.ts) and take the same path
// (direct-path.ts): direct decode (direct.ts, the gateway's decoders) -> skew (skew.ts) -> device
// dedupe (device-dedupe.ts) -> map -> write; a direct dead letter keeps the message and its topic,
// and replays through the same steps (replay.ts: an operator's replay of a dead letter joins at the writer).
// Gateway readings also pass skew.ts and device-dedupe.ts after the gateway-seq dedupe.
// This file holds the batch path and the queue bounds, and wires the stages together.
import type { Ack, ErrorCode, Limits, Reading, Rejection } from '@ferry/protocol';
import { BATCH_VERSION, FerryError, parseUplinkTopic } from '@ferry/protocol';
import { isDiskFull } from '@ferry/runtime';
import type { Clock, Logger } from '@ferry/runtime';
import type { DeadLetterStore } from '@ferry/deadletter';
import type { Point, PointMapping, Sink } from '@ferry/sinks';
import { decodeBatchMessage } from './decode.js';
import type { DecodedMessage } from './decode.js';
import { seqOf } from './validate.js';
import type { ValidatedReading, ValidationContext } from './validate.js';
import { limitsWithoutSkew } from './skew.js';
import type { SkewPolicy } from './skew.js';
import { deviceIdentity } from './device-dedupe.js';
import type { DeviceDedupeStore, DeviceIdentity } from './device-dedupe.js';
import type { DeviceTopics, DirectEntry } from './direct.js';
import type { DedupeStore } from './dedupe.js';
import { mapReading } from './map.js';
import { createClassifier, refusalsOf } from './classify.js';
import type { ReadingProcessor } from './process.js';
import type { Rollups } from './rollup.js';
import { createReplay } from './replay.js';
import { createWriter } from './write.js';
import { writerIntents } from './intents.js';
import type { IntentLog } from './intents.js';
import { createConfirm, intentSource, storageRecorder } from './confirm.js';
import { createDirectPath, fileLetters } from './direct-path.js';
import type { WritePolicy, Writer, WriterEvents } from './write.js';
import { BatchTracker, envelopeRejectionAck } from './ack.js';
import type { ReadingOutcome } from './ack.js';
import type { Accounting } from './accounting.js';

/** Whoever waits for a reading's outcome: the batch that brought it, or an operator's replay. */
export interface Party {
  settle(seq: number | null, outcome: ReadingOutcome): void;
}

export { DIRECT_SOURCE } from './direct-path.js';

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
  const recordIn = storageRecorder(events);
  const confirm = createConfirm({
    dedupe,
    deviceDedupe,
    deadLetters,
    rollups,
    intents: intentLog,
    pointsMayBeMissing: processor !== undefined || rollups !== undefined,
    sinkDescription: options.sink.description,
    inMemory,
    inMemoryDevice,
    recordIn,
    clock,
    logger,
    events,
  });
  const writer: Writer<PendingWrite> = createWriter<PendingWrite>({
    sink: options.sink,
    policy: options.write,
    clock,
    confirm,
    intents: intentLog && writerIntents(intentLog, { source: intentSource, seq: (item) => item.seq }, (note) => recordIn('dedupe', note)),
    events,
  });
  /** Registers the readings as being written, so a resend or a republish meanwhile waits for them, and hands them to the writer. */
  const write = (items: PendingWrite[]): void => {
    for (const item of items) register(item);
    writer.push(items);
  };
  const directPath = createDirectPath({
    direct: options.direct,
    limits: options.limits,
    looseLimits,
    skewPolicy,
    classifyDevice,
    build,
    deadLetters,
    accounting,
    recordIn,
    events,
    write,
  });

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
    fileLetters(letters, deadLetters, recordIn, events);
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
          toWrite.push(c.item);
          break;
      }
    }
    party.arm();
    write(toWrite);
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
    planDirect: (entry, direct, partyFor) => directPath.plan(entry, direct, partyFor, false),
    build,
    write,
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
      directPath.accept(entry, settled);
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
      return { pendingBatches, pendingReadings, pendingDirect: directPath.pending, oldestPendingAt, queuedPoints: writer.queued, writingChunks: writer.writing };
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
}
