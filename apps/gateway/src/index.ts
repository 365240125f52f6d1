// @ferry/gateway: the edge process. Devices publish to it over MQTT; it keeps every reading in a
// SQLite outbox until the ingestor's end-to-end ack, and sends them in batches over the uplink.
export { gatewayConfigSchema } from './config.js';
export type { GatewayConfig, GatewayConfigInput } from './config.js';
export { createGateway } from './gateway.js';
export type { Gateway, GatewayDeps, GatewayStats } from './gateway.js';
export { createSqliteOutbox, OUTBOX_FULL, OUTBOX_ROW_OVERHEAD_BYTES } from './outbox.js';
export type {
  Outbox,
  OutboxEntry,
  OutboxStats,
  AppendOptions,
  AppendWithStateOptions,
  AppendResult,
  PeekOptions,
  SavedSeriesState,
  SqliteOutboxOptions,
} from './outbox.js';
// createEdgeProcessing and UplinkSettlement (process.js) are not re-exported: a gateway loads them,
// and @ferry/processing's operators, only when pipelines are configured.
export type { EdgeProcessing, EdgeProcessingConfig, EdgeProcessingStats, UplinkSettlement } from './process.js';
export type { CorruptOutbox } from './outbox-file.js';
export { OUTBOX_SCHEMA_VERSION } from './outbox-schema.js';
export type { CompactedSpan, DropReason, GapRecord } from './drops.js';
export { COMPACTED_COUNT_METRIC, COMPACTED_FLAG } from './compact.js';
export type { CompactionResult } from './outbox.js';
export type { DrainProgress } from './drain.js';
export { applyGatewayFootprint } from './footprint.js';
