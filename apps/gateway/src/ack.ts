// Stages 6 and 7, await ack and delete: which batches are waiting for the ingestor's ack, and
// what an ack does. A reading leaves the outbox only here, once the ingestor's database has it.
import { decodeAck, sameBatchNonce } from '@ferry/protocol';
import type { Ack } from '@ferry/protocol';
import type { Logger } from '@ferry/runtime';
import type { Outbox } from './outbox.js';

export interface InFlightBatch {
  readonly batchId: number;
  /** Random per batch id; only an ack that echoes it may delete (batch ids are guessable). */
  readonly nonce: string;
  readonly seqs: readonly number[];
  readonly bytes: number;
  readonly sentAt: number;
  /** Readings in the envelope when edge processing made them differ from the rows (`seqs`). */
  readonly readings?: number;
}

/**
 * Batches sent and not yet acked. Pure bookkeeping. A batch that timed out (or was in flight when
 * the uplink dropped) is remembered for a while: if its ack still comes, its readings are in the
 * database and can be deleted even though they were queued to go out again. Each batch id keeps
 * its own nonce for as long as its ack is accepted, so a late ack for a resent batch still counts.
 */
export class InFlightBatches {
  private readonly waiting = new Map<number, InFlightBatch>();
  private readonly expired = new Map<number, InFlightBatch>();
  /** seq -> stored bytes, for every seq of a waiting batch. */
  private readonly seqs = new Map<number, number>();
  private seqBytes = 0;

  constructor(private readonly rememberExpired = 1024) {}

  /** Batches awaiting an ack. */
  get size(): number {
    return this.waiting.size;
  }

  /** Readings in waiting batches. */
  get readings(): number {
    return this.seqs.size;
  }

  get bytes(): number {
    return this.seqBytes;
  }

  /** The seqs the next batch must skip. */
  get excluded(): { has(seq: number): boolean } {
    return this.seqs;
  }

  add(batch: InFlightBatch, bytesBySeq: readonly number[]): void {
    this.waiting.set(batch.batchId, batch);
    batch.seqs.forEach((seq, i) => {
      const size = bytesBySeq[i] ?? 0;
      this.seqs.set(seq, size);
      this.seqBytes += size;
    });
  }

  /** Finds the batch an ack names: waiting, or expired but still remembered. */
  lookup(batchId: number): { batch: InFlightBatch; late: boolean } | undefined {
    const waiting = this.waiting.get(batchId);
    if (waiting) return { batch: waiting, late: false };
    const expired = this.expired.get(batchId);
    return expired ? { batch: expired, late: true } : undefined;
  }

  /** The batch is acked: forget it entirely. */
  settle(batchId: number): void {
    const batch = this.waiting.get(batchId);
    if (batch) {
      this.waiting.delete(batchId);
      this.release(batch);
    }
    this.expired.delete(batchId);
  }

  /** No ack in time: its readings become sendable again. */
  expire(batchId: number): InFlightBatch | undefined {
    const batch = this.waiting.get(batchId);
    if (!batch) return undefined;
    this.waiting.delete(batchId);
    this.release(batch);
    this.expired.set(batchId, batch);
    while (this.expired.size > this.rememberExpired) {
      const oldest = this.expired.keys().next();
      if (oldest.done) break;
      this.expired.delete(oldest.value);
    }
    return batch;
  }

  /** The uplink reconnected: everything waiting goes out again. */
  expireAll(): InFlightBatch[] {
    return [...this.waiting.keys()].map((id) => this.expire(id)).filter((b): b is InFlightBatch => b !== undefined);
  }

  /** Rows the outbox bound discarded: nothing to wait for any more. */
  forget(seqs: readonly number[]): void {
    for (const seq of seqs) {
      const size = this.seqs.get(seq);
      if (size === undefined) continue;
      this.seqs.delete(seq);
      this.seqBytes -= size;
    }
  }

  private release(batch: InFlightBatch): void {
    for (const seq of batch.seqs) {
      const size = this.seqs.get(seq);
      if (size === undefined) continue;
      this.seqs.delete(seq);
      this.seqBytes -= size;
    }
  }
}

