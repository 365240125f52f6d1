// The gateway's retained status on the uplink: what `ferry status` and the ingestor's health
// view read. The Last Will carries the offline form, with the epoch of the session it ends: the
// ingestor orders statuses by epoch, never by the gateway's clock (docs/protocol.md).
import { ENVELOPE_VERSION } from '@ferry/protocol';
import type { GapRecord, GatewayDisk, GatewayStatus } from '@ferry/protocol';
import type { DrainProgress } from './drain.js';
import type { CompactedSpan } from './drops.js';
import type { OutboxStats } from './outbox.js';
import type { EdgeProcessingStats } from './process.js';

/** Gap records carried in each status: the most recently written; older ones stay in the outbox file. */
export const GAPS_IN_STATUS = 100;
/** Per-device compaction records carried in each status: the most recently updated. */
export const COMPACTED_IN_STATUS = 100;

export interface StatusInput {
  readonly gatewayId: string;
  readonly state: 'online' | 'offline';
  readonly now: number;
  readonly version: string;
  /** `connected`, `closed` (clean shutdown) or `lost` (the Last Will). */
  readonly uplink: 'connected' | 'closed' | 'lost';
  readonly outbox?: OutboxStats;
  readonly deadLetters?: number;
  /** The most recent gap records (at most GAPS_IN_STATUS are sent). */
  readonly gaps?: readonly GapRecord[];
  /** With whenFull 'compact': per device, what was replaced by summaries (at most COMPACTED_IN_STATUS are sent). */
  readonly compacted?: readonly CompactedSpan[];
  readonly drain?: DrainProgress;
  readonly diskWriteBytesPerReading?: number | null;
  readonly disk?: GatewayDisk | undefined;
  readonly processing?: EdgeProcessingStats;
  /** The uplink session (uplink.ts): the same in a session's statuses and in its Last Will. */
  readonly epoch?: number | undefined;
  /** How often statuses go out; the ingestor takes a gateway quiet for a few of these as offline. */
  readonly statusIntervalMs?: number;
}

export function gatewayStatus(input: StatusInput): GatewayStatus {
  return {
    v: ENVELOPE_VERSION,
    gatewayId: input.gatewayId,
    state: input.state,
    ts: Math.floor(input.now),
    version: input.version,
    uplink: input.uplink,
    ...(input.epoch !== undefined ? { epoch: input.epoch } : {}),
    ...(input.statusIntervalMs !== undefined ? { statusIntervalMs: input.statusIntervalMs } : {}),
    ...(input.outbox
      ? {
          outbox: { depth: input.outbox.depth, bytes: input.outbox.bytes, oldestTs: input.outbox.oldestTs },
          dropped: { ...input.outbox.dropped },
        }
      : {}),
    // An extra field, like `processing`: readings summarised are not dropped, but the cloud must
    // know which spans hold summaries rather than raw readings.
    ...(input.outbox?.compacted
      ? {
          compacted: {
            readings: input.outbox.compacted.readings,
            summaries: input.outbox.compacted.summaries,
            devices: (input.compacted ?? []).slice(0, COMPACTED_IN_STATUS).map((c) => ({
              deviceId: c.deviceId,
              readings: c.readings,
              summaries: c.summaries,
              firstTs: c.firstTs,
              lastTs: c.lastTs,
            })),
          },
        }
      : {}),
    ...(input.deadLetters !== undefined ? { deadLetters: input.deadLetters } : {}),
    ...(input.gaps !== undefined ? { gaps: input.gaps.slice(0, GAPS_IN_STATUS) } : {}),
    ...(input.drain !== undefined ? { drain: { ...input.drain } } : {}),
    ...(input.diskWriteBytesPerReading !== undefined ? { diskWriteBytesPerReading: input.diskWriteBytesPerReading } : {}),
    ...(input.disk !== undefined ? { disk: { ...input.disk } } : {}),
    // An extra field (the status schema passes unknown ones through): what edge processing saved.
    ...(input.processing !== undefined
      ? {
          processing: {
            before: input.processing.before,
            readingsIn: input.processing.readingsIn,
            readingsOut: input.processing.readingsOut,
            bytesIn: input.processing.bytesIn,
            bytesOut: input.processing.bytesOut,
          },
        }
      : {}),
  };
}

export function encodeGatewayStatus(status: GatewayStatus): Buffer {
  return Buffer.from(JSON.stringify(status));
}
