// The ingestor's data path, one stage per file, in this order:
//   decode (decode.ts) -> validate (validate.ts) -> dedupe (dedupe.ts) -> map (map.ts)
//   -> write (write.ts) -> ack (ack.ts) -> account (accounting.ts)
// Everything up to handing points to the writer is synchronous and never waits on the database,
// so the MQTT handler that calls `accept` returns at once.
import type { Ack, ErrorCode, Limits, Reading, Rejection } from '@ferry/protocol';
import { FerryError, parseUplinkTopic } from '@ferry/protocol';
import type { Clock, Logger } from '@ferry/runtime';
import type { DeadLetter, DeadLetterStore, NewDeadLetter } from '@ferry/deadletter';
import type { Point, PointMapping, Sink, SinkWriteResult } from '@ferry/sinks';
import { decodeBatchMessage } from './decode.js';
import { validateReading } from './validate.js';
import type { ValidatedReading } from './validate.js';
import { contentHash, judge } from './dedupe.js';
import type { DedupeEntry, DedupeStore } from './dedupe.js';
import { mapReading } from './map.js';
import { createWriter } from './write.js';
import type { WritePolicy, Writer, WriterEvents } from './write.js';
import { BatchTracker, envelopeRejectionAck } from './ack.js';
import type { ReadingOutcome } from './ack.js';
import type { Accounting } from './accounting.js';

/** Whoever waits for a reading's outcome: the batch that brought it, or an operator's replay. */
interface Party {
  settle(seq: number | null, outcome: ReadingOutcome): void;
}

/** A reading handed to the writer and not yet settled. */
interface PendingWrite {
  readonly gatewayId: string;
  readonly seq: number;
  readonly hash: string;
  readonly point: Point;
  readonly deviceId: string;
  /** The reading as received, for a dead letter should the sink refuse it. */
  readonly raw: unknown;
  readonly owner: Party;
  /** Replays keep their original dead letter; a refusal is not filed twice. */
  readonly deadLetterOnRefusal: boolean;
  /** Copies of the same reading that arrived while it was being written (a resend): each learns 'duplicate'. */
  readonly copies: Party[];
}

type Classified =
  | { readonly kind: 'refused'; readonly seq: number | null; readonly rejection: Rejection; readonly letter?: NewDeadLetter; readonly record?: DedupeEntry }
  | { readonly kind: 'duplicate'; readonly seq: number }
  | { readonly kind: 'copy'; readonly of: PendingWrite }
  | { readonly kind: 'write'; readonly item: PendingWrite };

export type AcceptResult = 'accepted' | 'shed' | 'envelope-invalid' | 'ignored' | 'failed';

export interface QueueBounds {
  /** Batches held in memory (received, not acked yet). */
  readonly maxBatches: number;
  /** Readings held in memory across those batches. */
  readonly maxReadings: number;
}

export interface PipelineEvents extends WriterEvents {
  batch?(result: AcceptResult, readings: number): void;
  deadLettered?(code: ErrorCode, count: number): void;
  pruned?(count: number): void;
}

export interface PipelineOptions {
  readonly limits: Limits;
  readonly mapping: PointMapping;
  readonly maxBatchBytes: number;
  readonly queue: QueueBounds;
  readonly write: WritePolicy;
  readonly sink: Sink;
  readonly dedupe: DedupeStore;
  readonly deadLetters: DeadLetterStore;
  readonly accounting: Accounting;
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
  readonly pendingReadings: number;
  /** Points buffered for the writer. */
  readonly queuedPoints: number;
  /** Chunks being written or waiting to retry. */
  readonly writingChunks: number;
}

export interface Pipeline {
  /** Takes one MQTT message from the batch subscription. Synchronous, never throws. */
  accept(topic: string, payload: Uint8Array): AcceptResult;
  replay(id: number, waitMs: number): Promise<ReplayResult>;
  state(): PipelineState;
  /** Stops taking batches and waits (bounded) for in-flight writes; true when all were confirmed. */
  stop(timeoutMs: number): Promise<boolean>;
}

function rawJson(raw: unknown): Buffer {
  return Buffer.from(JSON.stringify(raw) ?? 'null');
}

