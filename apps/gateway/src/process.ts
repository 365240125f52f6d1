// Edge processing: the configured pipelines (@ferry/processing) run either before the outbox
// (as readings are committed: only their output is stored) or before the uplink (raw readings
// are stored, processed when a batch is built). Operator state is saved in the outbox file in the
// transaction that stores (or settles) what it produced, so a restart continues where it stopped;
// docs/processing.md ("At the gateway") has the semantics. Here: the pipeline, its saved state and
// the savings meter (readings and bytes in and out).
import { createPipeline } from '@ferry/processing';
import type { Pipeline, PipelineStats, ProcessingConfigInput } from '@ferry/processing';
import type { DeviceReading, Reading } from '@ferry/protocol';
import type { Clock } from '@ferry/runtime';
import type { SavedSeriesState } from './outbox.js';

/** The gateway's `processing` section (validated again, with defaults, by createPipeline). */
export interface EdgeProcessingConfig {
  readonly before: 'outbox' | 'uplink';
  readonly pipelines: NonNullable<ProcessingConfigInput['pipelines']>;
}

export interface EdgeProcessingStats {
  /** Where the pipelines run. */
  readonly before: 'outbox' | 'uplink';
  /** Readings and bytes (JSON) into and out of the pipelines; readings reprocessed after a failed commit or a resend count again. */
  readonly readingsIn: number;
  readonly readingsOut: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** 1 - out/in, in readings and in bytes; 0 before anything was processed. */
  readonly readingsSaved: number;
  readonly bytesSaved: number;
  /** Series with operator state, and per operator the values seen (`in`) and removed or changed by reason. */
  readonly series: number;
  readonly ops: PipelineStats['ops'];
  /** Series whose saved state was taken back at start, and those discarded (their pipeline changed). */
  readonly restoredSeries: number;
  readonly discardedSeries: number;
}

export interface EdgeProcessing {
  readonly before: 'outbox' | 'uplink';
  /** Runs readings through the pipelines, in order; returns what to store or send. */
  process<R extends DeviceReading>(readings: readonly R[]): R[];
  /** State of the series changed since the last call, to save with what they produced. */
  takeState(): SavedSeriesState[];
  /** Back to the saved state (e.g. `saved` read from the outbox): what process() did since is undone. */
  restore(saved: readonly SavedSeriesState[]): void;
  stats(): EdgeProcessingStats;
}

const NO_SEQ = 0;

export function createEdgeProcessing(config: EdgeProcessingConfig, clock: Clock): EdgeProcessing {
  const pipeline: Pipeline = createPipeline({ pipelines: config.pipelines }, clock, { trackState: true });
  const meter = { readingsIn: 0, readingsOut: 0, bytesIn: 0, bytesOut: 0 };
  let restoredSeries = 0;
  let discardedSeries = 0;

  function process<R extends DeviceReading>(readings: readonly R[]): R[] {
    const out: R[] = [];
    for (const reading of readings) {
      const withSeq = ((reading as Partial<Reading>).seq === undefined ? { ...reading, seq: NO_SEQ } : reading) as unknown as Reading;
      const inBytes = Buffer.byteLength(JSON.stringify(reading));
      meter.readingsIn += 1;
      meter.bytesIn += inBytes;
      for (const produced of pipeline.process(withSeq)) {
        // Untouched readings come back as the same object and keep their size.
        const result = (produced === withSeq ? reading : withoutSeq(produced, reading)) as R;
        meter.readingsOut += 1;
        meter.bytesOut += produced === withSeq ? inBytes : Buffer.byteLength(JSON.stringify(result));
        out.push(result);
      }
    }
    return out;
  }

  /** Before the outbox, the outbox gives the seq; before the uplink, a reading keeps its row's seq. */
  function withoutSeq(produced: Reading, from: DeviceReading): DeviceReading | Reading {
    if ((from as Partial<Reading>).seq !== undefined) return produced;
    const { seq: _seq, ...rest } = produced;
    return rest;
  }

  return {
    before: config.before,
    process,
    takeState: () => pipeline.takeChangedState(),
    restore(saved) {
      pipeline.resetState();
      const result = pipeline.restoreState(saved);
      restoredSeries = result.restored;
      discardedSeries = result.discarded;
      // What restoreState touched is what is saved already.
      pipeline.takeChangedState();
    },
    stats() {
      const s = pipeline.stats();
      return {
        before: config.before,
        ...meter,
        readingsSaved: meter.readingsIn === 0 ? 0 : 1 - meter.readingsOut / meter.readingsIn,
        bytesSaved: meter.bytesIn === 0 ? 0 : 1 - meter.bytesOut / meter.bytesIn,
        series: s.series,
        ops: s.ops,
        restoredSeries,
        discardedSeries,
      };
    },
  };
}

interface BuiltBatch {
  readonly batchId: number;
  readonly seqs: readonly number[];
  readonly state: readonly SavedSeriesState[];
  acked: boolean;
}

/**
 * Before the uplink, the raw rows of a batch leave the outbox, and the state the pipeline reached
 * on them is saved, only once this batch and every batch built before it are acked: the outbox
 * then always holds every row processed since the saved state. A resend or a restart replays
 * those rows from that state, in the same order, so it sends the same readings with the same
 * seqs and the ingestor's dedupe answers for what it already has. Pure bookkeeping.
 */
export class UplinkSettlement {
  readonly #batches: BuiltBatch[] = [];

  /** A batch was built from these rows; `state` is what the pipeline reached on them. */
  built(batchId: number, seqs: readonly number[], state: readonly SavedSeriesState[]): void {
    this.#batches.push({ batchId, seqs, state, acked: false });
  }

  /** Batches built and not settled. */
  get pending(): number {
    return this.#batches.length;
  }

  /**
   * The batch is acked (or produced nothing to send). Returns the rows to delete and the state to
   * save, in one transaction, then call settled(); undefined for a batch built before a rollback.
   */
  acked(batchId: number): { count: number; seqs: number[]; state: SavedSeriesState[] } | undefined {
    const batch = this.#batches.find((b) => b.batchId === batchId);
    if (!batch) return undefined;
    batch.acked = true;
    const seqs: number[] = [];
    const state: SavedSeriesState[] = [];
    let count = 0;
    for (const b of this.#batches) {
      if (!b.acked) break;
      count += 1;
      seqs.push(...b.seqs);
      // In order: a later snapshot of a series overwrites an earlier one in the same transaction.
      state.push(...b.state);
    }
    return { count, seqs, state };
  }

  /** The first `count` batches are settled (their rows deleted, their state saved). */
  settled(count: number): void {
    this.#batches.splice(0, count);
  }

  /** Every unsettled batch goes out again, rebuilt from the saved state. */
  reset(): void {
    this.#batches.length = 0;
  }
}
