// Stage 5, send: cuts batches from the outbox and publishes them on the uplink, keeping up to
// maxInFlight batches waiting for their ack. Nothing lives only in memory: a batch is a list of
// seqs whose rows stay in the outbox until acked, so any batch can be rebuilt and sent again.
// Live first: while a large backlog drains, readings committed after the drain began form a
// second stream whose batches go out ahead of the backlog's (docs/durability.md, "Live first").
import { BATCH_VERSION, encodeBatch, newBatchNonce, uplinkTopics } from '@ferry/protocol';
import type { BatchHeader, Compression, Reading } from '@ferry/protocol';
import type { Clock, Logger } from '@ferry/runtime';
import { decideBatch, READING_OVERHEAD_BYTES, readingsBudget } from './batch.js';
import { encodeStoredBatch } from './batch-encode.js';
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
  /**
   * Unsent readings from which a backlog is drained live first; undefined: one stream, oldest first.
   */
  readonly liveFirstAbove?: number | undefined;
  /** A live-first drain began (the backlog is every seq up to `boundary`) or ended. */
  readonly onDrainMode?: (event: { draining: boolean; boundary: number | undefined }) => void;
  /** Edge processing before the uplink (one stream: no live-first drain with it). */
  readonly processing?: SendProcessing;
}

/** Edge processing before the uplink, as the sender sees it. */
export interface SendProcessing {
  /** What the rows of a batch become on the uplink (each keeps its row's seq). */
  process(batchId: number, seqs: readonly number[], readings: readonly Reading[]): Reading[];
  /** The batch produced nothing to send: it is settled as if acked. */
  nothingToSend(batchId: number): void;
  /** Every batch in flight goes out again: the pipeline goes back to its saved state. */
  rollback(): void;
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
  /** True while a backlog drains with live readings sent first. */
  readonly draining: boolean;
  close(): void;
}

