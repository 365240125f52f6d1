// The ingestor pipeline in-process for stage tests: real SQLite stores in `dir`, an in-memory sink,
// acks captured, a manual clock. Each test file wraps it in its own small rig.
import { join } from 'node:path';
import type { Ack } from '@ferry/protocol';
import { defaultLimits } from '@ferry/protocol';
import { ManualClock, silentLogger } from '@ferry/runtime';
import { createSqliteDeadLetterStore } from '@ferry/deadletter';
import type { DeadLetterStore } from '@ferry/deadletter';
import { defaultPointMapping } from '@ferry/sinks';
import { Accounting } from '../src/accounting.js';
import { openDedupeStore } from '../src/dedupe.js';
import type { DedupeStore } from '../src/dedupe.js';
import { openDeviceDedupeStore } from '../src/device-dedupe.js';
import type { DeviceDedupeStore } from '../src/device-dedupe.js';
import { createPipeline } from '../src/pipeline.js';
import type { DirectOptions, Pipeline, QueueBounds } from '../src/pipeline.js';
import type { SkewPolicy } from '../src/skew.js';
import { MemorySink } from './memory-sink.js';

export interface PipelineRigOptions {
  readonly dir: string;
  /** The manual clock's start. */
  readonly now: number;
  readonly queue?: QueueBounds;
  /** Open a persisted device dedupe store too (the default pipeline has none). */
  readonly deviceDedupe?: boolean;
  readonly skewPolicy?: SkewPolicy;
  readonly direct?: DirectOptions;
  readonly acceptBatchesWithoutNonce?: boolean;
}

export interface PipelineRig {
  readonly pipeline: Pipeline;
  readonly sink: MemorySink;
  readonly acks: Ack[];
  readonly accounting: Accounting;
  readonly dedupe: DedupeStore;
  readonly deadLetters: DeadLetterStore;
  readonly clock: ManualClock;
  /** Stops the pipeline (waiting up to `timeoutMs` for writes) and closes the stores. */
  close(timeoutMs?: number): Promise<void>;
}

export function openPipelineRig(options: PipelineRigOptions): PipelineRig {
  const sink = new MemorySink();
  const acks: Ack[] = [];
  const accounting = new Accounting();
  const clock = new ManualClock(options.now);
  const dedupe = openDedupeStore({ path: join(options.dir, 'dedupe.db'), windowPerGateway: 1000 });
  const deviceDedupe: DeviceDedupeStore | undefined = options.deviceDedupe
    ? openDeviceDedupeStore({ path: join(options.dir, 'device-dedupe.db'), windowMs: 3_600_000, maxEntries: 1000 })
    : undefined;
  const deadLetters = createSqliteDeadLetterStore({ path: join(options.dir, 'deadletters.db'), clock });
  const pipeline = createPipeline({
    limits: defaultLimits,
    mapping: defaultPointMapping,
    maxBatchBytes: 1 << 20,
    acceptBatchesWithoutNonce: options.acceptBatchesWithoutNonce,
    queue: options.queue ?? { maxBatches: 100, maxReadings: 10_000 },
    write: { maxPoints: 500, lingerMs: 0, maxInFlight: 2, retry: { initialMs: 5, maxMs: 20, factor: 2 } },
    sink,
    dedupe,
    deviceDedupe,
    skewPolicy: options.skewPolicy,
    direct: options.direct,
    deadLetters,
    accounting,
    clock,
    logger: silentLogger(),
    sendAck: (ack) => acks.push(ack),
  });
  return {
    pipeline,
    sink,
    acks,
    accounting,
    dedupe,
    deadLetters,
    clock,
    async close(timeoutMs = 200) {
      await pipeline.stop(timeoutMs);
      dedupe.close();
      deviceDedupe?.close();
      deadLetters.close();
    },
  };
}
