// @ferry/ingestor: subscribes to every gateway's batches, validates, dedupes and writes the
// readings to the configured Sink, and acks each batch only once the database confirmed it.
export { ingestorConfigSchema, parseIngestorConfig } from './config.js';
export type { IngestorConfig, IngestorConfigInput } from './config.js';
export { createIngestor } from './ingestor.js';
export type { Ingestor, IngestorDeps, IngestorStats } from './ingestor.js';
export type { ReplayResult } from './pipeline.js';
export type { GatewayDeadLetterCounts, GatewayReplayAnswer } from './gateway-deadletters.js';
export type { GatewayAccount } from './accounting.js';
export type { GatewayStatusEntry } from './statuses.js';
export { DIRECT_SOURCE } from './pipeline.js';
export { ownsSource, partitionHash } from './partition.js';
export type { Partition } from './partition.js';
export type { SkewPolicy } from './skew.js';
