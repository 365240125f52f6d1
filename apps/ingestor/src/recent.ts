// Recent readings per device, in memory: what the device page charts, whatever the sink (InfluxDB
// and VictoriaMetrics are not read back). Holds only readings the database confirmed, bounded per
// device and in total; at the total bound the least recently updated devices go first, counted.
import type { MetricValue, ReadingKind } from '@ferry/protocol';

/** What is charted: numbers, and booleans (cheap to keep). */
export type RecentValue = number | boolean;

export interface RecentReading {
  /** Reading time, epoch ms (the device's or the gateway's, as written). */
  readonly ts: number;
  readonly kind: ReadingKind;
  readonly metrics: Readonly<Record<string, RecentValue>>;
  readonly flags?: readonly string[];
}

/** A confirmed reading as handed to the buffer, before its metrics are cut down to what is kept. */
export interface RecentReadingInput extends Omit<RecentReading, 'metrics'> {
  readonly metrics: Readonly<Record<string, MetricValue>>;
}

/**
 * The metrics worth keeping: string values (up to maxStringValueLength each) are left out and at
 * most maxMetrics of the rest kept (in the reading's order), which bounds a kept reading by a
 * small metric count rather than by its payload size. The same object when nothing is left out,
 * so the usual reading costs no copy. `trimmed`: numeric or boolean metrics were left out.
 */
export function keptMetrics(metrics: Readonly<Record<string, MetricValue>>, maxMetrics = Infinity): { metrics: Readonly<Record<string, RecentValue>>; trimmed: boolean } {
  let strings = false;
  let count = 0;
  for (const key in metrics) {
    if (typeof metrics[key] === 'string') strings = true;
    else count++;
  }
  if (!strings && count <= maxMetrics) return { metrics: metrics as Readonly<Record<string, RecentValue>>, trimmed: false };
  const kept: Record<string, RecentValue> = {};
  let n = 0;
  for (const [key, value] of Object.entries(metrics)) {
    if (typeof value === 'string') continue;
    if (n++ >= maxMetrics) break;
    kept[key] = value;
  }
  return { metrics: kept, trimmed: count > maxMetrics };
}

export interface RecentReadingsOptions {
  /** Readings kept per device; a device's oldest (by arrival) make room for its newest. */
  readonly perDevice: number;
  /** Readings kept across devices; at least perDevice. */
  readonly maxTotal: number;
  /** Numeric and boolean metrics kept per reading (string values are never kept); unbounded if absent. */
  readonly maxMetrics?: number;
}

export interface RecentReadingsQuery {
  /** Only readings with ts at or after this (epoch ms). */
  readonly sinceTs?: number;
  /** At most this many, the newest. */
  readonly limit?: number;
}

export interface RecentReadingsStats {
  readonly devices: number;
  readonly readings: number;
  /** Devices dropped whole to stay under maxTotal, and the readings they held. */
  readonly evictedDevices: number;
  readonly evictedReadings: number;
  /** Readings that kept only maxMetrics of their numeric and boolean metrics. */
  readonly trimmedReadings: number;
}

/** One device's readings: a ring in arrival order that grows up to perDevice, then overwrites. */
interface DeviceRing {
  readonly deviceId: string;
  readonly items: RecentReading[];
  /** Index of the oldest item once the ring is full; 0 while it grows. */
  start: number;
  /** Neighbours in update order (a list through the rings: moving a device to the end costs no map update). */
  older: DeviceRing | undefined;
  newer: DeviceRing | undefined;
}

export class RecentReadings {
  private readonly byDevice = new Map<string, DeviceRing>();
  /** Update order: `oldest` is the least recently updated device, `newest` the last one updated. */
  private oldest: DeviceRing | undefined;
  private newest: DeviceRing | undefined;
  private total = 0;
  private evictedDevices = 0;
  private evictedReadings = 0;
  private trimmedReadings = 0;

  constructor(private readonly options: RecentReadingsOptions) {
    const { perDevice, maxTotal } = options;
    if (!Number.isInteger(perDevice) || perDevice < 1) throw new RangeError(`perDevice must be a positive integer, got ${perDevice}`);
    // With maxTotal >= perDevice, the device just updated never has to be evicted to make room.
    if (!Number.isInteger(maxTotal) || maxTotal < perDevice) throw new RangeError(`maxTotal must be an integer of at least perDevice (${perDevice}), got ${maxTotal}`);
    const { maxMetrics } = options;
    if (maxMetrics !== undefined && !(maxMetrics >= 1)) throw new RangeError(`maxMetrics must be at least 1, got ${maxMetrics}`);
  }

