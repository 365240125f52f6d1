// Prometheus metrics, all ferry_ingestor_*. The reading counters are read from Accounting at
// scrape time, so /metrics and the books can never disagree.
import { Counter, Gauge, Histogram } from '@ferry/runtime';
import type { Registry } from '@ferry/runtime';
import type { ErrorCode } from '@ferry/protocol';
import type { Accounting } from './accounting.js';
import type { AcceptResult } from './pipeline.js';

export interface IngestorMetrics {
  batch(result: AcceptResult, readings: number): void;
  written(points: number, seconds: number): void;
  retry(stage: 'sink' | 'confirm' | 'intent' | 'present'): void;
  /** Points a writer that died mid-write had put in the database already: found there, not written again. */
  recovered(points: number): void;
  deadLettered(code: ErrorCode, count: number): void;
  pruned(count: number): void;
  ackSent(): void;
  batchLag(ms: number): void;
  deviceDuplicate(origin: 'gateway' | 'direct'): void;
  skewed(how: 'clamped' | 'flagged'): void;
  namesDropped(count: number): void;
  devicePruned(count: number): void;
  directMessage(outcome: 'journaled' | 'not-owned' | 'failed'): void;
  /** A write to one of the ingestor's own SQLite files failed because the disk is full. */
  storageFull(store: string): void;
}

export interface MetricSources {
  readonly accounting: Accounting;
  readonly sinkUp: () => boolean | undefined;
  readonly mqttConnected: () => boolean;
  readonly pending: () => { batches: number; readings: number };
  /** Seconds the oldest unacked batch has waited since it arrived (0 when none). */
  readonly consumerLagSeconds?: () => number;
  /** Direct-device journal rows (received, not yet settled). */
  readonly journalRows?: () => number;
  /** Whether the disk under the data dir is full now (DiskFullState in @ferry/runtime). */
  readonly storageFull?: () => boolean;
}