type Stream = 'main' | 'live';

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

  /** Highest seq handed out by the main stream: rows at or below it are in flight or gone, unless requeued. */
  let cursor = -1;
  /** While a live-first drain runs: the newest seq of the backlog. Newer rows are the live stream. */
  let boundary: number | undefined;
  /** Highest seq handed out by the live stream. */
  let liveCursor = -1;
  let liveWaitingSince: number | undefined;
  let liveLingerElapsed = false;

  function requeue(batchId: number, why: 'timeout' | 'reconnect'): void {
    if (options.processing) {
      requeueAll(why);
      return;
    }
    const timer = ackTimers.get(batchId);
    if (timer) clearTimeout(timer);
    ackTimers.delete(batchId);
    const batch = inFlight.expire(batchId);
    if (!batch) return;
    // Its rows are sendable again: move the cursor of their stream back below them.
    for (const seq of batch.seqs) {
      if (boundary !== undefined && seq > boundary) liveCursor = Math.min(liveCursor, seq - 1);
      else cursor = Math.min(cursor, seq - 1);
    }
    // These readings have waited long enough: no linger for them.
    lingerElapsed = true;
    liveLingerElapsed = true;
    options.onBatchRequeued(batch, why);
  }

  /**
   * With processing before the uplink, a batch is only ever resent together with every batch
   * after it, from the saved state, so they are rebuilt exactly as before (see UplinkSettlement).
   */
  function requeueAll(why: 'timeout' | 'reconnect'): void {
    for (const [batchId, timer] of ackTimers) {
      clearTimeout(timer);
      const batch = inFlight.expire(batchId);
      if (batch) options.onBatchRequeued(batch, why);
    }
    ackTimers.clear();
    options.processing?.rollback();
    // Every row still in the outbox is unsettled: read them again from the start.
    cursor = -1;
    lingerElapsed = true;
  }

  function sendBatch(stream: Stream): boolean {
    const live = stream === 'live';
    const entries = outbox.peek({
      limit: policy.maxReadings,
      maxBytes: readingsBudget(policy),
      exclude: inFlight.excluded,
      rowOverhead: READING_OVERHEAD_BYTES,
      afterSeq: live ? liveCursor : cursor,
      ...(!live && boundary !== undefined ? { upToSeq: boundary } : {}),
    });
    if (entries.length === 0) {
      // Nothing unsent in this stream's range: everything in it is in flight or gone.
      if (live) liveCursor = Math.max(liveCursor, outbox.newestSeq() ?? -1);
      else if (boundary === undefined) cursor = Math.max(cursor, outbox.newestSeq() ?? -1);
      return false;
    }
    const last = entries[entries.length - 1]!.seq;
    if (live) liveCursor = last;
    else cursor = last;
    const batchId = outbox.nextBatchId();
    const sentAt = Math.floor(clock.now());
    const seqs = new Array<number>(entries.length);
    const sizes = new Array<number>(entries.length);
    let bytes = 0;
    for (let i = 0; i < entries.length; i += 1) {
      const entry = entries[i]!;
      seqs[i] = entry.seq;
      sizes[i] = entry.bytes;
      bytes += entry.bytes;
    }
    // A resend gets a new batch id and so a new nonce; the old id keeps its own (InFlightBatches).
    const nonce = newBatchNonce();
    const header: BatchHeader = { v: BATCH_VERSION, gatewayId: options.gatewayId, batchId, sentAt, nonce };
    let payload: Buffer;
    let readings = entries.length;
    if (options.processing) {
      const processed = options.processing.process(
        batchId,
        seqs,
        entries.map((e) => e.reading),
      );
      if (processed.length === 0) {
        options.processing.nothingToSend(batchId);
        return true;
      }
      readings = processed.length;
      payload = encodeBatch(header, processed, options.compression);
    } else {
      // The rows go out as stored: no parse, no second stringify.
      payload = encodeStoredBatch(header, entries, options.compression);
    }
    inFlight.add(
      {
        batchId,
        nonce,
        seqs,
        bytes,
        sentAt,
        ...(readings !== seqs.length ? { readings } : {}),
      },
      sizes,
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
    options.onBatchSent(readings, payload.byteLength);
    return true;
  }

  function scheduleLinger(ms: number, live: boolean): void {
    if (lingerTimer) return;
    lingerTimer = setTimeout(() => {
      lingerTimer = undefined;
      if (live) liveLingerElapsed = true;
      else lingerElapsed = true;
      pump();
    }, ms);
  }

  /** One step of a live-first drain: a live batch when one is due, else a backlog batch. */
  function drainStep(): 'sent' | 'done' {
    const newest = outbox.newestSeq() ?? -1;
    if (newest > liveCursor) {
      const now = clock.now();
      liveWaitingSince ??= now;
      const waited = now - liveWaitingSince;
      if (liveLingerElapsed || waited >= policy.lingerMs || newest - liveCursor >= policy.maxReadings) {
        if (sendBatch('live')) {
          liveWaitingSince = undefined;
          liveLingerElapsed = false;
          return 'sent';
        }
        liveWaitingSince = undefined;
      } else {
        scheduleLinger(policy.lingerMs - waited, true);
      }
    }
    if (sendBatch('main')) return 'sent';
    // The backlog is all in flight or gone: one stream again, continuing after the live one.
    cursor = Math.max(cursor, liveCursor);
    boundary = undefined;
    liveWaitingSince = undefined;
    liveLingerElapsed = false;
    options.onDrainMode?.({ draining: false, boundary: undefined });
    return 'done';
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
        if (boundary === undefined && options.liveFirstAbove !== undefined && backlog.readings >= options.liveFirstAbove) {
          boundary = outbox.newestSeq() ?? -1;
          liveCursor = boundary;
          options.onDrainMode?.({ draining: true, boundary });
        }
        if (boundary !== undefined) {
          if (drainStep() === 'sent') continue;
        }
        const decision = decideBatch(backlog, policy, clock.now());
        if (decision.action === 'idle') {
          waitingSince = undefined;
          lingerElapsed = false;
          return;
        }
        if (decision.action === 'wait' && !lingerElapsed) {
          waitingSince ??= clock.now();
          scheduleLinger(decision.ms, false);
          return;
        }
        if (!sendBatch('main')) {
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
      if (options.processing) {
        // Rows settled while down (nothing to send) leave nothing behind; the rest is rebuilt.
        if (ackTimers.size > 0) requeueAll('reconnect');
      } else for (const batchId of [...ackTimers.keys()]) requeue(batchId, 'reconnect');
      pump();
    },
    uplinkDown() {
      up = false;
      if (lingerTimer) clearTimeout(lingerTimer);
      lingerTimer = undefined;
    },
    pump,
    get draining() {
      return boundary !== undefined;
    },
    close() {
      closed = true;
      up = false;
      if (lingerTimer) clearTimeout(lingerTimer);
      for (const timer of ackTimers.values()) clearTimeout(timer);
      ackTimers.clear();
    },
  };
}
