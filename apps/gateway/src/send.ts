// Stage 5, send: cuts batches from the outbox and publishes them on the uplink, keeping up to
// maxInFlight batches waiting for their ack. Nothing lives only in memory: a batch is a list of
// seqs whose rows stay in the outbox until acked, so any batch can be rebuilt and sent again.
import { encodeBatch, ENVELOPE_VERSION, uplinkTopics } from '@ferry/protocol';
import type { Compression } from '@ferry/protocol';
import type { Clock, Logger } from '@ferry/runtime';
import { decideBatch, READING_OVERHEAD_BYTES, readingsBudget } from './batch.js';
import type { BatchPolicy } from './batch.js';
import type { InFlightBatch, InFlightBatches } from './ack.js';
import type { AppendResult, Outbox } from './outbox.js';

export interface SenderOptions {
  readonly gatewayId: string;
  readonly outbox: Outbox;
  readonly inFlight: InFlightBatches;
  readonly policy: BatchPolicy;
  readonly maxInFlight: number;
  readonly compression: Compression;
  readonly ackTimeoutMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Publishes QoS 1 on the uplink. */
  readonly publish: (topic: string, payload: Buffer, done: (err?: Error) => void) => void;
  readonly onBatchSent: (readings: number, bytes: number) => void;
  /** A batch went unacked (timeout or reconnect) and its readings are sendable again. */
  readonly onBatchRequeued: (batch: InFlightBatch, why: 'timeout' | 'reconnect') => void;
}

export interface Sender {
  /** New readings are in the outbox. */
  committed(result: AppendResult): void;
  /** An ack removed a batch: stop its timer, send more. */
  settled(batchId: number): void;
  /** The uplink is up (again): whatever was in flight goes out again. */
  uplinkUp(): void;
  uplinkDown(): void;
  /** Try to send now (e.g. on a periodic tick). */
  pump(): void;
  close(): void;
}

export function createSender(options: SenderOptions): Sender {
  const { outbox, inFlight, policy, clock, logger } = options;
  const batchTopic = uplinkTopics.batch(options.gatewayId);
  const ackTimers = new Map<number, NodeJS.Timeout>();
  let up = false;
  let closed = false;
  /** When the oldest unsent reading became sendable; undefined when nothing waits. */
  let waitingSince: number | undefined;
  let lingerTimer: NodeJS.Timeout | undefined;
  /** Set when the linger timer fires, so a partial batch goes out even if the injected clock stands still. */
  let lingerElapsed = false;

  function requeue(batchId: number, why: 'timeout' | 'reconnect'): void {
    const timer = ackTimers.get(batchId);
    if (timer) clearTimeout(timer);
    ackTimers.delete(batchId);
    const batch = inFlight.expire(batchId);
    if (!batch) return;
    // These readings have waited long enough: no linger for them.
    lingerElapsed = true;
    options.onBatchRequeued(batch, why);
  }

  function sendBatch(): boolean {
    const entries = outbox.peek({
      limit: policy.maxReadings,
      maxBytes: readingsBudget(policy),
      exclude: inFlight.excluded,
      rowOverhead: READING_OVERHEAD_BYTES,
    });
    if (entries.length === 0) return false;
    const batchId = outbox.nextBatchId();
    const sentAt = Math.floor(clock.now());
    const payload = encodeBatch(
      { v: ENVELOPE_VERSION, gatewayId: options.gatewayId, batchId, sentAt },
      entries.map((e) => e.reading),
      options.compression,
    );
    const seqs = entries.map((e) => e.seq);
    inFlight.add(
      { batchId, seqs, bytes: entries.reduce((n, e) => n + e.bytes, 0), sentAt },
      entries.map((e) => e.bytes),
    );
    ackTimers.set(
      batchId,
      setTimeout(() => {
        requeue(batchId, 'timeout');
        pump();
      }, options.ackTimeoutMs),
    );
    options.publish(batchTopic, payload, (err) => {
      // The ack timeout covers a lost publish; nothing else to do here.
      if (err) logger.debug({ err: err.message, batchId }, 'batch publish failed');
    });
    options.onBatchSent(entries.length, payload.byteLength);
    return true;
  }

  function pump(): void {
    if (!up || closed) return;
    if (lingerTimer) clearTimeout(lingerTimer);
    lingerTimer = undefined;
    try {
      while (inFlight.size < options.maxInFlight) {
        const stats = outbox.stats();
        const backlog = {
          readings: stats.depth - inFlight.readings,
          bytes: stats.bytes - inFlight.bytes,
          waitingSince,
        };
        const decision = decideBatch(backlog, policy, clock.now());
        if (decision.action === 'idle') {
          waitingSince = undefined;
          lingerElapsed = false;
          return;
        }
        if (decision.action === 'wait' && !lingerElapsed) {
          waitingSince ??= clock.now();
          lingerTimer = setTimeout(() => {
            lingerTimer = undefined;
            lingerElapsed = true;
            pump();
          }, decision.ms);
          return;
        }
        if (!sendBatch()) {
          waitingSince = undefined;
          lingerElapsed = false;
          return;
        }
        // What is left (if anything) waits at most one more linger.
        waitingSince = clock.now();
        lingerElapsed = false;
      }
    } catch (err) {
      // Storage failure while reading the outbox: try again on the next event.
      logger.error({ err }, 'could not build a batch from the outbox');
    }
  }

  return {
    committed(result) {
      if (result.droppedSeqs.length > 0) inFlight.forget(result.droppedSeqs);
      waitingSince ??= clock.now();
      pump();
    },
    settled(batchId) {
      const timer = ackTimers.get(batchId);
      if (timer) clearTimeout(timer);
      ackTimers.delete(batchId);
      pump();
    },
    uplinkUp() {
      up = true;
      for (const batchId of [...ackTimers.keys()]) requeue(batchId, 'reconnect');
      pump();
    },
    uplinkDown() {
      up = false;
      if (lingerTimer) clearTimeout(lingerTimer);
      lingerTimer = undefined;
    },
    pump,
    close() {
      closed = true;
      up = false;
      if (lingerTimer) clearTimeout(lingerTimer);
      for (const timer of ackTimers.values()) clearTimeout(timer);
      ackTimers.clear();
    },
  };
}