/**
 * Why an ack changed nothing. `unknown` also covers a replayed ack (its batch is settled);
 * `no_nonce` is a v1 ack (an ingestor before v2); `forged` names a batch in flight with the wrong nonce.
 */
export type AckIgnoredReason = 'invalid' | 'foreign' | 'no_nonce' | 'unknown' | 'forged' | 'mismatch';

export interface AckCounters {
  /** An in-flight batch was acked. */
  onAcked(batch: InFlightBatch, ack: Ack, deleted: number, late: boolean): void;
  /** Not an ack, or one naming another gateway or a batch this gateway does not know (any more). */
  onIgnored(reason: AckIgnoredReason): void;
}

export interface AckHandlerOptions {
  readonly gatewayId: string;
  readonly inFlight: InFlightBatches;
  readonly outbox: Outbox;
  readonly logger: Logger;
  readonly counters: AckCounters;
  /** Called after an ack freed room for more batches. */
  readonly onSettled: (batchId: number) => void;
  /**
   * Removes an acked batch's rows (edge processing before the uplink settles in batch order and
   * saves its state); returns the rows deleted, or undefined to ignore the ack. Default: delete them.
   */
  readonly settle?: (batch: InFlightBatch, late: boolean) => number | undefined;
}

export function createAckHandler(options: AckHandlerOptions): (payload: Uint8Array) => void {
  const { gatewayId, inFlight, outbox, logger, counters } = options;
  return (payload) => {
    const ack = decodeAck(payload);
    if (!ack) {
      counters.onIgnored('invalid');
      logger.debug({ bytes: payload.byteLength }, 'ignored an ack that does not decode');
      return;
    }
    if (ack.gatewayId !== gatewayId) {
      counters.onIgnored('foreign');
      logger.debug({ ackGatewayId: ack.gatewayId, batchId: ack.batchId }, 'ignored an ack for another gateway');
      return;
    }
    if (ack.nonce === undefined) {
      // A v1 ack: anyone who can publish here could have written it. The batch times out and goes
      // out again; an ingestor that reads v2 answers it with the nonce.
      counters.onIgnored('no_nonce');
      logger.warn({ batchId: ack.batchId }, 'ignored an ack without a nonce (an ingestor older than protocol v2?)');
      return;
    }
    const found = inFlight.lookup(ack.batchId);
    if (!found) {
      // Duplicated and replayed acks, and acks queued by the broker for a previous run, land here.
      counters.onIgnored('unknown');
      logger.debug({ batchId: ack.batchId }, 'ignored an ack for an unknown batch');
      return;
    }
    const { batch, late } = found;
    if (!sameBatchNonce(ack.nonce, batch.nonce)) {
      // Only the ingestor that read the batch knows its nonce: this ack was written blind.
      counters.onIgnored('forged');
      logger.warn({ batchId: ack.batchId }, 'ignored an ack whose nonce is not that of the batch it names (forged?)');
      return;
    }
    const answered = ack.accepted + ack.duplicates + ack.rejected.length;
    // An ack that refuses the whole envelope (seq null) covers every reading of it. Any other ack
    // that does not account for every reading is not trusted to delete: the batch stays in flight,
    // times out and goes out again, and the ingestor's dedupe answers for what it already has.
    const wholeEnvelope = ack.rejected.some((r) => r.seq === null);
    const sent = batch.readings ?? batch.seqs.length;
    if (!wholeEnvelope && answered !== sent) {
      counters.onIgnored('mismatch');
      logger.warn({ batchId: ack.batchId, sent, answered }, 'ignored an ack that accounts for a different number of readings than the batch held');
      return;
    }
    let deleted: number;
    try {
      const settled = options.settle ? options.settle(batch, late) : outbox.delete(batch.seqs);
      if (settled === undefined) {
        // A batch sent before a resend from the saved state: its rows go out (and are acked) again.
        inFlight.settle(ack.batchId);
        counters.onIgnored('unknown');
        return;
      }
      deleted = settled;
    } catch (err) {
      // Left waiting: it times out, goes out again and is acked again.
      logger.error({ err, batchId: ack.batchId }, 'acked readings could not be deleted from the outbox');
      return;
    }
    inFlight.settle(ack.batchId);
    counters.onAcked(batch, ack, deleted, late);
    options.onSettled(ack.batchId);
  };
}
