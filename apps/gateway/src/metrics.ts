// The gateway's Prometheus metrics (ferry_gateway_*). Counters are bumped per group or batch,
// never per log line; gauges read the live state when scraped.
import { Counter, Gauge } from '@ferry/runtime';
import type { Registry } from '@ferry/runtime';
import type { GatewayDisk } from '@ferry/protocol';
import type { EdgeProcessingStats } from './process.js';
import { MESSAGE_OUTCOMES } from './message-accounting.js';
import type { MessageOutcome } from './message-accounting.js';

export interface GaugeSources {
  /** Device messages received: counted by the intake, read at each scrape rather than bumped per message. */
  received(): number;
  /** Device messages by where they ended (message-accounting.ts), read at each scrape. */
  messages(): Readonly<Record<MessageOutcome, number>>;
  outboxDepth(): number;
  outboxBytes(): number;
  outboxOldestTs(): number | null;
  outboxDropped(): Readonly<Record<string, number>>;
  inFlightBatches(): number;
  uplinkConnected(): boolean;
  deadLetters(): number;
  /** Bytes written to storage per reading committed; null when not measurable yet. */
  diskWriteBytesPerReading(): number | null;
  drain(): { backlog: number; ratePerSec: number; etaSec: number | null };
  /** Edge processing figures; undefined when no pipeline is configured. */
  processing?(): EdgeProcessingStats | undefined;
  /** The disk under the outbox at the last check; null before it. */
  disk?(): GatewayDisk | null;
  now(): number;
}

export interface GatewayMetrics {
  readonly received: Counter;
  readonly committed: Counter;
  readonly rejected: Counter<'code'>;
  readonly connectsRefused: Counter<'reason'>;
  readonly messagesSettled: Counter<'outcome'>;
  readonly messagesIgnored: Counter<'reason'>;
  readonly valuesDropped: Counter<'code'>;
  readonly commitErrors: Counter;
  readonly batchesSent: Counter;
  readonly sentReadings: Counter;
  readonly sentBytes: Counter;
  readonly ackedReadings: Counter;
  readonly ingestorRejected: Counter;
  readonly resends: Counter<'why'>;
  readonly lateAcks: Counter;
  readonly acksIgnored: Counter<'reason'>;
  readonly retainedSkipped: Counter;
  readonly refusedReadings: Counter;
  readonly storageFull: Counter;
  readonly reserveReleased: Counter;
  readonly compactedReadings: Counter;
  readonly compactionSummaries: Counter;
}

