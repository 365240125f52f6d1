// The Sink seam: where readings become durable. Every implementation (InfluxDB v2, InfluxDB v1,
// embedded SQLite) runs the same contract suite in test/contract.ts.
import type { Reading } from '@ferry/protocol';

export type FieldValue = number | boolean | string;

/** One database point. Numbers are written as floats: JSON cannot tell 21 from 21.0, and InfluxDB refuses a field whose type changes. */
export interface Point {
  readonly measurement: string;
  readonly tags: Readonly<Record<string, string>>;
  readonly fields: Readonly<Record<string, FieldValue>>;
  /** Epoch nanoseconds. */
  readonly timestampNs: bigint;
}

export interface PointRejection {
  /** Index into the points passed to `write`. */
  readonly index: number;
  /** The database's own reason. */
  readonly reason: string;
}

export interface SinkWriteResult {
  /** Points the database confirmed. */
  readonly written: number;
  /** Points the database refused as invalid (a 400), found by splitting the batch. */
  readonly rejected: readonly PointRejection[];
}

/**
 * Implementations: the InfluxDB v1 and v2 sinks define present(): false for every point on
 * InfluxDB, a read-back on VictoriaMetrics, which serves both APIs (presence.ts). The SQLite sink
 * leaves it undefined: it upserts (ON CONFLICT DO UPDATE on series and time), so a point written
 * again replaces itself.
 */
export interface Sink {
  /** e.g. `influxdb2 http://127.0.0.1:8428 bucket=ferry`; never contains credentials. */
  readonly description: string;
  /**
   * Resolves only once the database has confirmed the write. Points it refuses as invalid are
   * returned in `rejected` while the rest are written. Rejects with a FerryError
   * FERRY_ERR_SINK_UNAVAILABLE when the database cannot be reached or fails (network, 5xx, 429):
   * nothing in that call may be counted as written, and the caller retries.
   */
  write(points: readonly Point[]): Promise<SinkWriteResult>;
  /**
   * Recovery after a crash mid-write: which of `points` the database holds already (for each
   * point, true when every field the database stores is there with the same value at the same
   * series and timestamp). Only sinks where writing a point again adds a second sample need it;
   * where a rewrite replaces the point (InfluxDB 1.x and 2, the SQLite sink) it is undefined or
   * answers false for every point, and the caller simply writes again. Rejects with
   * FERRY_ERR_SINK_UNAVAILABLE like write() when the database cannot answer. An empty call
   * prepares what later calls need (identifying the server) and answers [].
   */
  present?(points: readonly Point[]): Promise<readonly boolean[]>;
  /** Whether the database answers now (for /healthz); never throws. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export interface PointMapping {
  /** Measurement for telemetry readings. */
  readonly measurement: string;
  /** Measurement for device status readings. */
  readonly statusMeasurement: string;
  /** Tag names for the device and gateway ids. */
  readonly deviceTag: string;
  readonly gatewayTag: string;
  /** Extra tags added to every point (e.g. site). */
  readonly staticTags: Readonly<Record<string, string>>;
}

export const defaultPointMapping: PointMapping = {
  measurement: 'telemetry',
  statusMeasurement: 'device_status',
  deviceTag: 'device',
  gatewayTag: 'gateway',
  staticTags: {},
};

const NS_PER_MS = 1_000_000n;

/**
 * Field set on a point whose time is the gateway's receive time because the device's clock was
 * not set (the reading's `clock_unsynced` flag): the time is the arrival, not the measurement.
 */
export const CLOCK_UNSYNCED_FIELD = 'ferry_clock_unsynced';

/** The sequence number that tells a reading's point apart within its millisecond. */
export function pointSeq(reading: Reading): number {
  return reading.deviceSeq !== undefined && reading.tsSource === 'device' ? reading.deviceSeq : reading.seq;
}

/**
 * Builds the point for a reading, idempotently: the same reading always yields the same
 * measurement, tags and timestamp, so a write repeated after a crash overwrites itself.
 * Two readings of one device in the same millisecond must not overwrite each other, so the
 * sub-millisecond part of the timestamp carries the reading's sequence number (mod 10^6): the
 * time stays exact to the millisecond and distinct readings get distinct timestamps. That number
 * is the device's own seq when the reading has one and its own device time (a device that
 * republishes after a lost PUBACK gets a second gateway seq, yet must map to the very same
 * point), else the gateway seq.
 */
export function readingToPoint(reading: Reading, gatewayId: string, mapping: PointMapping = defaultPointMapping): Point {
  const tags: Record<string, string> = { ...mapping.staticTags, ...(reading.tags ?? {}) };
  tags[mapping.deviceTag] = reading.deviceId;
  tags[mapping.gatewayTag] = gatewayId;
  // A field, not a tag: the flag must not split the device's series, nor make a rewrite of the
  // same reading (before and after an upgrade) a second point.
  const unsynced = reading.flags?.includes('clock_unsynced') === true;
  return {
    measurement: reading.kind === 'status' ? mapping.statusMeasurement : mapping.measurement,
    tags,
    fields: unsynced ? { ...reading.metrics, [CLOCK_UNSYNCED_FIELD]: true } : reading.metrics,
    timestampNs: BigInt(reading.ts) * NS_PER_MS + BigInt(pointSeq(reading) % 1_000_000),
  };
}