export function createIngestorMetrics(registry: Registry, sources: MetricSources): IngestorMetrics {
  const { accounting } = sources;
  const fromBooks = (name: string, help: string, pick: (a: { received: number; written: number; duplicates: number }) => number): void => {
    new Counter({
      name,
      help,
      labelNames: ['gateway'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [gateway, a] of accounting.byGateway()) this.inc({ gateway }, pick(a));
      },
    });
  };
  fromBooks('ferry_ingestor_readings_received_total', 'Readings received in batches, per gateway', (a) => a.received);
  fromBooks('ferry_ingestor_readings_written_total', 'Readings the database confirmed, per gateway', (a) => a.written);
  fromBooks('ferry_ingestor_readings_duplicates_total', 'Readings already written before (resends), per gateway', (a) => a.duplicates);
  new Counter({
    name: 'ferry_ingestor_readings_rejected_total',
    help: 'Readings refused for good (dead-lettered), per gateway and error code',
    labelNames: ['gateway', 'code'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [gateway, a] of accounting.byGateway()) {
        for (const [code, n] of Object.entries(a.rejectedByCode)) this.inc({ gateway, code }, n);
      }
    },
  });
  new Gauge({
    name: 'ferry_ingestor_readings_in_flight',
    help: 'Readings received and not settled yet (queued, being written, waiting for the database), per gateway',
    labelNames: ['gateway'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [gateway, a] of accounting.byGateway()) this.set({ gateway }, a.inFlight);
    },
  });
  new Gauge({
    name: 'ferry_ingestor_sink_up',
    help: '1 when the last write or ping reached the database, 0 when it failed',
    registers: [registry],
    collect() {
      const up = sources.sinkUp();
      this.set(up === undefined ? 0 : up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ferry_ingestor_mqtt_connected',
    help: '1 while connected to the broker',
    registers: [registry],
    collect() {
      this.set(sources.mqttConnected() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ferry_ingestor_pending_batches',
    help: 'Batches received and not acked yet',
    registers: [registry],
    collect() {
      this.set(sources.pending().batches);
    },
  });
  const batches = new Counter({
    name: 'ferry_ingestor_batches_total',
    help: 'Batch messages by outcome (accepted, shed when the queue was full, envelope-invalid, failed, ignored)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const batchReadings = new Histogram({
    name: 'ferry_ingestor_batch_readings',
    help: 'Readings per accepted batch',
    buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000],
    registers: [registry],
  });
  const writeSeconds = new Histogram({
    name: 'ferry_ingestor_write_duration_seconds',
    help: 'Time for the database to confirm one write',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const writePoints = new Histogram({
    name: 'ferry_ingestor_write_points',
    help: 'Points per database write (coalesced across batches)',
    buckets: [1, 10, 100, 500, 1000, 2500, 5000, 10000],
    registers: [registry],
  });
  const retries = new Counter({
    name: 'ferry_ingestor_write_retries_total',
    help: 'Writes retried, by stage (sink: the database failed; confirm: local storage failed after it; intent: the write intent could not be stored; present: the database could not be asked what an interrupted write left)',
    labelNames: ['stage'],
    registers: [registry],
  });
  const deadLetters = new Counter({
    name: 'ferry_ingestor_dead_letters_total',
    help: 'Entries filed in the dead-letter store, by error code',
    labelNames: ['code'],
    registers: [registry],
  });
  const pruned = new Counter({
    name: 'ferry_ingestor_dedupe_pruned_total',
    help: 'Seqs the dedupe window discarded',
    registers: [registry],
  });
  const acks = new Counter({ name: 'ferry_ingestor_acks_sent_total', help: 'Acks the broker accepted', registers: [registry] });
  new Gauge({
    name: 'ferry_ingestor_consumer_lag_seconds',
    help: 'Age of the oldest batch received and not acked yet (0 when all are acked)',
    registers: [registry],
    collect() {
      this.set(sources.consumerLagSeconds?.() ?? 0);
    },
  });
  new Gauge({
    name: 'ferry_ingestor_direct_journal_rows',
    help: 'Direct-device messages journaled and not yet written (or dead-lettered)',
    registers: [registry],
    collect() {
      this.set(sources.journalRows?.() ?? 0);
    },
  });
  const batchLag = new Histogram({
    name: 'ferry_ingestor_batch_lag_seconds',
    help: 'Age of a batch when it arrived: envelope sentAt (gateway clock) to receive',
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600],
    registers: [registry],
  });
  const deviceDuplicates = new Counter({
    name: 'ferry_ingestor_device_duplicates_total',
    help: "Readings recognised by the device's own identity (a device's republish), by origin (gateway, direct)",
    labelNames: ['origin'],
    registers: [registry],
  });
  const namesDropped = new Counter({
    name: 'ferry_ingestor_names_dropped_total',
    help: "Fields and tags left out of a point because the database's name rules refuse them (sent by a gateway older than those rules); the point's good fields are written",
    registers: [registry],
  });
  const skewed = new Counter({
    name: 'ferry_ingestor_skewed_total',
    help: 'Readings with a device time out of the skew window that were written anyway (clamped or flagged)',
    labelNames: ['how'],
    registers: [registry],
  });
  const devicePruned = new Counter({
    name: 'ferry_ingestor_device_dedupe_pruned_total',
    help: "Device identities the device window's entry bound discarded",
    registers: [registry],
  });
  const directMessages = new Counter({
    name: 'ferry_ingestor_direct_messages_total',
    help: 'Direct-device messages by outcome (journaled then PUBACKed, not-owned by this partition, failed: not PUBACKed)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  new Gauge({
    name: 'ferry_ingestor_storage_full',
    help: '1 while writes to the data dir fail for lack of space (and for a few seconds after the last failure); batches are not acked meanwhile',
    registers: [registry],
    collect() {
      this.set(sources.storageFull?.() ? 1 : 0);
    },
  });
  const recovered = new Counter({
    name: 'ferry_ingestor_recovered_points_total',
    help: 'Points of a chunk whose write was in flight when an ingestor died, found in the database on the resend and not written again (write intents)',
    registers: [registry],
  });
  const storageFull = new Counter({
    name: 'ferry_ingestor_storage_full_total',
    help: 'Writes to the ingestor\'s own SQLite files that failed because the disk was full, by store (sink: the embedded points.db)',
    labelNames: ['store'],
    registers: [registry],
  });
  return {
    batch(result, readings) {
      batches.inc({ outcome: result });
      if (result === 'accepted') batchReadings.observe(readings);
    },
    written(points, seconds) {
      writeSeconds.observe(seconds);
      writePoints.observe(points);
    },
    retry(stage) {
      retries.inc({ stage });
    },
    recovered(points) {
      recovered.inc(points);
    },
    deadLettered(code, count) {
      deadLetters.inc({ code }, count);
    },
    pruned(count) {
      pruned.inc(count);
    },
    ackSent() {
      acks.inc();
    },
    batchLag(ms) {
      batchLag.observe(ms / 1000);
    },
    deviceDuplicate(origin) {
      deviceDuplicates.inc({ origin });
    },
    namesDropped(count) {
      namesDropped.inc(count);
    },
    skewed(how) {
      skewed.inc({ how });
    },
    devicePruned(count) {
      devicePruned.inc(count);
    },
    directMessage(outcome) {
      directMessages.inc({ outcome });
    },
    storageFull(store) {
      storageFull.inc({ store });
    },
  };
}
