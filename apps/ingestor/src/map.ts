// Stage 4, map: a validated reading becomes its database point. readingToPoint is idempotent,
// which is what makes a repeated write an overwrite instead of a second point.
//
// The timestamp's sub-millisecond part normally carries the gateway seq. A reading with both a
// deviceSeq and a device time carries the deviceSeq instead: the device's republish after a lost
// PUBACK gets a second gateway seq, and this way it still maps to the very same point (see
// device-dedupe.ts), while two readings of one device in one millisecond still differ by seq.
import { readingToPoint } from '@ferry/sinks';
import type { Point, PointMapping } from '@ferry/sinks';
import type { Reading } from '@ferry/protocol';

export function mapReading(reading: Reading, gatewayId: string, mapping: PointMapping): Point {
  const pointSeq = reading.deviceSeq !== undefined && reading.tsSource === 'device' ? reading.deviceSeq : reading.seq;
  return readingToPoint(pointSeq === reading.seq ? reading : { ...reading, seq: pointSeq }, gatewayId, mapping);
}
