// Stage 3b, process: after dedupe and before map, each new reading runs through the per-metric
// pipelines of the `processing` config (cleaning, filtering; @ferry/processing). A reading runs
// here exactly once per ingestor run: duplicates and resends caught by dedupe never reach it, and
// a write the sink retries reuses the point built here. Operator state (a median window, a
// deadband's last value) lives in memory: after a restart the operators warm up again.
import type { Reading } from '@ferry/protocol';
import { createPipeline } from '@ferry/processing';
import type { PipelineStats } from '@ferry/processing';
import type { Clock } from '@ferry/runtime';
import type { IngestorProcessingConfig } from './process-config.js';

export interface ReadingProcessor {
  /** The reading to write, or null when the pipelines removed every metric (nothing raw to write). */
  process(reading: Reading): Reading | null;
  /** Per operator: samples seen (`in`) and values removed or changed, by reason. */
  stats(): PipelineStats;
}

/** Undefined when no pipeline is configured: readings then pass untouched at no cost. */
export function createReadingProcessor(config: IngestorProcessingConfig, clock: Clock): ReadingProcessor | undefined {
  if (config.pipelines.length === 0) return undefined;
  // Already validated with the ingestor config; parsed again inside, which is cheap and once.
  const pipeline = createPipeline({ pipelines: config.pipelines }, clock);
  const flagField = config.flagField;
  return {
    process(reading) {
      // Without skew and rollup steps (refused by the config) a reading comes out whole or not at all.
      const out = pipeline.process(reading)[0];
      if (out === undefined) return null;
      if (out === reading) return reading;
      const before = reading.flags?.length ?? 0;
      const added = out.flags?.slice(before) ?? [];
      if (added.length === 0) return out;
      // Flags are not fields: what the steps changed is written to the point as one string field.
      return { ...out, metrics: { ...out.metrics, [flagField]: added.join(',') } };
    },
    stats: () => pipeline.stats(),
  };
}