export function createGatewayMetrics(registry: Registry, sources: GaugeSources): GatewayMetrics {
  const registers = [registry];
  // Per-message counts are plain numbers the intake keeps; the counters take what they grew by at
  // each scrape (prom-client hashes a label set at every inc, a cost per message for nothing).
  let receivedReported = 0;
  const settledReported: Record<MessageOutcome, number> = { stored: 0, dead_lettered: 0, ignored: 0, deferred: 0 };
  const metrics: GatewayMetrics = {
    received: new Counter({
      name: 'ferry_gateway_received_total',
      help: 'Device messages received',
      registers,
      collect() {
        const received = sources.received();
        if (received > receivedReported) this.inc(received - receivedReported);
        receivedReported = received;
      },
    }),
    committed: new Counter({ name: 'ferry_gateway_committed_total', help: 'Readings committed to the outbox', registers }),
    rejected: new Counter({
      name: 'ferry_gateway_rejected_total',
      help: 'Device messages refused and dead-lettered, by error code',
      labelNames: ['code'],
      registers,
    }),
    messagesSettled: new Counter({
      name: 'ferry_gateway_messages_settled_total',
      help: 'Device messages by where they ended: stored (readings in the outbox), dead_lettered, ignored (by a pattern rule) or deferred (not acknowledged, sent again); their sum is ferry_gateway_received_total once none is in flight',
      labelNames: ['outcome'],
      registers,
      collect() {
        const totals = sources.messages();
        for (const outcome of MESSAGE_OUTCOMES) {
          if (totals[outcome] > settledReported[outcome]) this.inc({ outcome }, totals[outcome] - settledReported[outcome]);
          settledReported[outcome] = totals[outcome];
        }
      },
    }),
    messagesIgnored: new Counter({
      name: 'ferry_gateway_messages_ignored_total',
      help: "Device messages ignored on purpose, by the pattern rule's reason (e.g. metadata topics)",
      labelNames: ['reason'],
      registers,
    }),
    connectsRefused: new Counter({
      name: 'ferry_gateway_device_connects_refused_total',
      help: 'Device connections refused by the listener: anonymous (no user name), credentials (wrong ones) or packet_too_large (closed at a packet announcing more than the listener reads)',
      labelNames: ['reason'],
      registers,
    }),
    valuesDropped: new Counter({
      name: 'ferry_gateway_values_dropped_total',
      help: 'Single values set aside from otherwise accepted readings (e.g. NaN), by error code',
      labelNames: ['code'],
      registers,
    }),
    commitErrors: new Counter({ name: 'ferry_gateway_commit_errors_total', help: 'Group commits that failed (devices were not acknowledged)', registers }),
    batchesSent: new Counter({ name: 'ferry_gateway_batches_sent_total', help: 'Batches published on the uplink, resends included', registers }),
    sentReadings: new Counter({ name: 'ferry_gateway_sent_readings_total', help: 'Readings published in batches, resends included', registers }),
    sentBytes: new Counter({ name: 'ferry_gateway_sent_bytes_total', help: 'Batch envelope bytes published', registers }),
    ackedReadings: new Counter({ name: 'ferry_gateway_acked_readings_total', help: 'Readings deleted from the outbox after an ack', registers }),
    ingestorRejected: new Counter({
      name: 'ferry_gateway_ingestor_rejected_readings_total',
      help: 'Readings the ingestor refused for good (kept in its dead-letter store)',
      registers,
    }),
    resends: new Counter({
      name: 'ferry_gateway_resends_total',
      help: 'Batches whose readings went out again: no ack in time, or in flight when the uplink dropped',
      labelNames: ['why'],
      registers,
    }),
    lateAcks: new Counter({
      name: 'ferry_gateway_late_acks_total',
      help: 'Acks that came after their batch had been requeued; its readings were deleted all the same',
      registers,
    }),
    acksIgnored: new Counter({
      name: 'ferry_gateway_acks_ignored_total',
      help: 'Acks that changed nothing: unreadable, for another gateway, for an unknown or settled batch, without a nonce (no_nonce) or with the wrong one (forged)',
      labelNames: ['reason'],
      registers,
    }),
    retainedSkipped: new Counter({
      name: 'ferry_gateway_retained_skipped_total',
      help: 'Retained messages replayed by the attached broker and not taken as readings',
      registers,
    }),
    refusedReadings: new Counter({
      name: 'ferry_gateway_refused_readings_total',
      help: "Readings refused because the outbox is full (whenFull: refuse-new); devices were not acknowledged and publish again",
      registers,
    }),
    storageFull: new Counter({
      name: 'ferry_gateway_storage_full_total',
      help: 'Outbox writes that failed on a full disk (SQLITE_FULL / ENOSPC); nothing was acknowledged or deleted',
      registers,
    }),
    reserveReleased: new Counter({
      name: 'ferry_gateway_disk_reserve_released_total',
      help: 'Times the disk reserve was given up so acked readings could be deleted on a full disk',
      registers,
    }),
    compactedReadings: new Counter({
      name: 'ferry_gateway_compacted_readings_total',
      help: "Readings the outbox replaced by summaries when full (whenFull: compact); not lost, but no longer raw",
      registers,
    }),
    compactionSummaries: new Counter({
      name: 'ferry_gateway_compaction_summaries_total',
      help: 'Summary readings (count, min, max, mean per series and interval) written in their place',
      registers,
    }),
  };

  // Edge processing: the pipeline keeps its own running totals; these counters mirror them when scraped.
  const inOut = (name: string, help: string, pick: (s: EdgeProcessingStats) => readonly [number, number]): void => {
    new Counter({
      name,
      help,
      labelNames: ['direction'],
      registers,
      collect() {
        const s = sources.processing?.();
        if (!s) return;
        const [into, out] = pick(s);
        this.reset();
        this.inc({ direction: 'in' }, into);
        this.inc({ direction: 'out' }, out);
      },
    });
  };
  inOut('ferry_gateway_processing_readings_total', 'Readings into (direction="in") and out of (direction="out") the edge processing pipelines', (s) => [s.readingsIn, s.readingsOut]);
  inOut('ferry_gateway_processing_bytes_total', 'Bytes (reading JSON) into and out of the edge processing pipelines', (s) => [s.bytesIn, s.bytesOut]);
  new Counter({
    name: 'ferry_gateway_processing_values_total',
    help: 'Values each edge operator saw (reason="in") and removed or changed, by operator and reason (e.g. deadband/suppressed)',
    labelNames: ['op', 'reason'],
    registers,
    collect() {
      const s = sources.processing?.();
      if (!s) return;
      this.reset();
      for (const [op, reasons] of Object.entries(s.ops)) {
        for (const [reason, n] of Object.entries(reasons)) this.inc({ op, reason }, n);
      }
    },
  });
  new Gauge({
    name: 'ferry_gateway_disk_write_bytes_per_reading',
    help: 'Bytes the gateway process wrote to storage (/proc/self/io write_bytes) per reading committed, since start',
    registers,
    collect() {
      this.set(sources.diskWriteBytesPerReading() ?? 0);
    },
  });
  new Gauge({
    name: 'ferry_gateway_drain_rate_per_second',
    help: 'Readings acked (deleted from the outbox) per second, over the last 10 s',
    registers,
    collect() {
      this.set(sources.drain().ratePerSec);
    },
  });
  new Gauge({
    name: 'ferry_gateway_drain_eta_seconds',
    help: 'Seconds until the outbox is empty at the current drain rate (-1 while nothing drains)',
    registers,
    collect() {
      this.set(sources.drain().etaSec ?? -1);
    },
  });
  new Gauge({
    name: 'ferry_gateway_outbox_depth',
    help: 'Readings in the outbox',
    registers,
    collect() {
      this.set(sources.outboxDepth());
    },
  });
  new Gauge({
    name: 'ferry_gateway_outbox_bytes',
    help: 'Bytes of readings in the outbox',
    registers,
    collect() {
      this.set(sources.outboxBytes());
    },
  });
  new Gauge({
    name: 'ferry_gateway_outbox_oldest_age_seconds',
    help: 'Age of the oldest reading in the outbox (0 when empty)',
    registers,
    collect() {
      const oldest = sources.outboxOldestTs();
      this.set(oldest === null ? 0 : Math.max(0, (sources.now() - oldest) / 1000));
    },
  });
  new Gauge({
    name: 'ferry_gateway_outbox_dropped_readings',
    help: 'Readings the outbox bound discarded since the outbox was created, by reason',
    labelNames: ['reason'],
    registers,
    collect() {
      for (const [reason, count] of Object.entries(sources.outboxDropped())) this.set({ reason }, count);
    },
  });
  const diskGauge = (name: string, help: string, pick: (d: GatewayDisk) => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const d = sources.disk?.();
        if (d) this.set(pick(d));
      },
    });
  };
  diskGauge('ferry_gateway_disk_total_bytes', 'Size of the filesystem holding the outbox', (d) => d.totalBytes);
  diskGauge('ferry_gateway_disk_free_bytes', 'Bytes still free on the filesystem holding the outbox', (d) => d.freeBytes);
  diskGauge('ferry_gateway_disk_outbox_bytes', 'Bytes the outbox file and its WAL take on disk', (d) => d.outboxBytes);
  diskGauge('ferry_gateway_outbox_max_bytes', 'The outbox byte bound in force (maxBytes, or what auto derived from the free space)', (d) =>
    Number.isFinite(d.maxBytes) ? d.maxBytes : -1,
  );
  diskGauge('ferry_gateway_disk_reserve_held', '1 while the disk reserve (kept for deleting acked readings on a full disk) is in place', (d) => (d.reserveHeld ? 1 : 0));
  diskGauge('ferry_gateway_disk_full', '1 while outbox commits fail on a full disk (devices are not acknowledged)', (d) => (d.full ? 1 : 0));
  new Gauge({
    name: 'ferry_gateway_in_flight_batches',
    help: 'Batches sent and awaiting an ack',
    registers,
    collect() {
      this.set(sources.inFlightBatches());
    },
  });
  new Gauge({
    name: 'ferry_gateway_uplink_connected',
    help: '1 when the uplink is connected and subscribed to acks',
    registers,
    collect() {
      this.set(sources.uplinkConnected() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ferry_gateway_dead_letters',
    help: 'Entries held in the gateway dead-letter store',
    registers,
    collect() {
      this.set(sources.deadLetters());
    },
  });
  return metrics;
}