  /**
   * O(1) amortised in the number of readings (plus one pass over the reading's metrics): one ring
   * write, one move to the end of the update order, evictions paid once each.
   */
  add(deviceId: string, input: RecentReadingInput): void {
    const { metrics, trimmed } = keptMetrics(input.metrics, this.options.maxMetrics);
    if (trimmed) this.trimmedReadings++;
    const reading: RecentReading = metrics === input.metrics ? (input as RecentReading) : { ...input, metrics };
    let ring = this.byDevice.get(deviceId);
    if (!ring) {
      ring = { deviceId, items: [], start: 0, older: undefined, newer: undefined };
      this.byDevice.set(deviceId, ring);
      this.append(ring);
    } else if (ring !== this.newest) {
      this.unlink(ring);
      this.append(ring);
    }
    if (ring.items.length < this.options.perDevice) {
      ring.items.push(reading);
      this.total++;
    } else {
      ring.items[ring.start] = reading;
      ring.start = (ring.start + 1) % ring.items.length;
    }
    while (this.total > this.options.maxTotal) {
      const evicted = this.oldest;
      if (!evicted) break;
      this.unlink(evicted);
      this.byDevice.delete(evicted.deviceId);
      const n = evicted.items.length;
      this.total -= n;
      this.evictedDevices++;
      this.evictedReadings += n;
    }
  }

  /** A device's readings ordered by ts (ties in arrival order), newest last. */
  readings(deviceId: string, query: RecentReadingsQuery = {}): RecentReading[] {
    const ring = this.byDevice.get(deviceId);
    if (!ring) return [];
    const { items, start } = ring;
    const since = query.sinceTs ?? -Infinity;
    const out: RecentReading[] = [];
    for (let i = 0; i < items.length; i++) {
      const r = items[(start + i) % items.length];
      if (r !== undefined && r.ts >= since) out.push(r);
    }
    // Arrival order is nearly ts order; the stable sort puts a late (replayed) reading in its place.
    out.sort((a, b) => a.ts - b.ts);
    const limit = query.limit ?? out.length;
    return limit >= out.length ? out : out.slice(out.length - limit);
  }

  has(deviceId: string): boolean {
    return this.byDevice.has(deviceId);
  }

  /** Drops one device's readings (not counted as an eviction). */
  forget(deviceId: string): boolean {
    const ring = this.byDevice.get(deviceId);
    if (!ring) return false;
    this.byDevice.delete(deviceId);
    this.unlink(ring);
    this.total -= ring.items.length;
    return true;
  }

  /** Drops the devices `keep` says no to (the health model forgot them); returns how many. */
  retain(keep: (deviceId: string) => boolean): number {
    let dropped = 0;
    for (const deviceId of this.devices()) if (!keep(deviceId) && this.forget(deviceId)) dropped++;
    return dropped;
  }

  /** Device ids, least recently updated first. */
  devices(): string[] {
    const out: string[] = [];
    for (let ring = this.oldest; ring; ring = ring.newer) out.push(ring.deviceId);
    return out;
  }

  /** Puts a ring (not in the list) at the end of the update order. */
  private append(ring: DeviceRing): void {
    ring.older = this.newest;
    ring.newer = undefined;
    if (this.newest) this.newest.newer = ring;
    else this.oldest = ring;
    this.newest = ring;
  }

  /** Takes a ring out of the update order. */
  private unlink(ring: DeviceRing): void {
    if (ring.older) ring.older.newer = ring.newer;
    else this.oldest = ring.newer;
    if (ring.newer) ring.newer.older = ring.older;
    else this.newest = ring.older;
    ring.older = undefined;
    ring.newer = undefined;
  }

  stats(): RecentReadingsStats {
    return { devices: this.byDevice.size, readings: this.total, evictedDevices: this.evictedDevices, evictedReadings: this.evictedReadings, trimmedReadings: this.trimmedReadings };
  }
}