export function createPipeline(options: PipelineOptions): Pipeline {
  const { dedupe, deadLetters, accounting, clock, logger, events = {} } = options;
  /** Readings being written, per gateway and seq, so a resend meanwhile waits instead of writing twice. */
  const inMemory = new Map<string, Map<number, PendingWrite>>();
  let pendingBatches = 0;
  let pendingReadings = 0;
  let stopped = false;

  const writer: Writer<PendingWrite> = createWriter<PendingWrite>({
    sink: options.sink,
    policy: options.write,
    clock,
    confirm,
    events,
  });

  /** Runs when the sink confirmed a chunk: file refusals, record every seq, then settle. */
  function confirm(chunk: readonly PendingWrite[], result: SinkWriteResult): void {
    const refused = new Map<number, string>();
    for (const r of result.rejected) refused.set(r.index, r.reason);
    if (result.written + refused.size !== chunk.length) {
      logger.warn({ points: chunk.length, written: result.written, rejected: refused.size }, 'sink result does not add up; going by the rejected indices');
    }
    const letters: NewDeadLetter[] = [];
    const entries: DedupeEntry[] = [];
    chunk.forEach((item, index) => {
      const reason = refused.get(index);
      if (reason === undefined) {
        entries.push({ gatewayId: item.gatewayId, seq: item.seq, hash: item.hash, outcome: 'written' });
        return;
      }
      entries.push({ gatewayId: item.gatewayId, seq: item.seq, hash: item.hash, outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason });
      if (item.deadLetterOnRefusal) {
        letters.push({
          source: { gatewayId: item.gatewayId, deviceId: item.deviceId, seq: item.seq },
          code: 'FERRY_ERR_SINK_REJECTED',
          reason,
          issues: [{ database: options.sink.description, message: reason }],
          payload: rawJson(item.raw),
        });
      }
    });
    // Both may throw; nothing is settled yet then, and the writer writes the chunk again.
    if (letters.length > 0) deadLetters.addMany(letters);
    const pruned = dedupe.record(entries);
    if (letters.length > 0) events.deadLettered?.('FERRY_ERR_SINK_REJECTED', letters.length);
    if (pruned > 0) events.pruned?.(pruned);
    chunk.forEach((item, index) => {
      inMemory.get(item.gatewayId)?.delete(item.seq);
      const reason = refused.get(index);
      const outcome: ReadingOutcome = reason === undefined ? { kind: 'written' } : { kind: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason };
      item.owner.settle(item.seq, outcome);
      for (const copy of item.copies) copy.settle(item.seq, outcome.kind === 'written' ? { kind: 'duplicate' } : outcome);
    });
  }

  function batchParty(tracker: BatchTracker): Party & { arm(): void } {
    let armed = false;
    const finishIfComplete = (): void => {
      if (!armed || !tracker.complete) return;
      armed = false;
      pendingBatches--;
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

  /** Validate and dedupe one reading; no side effects yet (those follow once the dead letters are safe). */
  function classify(raw: unknown, validated: ValidatedReading, gatewayId: string, sameGateway: boolean, owner: Party, batchWrites: Map<number, PendingWrite>): Classified {
    if (!validated.ok) {
      const { rejection, seq, deviceId } = validated;
      const hash = contentHash(raw);
      if (seq !== null && sameGateway) {
        const seen = dedupe.lookup(gatewayId, seq);
        if (seen?.outcome === 'rejected' && seen.hash === hash) {
          return { kind: 'refused', seq, rejection: { code: seen.code, reason: seen.reason } };
        }
      }
      return {
        kind: 'refused',
        seq,
        rejection,
        letter: {
          source: { gatewayId, ...(deviceId !== undefined ? { deviceId } : {}), ...(seq !== null ? { seq } : {}) },
          code: rejection.code,
          reason: rejection.reason,
          ...(rejection.issues ? { issues: rejection.issues } : {}),
          payload: rawJson(raw),
        },
        // Remember the refusal so a resend is refused again without a second dead letter.
        ...(seq !== null && sameGateway ? { record: { gatewayId, seq, hash, outcome: 'rejected' as const, code: rejection.code, reason: rejection.reason } } : {}),
      };
    }
    const reading = validated.reading;
    const hash = contentHash(raw);
    const conflict = (reason: string): Classified => ({
      kind: 'refused',
      seq: reading.seq,
      rejection: { code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason },
      letter: {
        source: { gatewayId, deviceId: reading.deviceId, seq: reading.seq },
        code: 'FERRY_ERR_DUPLICATE_CONFLICT',
        reason,
        payload: rawJson(raw),
      },
    });
    const writing = batchWrites.get(reading.seq) ?? inMemory.get(gatewayId)?.get(reading.seq);
    if (writing) {
      return writing.hash === hash ? { kind: 'copy', of: writing } : conflict(`seq is being written with different content (hash ${writing.hash}, now ${hash})`);
    }
    const verdict = judge(dedupe.lookup(gatewayId, reading.seq), hash);
    switch (verdict.kind) {
      case 'duplicate':
        return { kind: 'duplicate', seq: reading.seq };
      case 'conflict':
        return conflict(verdict.reason);
      case 'rejected-before':
        return { kind: 'refused', seq: reading.seq, rejection: { code: verdict.code, reason: verdict.reason } };
      case 'new':
        return {
          kind: 'write',
          item: {
            gatewayId,
            seq: reading.seq,
            hash,
            point: mapReading(reading, gatewayId, options.mapping),
            deviceId: reading.deviceId,
            raw,
            owner,
            deadLetterOnRefusal: true,
            copies: [],
          },
        };
    }
  }

  function register(item: PendingWrite): void {
    let perGateway = inMemory.get(item.gatewayId);
    if (!perGateway) inMemory.set(item.gatewayId, (perGateway = new Map<number, PendingWrite>()));
    perGateway.set(item.seq, item);
  }

  function rejectEnvelope(gatewayId: string, topic: string, payload: Uint8Array, rejection: Rejection, batchId: number | undefined): AcceptResult {
    deadLetters.add({
      source: { gatewayId, topic },
      code: rejection.code,
      reason: rejection.reason,
      ...(rejection.issues ? { issues: rejection.issues } : {}),
      payload: Buffer.from(payload),
    });
    events.deadLettered?.(rejection.code, 1);
    logger.warn({ gatewayId, batchId, code: rejection.code, reason: rejection.reason }, 'batch envelope refused and dead-lettered');
    // Without a batch id there is nothing to ack; the gateway will resend and be refused again.
    if (batchId !== undefined) options.sendAck(envelopeRejectionAck(gatewayId, batchId, rejection.code, rejection.reason, clock.now()));
    return 'envelope-invalid';
  }

  function acceptBatch(topic: string, payload: Uint8Array, counted: { readings: number }): AcceptResult {
    const parsed = parseUplinkTopic(topic);
    if (!parsed || parsed.kind !== 'batch' || stopped) return 'ignored';
    if (pendingBatches >= options.queue.maxBatches || pendingReadings >= options.queue.maxReadings) {
      // Not acked: the gateway still holds these readings and resends them after its ack timeout.
      return 'shed';
    }
    const { gatewayId } = parsed;
    const decoded = decodeBatchMessage(gatewayId, payload, options.maxBatchBytes);
    if (!decoded.ok) return rejectEnvelope(gatewayId, topic, payload, decoded.rejection, decoded.batchId);

    const now = clock.now();
    const sameGateway = decoded.header.gatewayId === gatewayId;
    const ctx = { topicGatewayId: gatewayId, envelopeGatewayId: decoded.header.gatewayId, limits: options.limits, now };
    // The tracker and its party have no effect until readings are settled or it is armed.
    const tracker = new BatchTracker(gatewayId, decoded.header.batchId, decoded.readings.length);
    const party = batchParty(tracker);
    const batchWrites = new Map<number, PendingWrite>();
    const classified = decoded.readings.map((raw) => {
      const c = classify(raw, validateReading(raw, ctx), gatewayId, sameGateway, party, batchWrites);
      if (c.kind === 'write') batchWrites.set(c.item.seq, c.item);
      return c;
    });

    // Dead letters first: a refusal is acked only once its reading is kept. If this throws,
    // nothing else has changed and the batch is simply not acked.
    const letters = classified.flatMap((c) => (c.kind === 'refused' && c.letter ? [c.letter] : []));
    if (letters.length > 0) {
      deadLetters.addMany(letters);
      const byCode = new Map<ErrorCode, number>();
      for (const l of letters) byCode.set(l.code, (byCode.get(l.code) ?? 0) + 1);
      for (const [code, n] of byCode) events.deadLettered?.(code, n);
    }
    const records = classified.flatMap((c) => (c.kind === 'refused' && c.record ? [c.record] : []));
    if (records.length > 0) {
      try {
        const pruned = dedupe.record(records);
        if (pruned > 0) events.pruned?.(pruned);
      } catch (err) {
        // Costs only a second dead letter should this batch be resent.
        logger.warn({ err, gatewayId }, 'could not record refused seqs');
      }
    }

    pendingBatches++;
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
          party.settle(c.seq, { kind: 'duplicate' });
          break;
        case 'copy':
          c.of.copies.push(party);
          break;
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

  return {
    accept(topic, payload) {
      let result: AcceptResult;
      const counted = { readings: 0 };
      try {
        result = acceptBatch(topic, payload, counted);
      } catch (err) {
        // Local storage failed (dead-letter store): not acked, so the gateway resends it later.
        logger.error({ err, topic }, 'batch could not be taken; it will be resent');
        result = 'failed';
      }
      events.batch?.(result, counted.readings);
      return result;
    },

    async replay(id, waitMs) {
      if (stopped) throw new FerryError('FERRY_ERR_NOT_READY', 'the ingestor is closing');
      const letter = deadLetters.get(id);
      if (!letter) return { outcome: 'not-found', id };
      const gatewayId = letter.source.gatewayId;
      if (gatewayId === undefined) return { outcome: 'unreplayable', id, reason: 'the dead letter names no gateway' };
      let raw: unknown;
      try {
        raw = JSON.parse(letter.payload.toString('utf8'));
      } catch {
        return { outcome: 'unreplayable', id, reason: 'the payload is not JSON' };
      }
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || 'compression' in raw) {
        return { outcome: 'unreplayable', id, reason: 'the payload is not a single reading (a whole batch envelope cannot be replayed)' };
      }
      const validated = validateReading(raw, { topicGatewayId: gatewayId, envelopeGatewayId: gatewayId, limits: options.limits, now: clock.now() });
      if (!validated.ok) return { outcome: 'rejected', id, code: validated.rejection.code, reason: validated.rejection.reason };
      return replayReading(letter, gatewayId, raw, validated.reading, waitMs);
    },

    state() {
      return { pendingBatches, pendingReadings, queuedPoints: writer.queued, writingChunks: writer.writing };
    },

    async stop(timeoutMs) {
      stopped = true;
      return writer.stop(timeoutMs);
    },
  };

  function replayReading(letter: DeadLetter, gatewayId: string, raw: unknown, reading: Reading, waitMs: number): Promise<ReplayResult> {
    const id = letter.id;
    const hash = contentHash(raw);
    let settle!: (outcome: ReadingOutcome) => void;
    const outcome = new Promise<ReadingOutcome>((resolve) => (settle = resolve));
    const party: Party = { settle: (_seq, o) => settle(o) };
    const writing = inMemory.get(gatewayId)?.get(reading.seq);
    if (writing) {
      if (writing.hash !== hash) {
        return Promise.resolve({ outcome: 'rejected', id, code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason: 'seq is being written with different content' });
      }
      writing.copies.push(party);
    } else {
      const verdict = judge(dedupe.lookup(gatewayId, reading.seq), hash);
      if (verdict.kind === 'conflict') return Promise.resolve({ outcome: 'rejected', id, code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason: verdict.reason });
      if (verdict.kind === 'duplicate') settle({ kind: 'duplicate' });
      else {
        // New, or refused before: a replay is the operator asking to try again after a fix.
        const item: PendingWrite = {
          gatewayId,
          seq: reading.seq,
          hash,
          point: mapReading(reading, gatewayId, options.mapping),
          deviceId: reading.deviceId,
          raw,
          owner: party,
          deadLetterOnRefusal: false,
          copies: [],
        };
        register(item);
        writer.push([item]);
      }
    }
    const landed = outcome.then((o): ReplayResult => {
      if (o.kind === 'rejected') return { outcome: 'rejected', id, code: o.code, reason: o.reason };
      try {
        deadLetters.markReplayed([id], clock.now());
      } catch (err) {
        logger.error({ err, id }, 'replayed dead letter could not be marked');
      }
      return { outcome: o.kind === 'written' ? 'written' : 'duplicate', id };
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<ReplayResult>((resolve) => {
      timer = setTimeout(() => resolve({ outcome: 'pending', id }), waitMs);
    });
    return Promise.race([landed, timeout]).finally(() => clearTimeout(timer));
  }
}
