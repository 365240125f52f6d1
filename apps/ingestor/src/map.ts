// Stage 4, map: a validated reading becomes its database point. readingToPoint is idempotent,
// which is what makes a repeated write an overwrite instead of a second point; it also picks the
// device's own seq over the gateway seq where the device sent one with its own time (see
// pointSeq in @ferry/sinks and device-dedupe.ts).
import { readingToPoint } from '@ferry/sinks';
import type { Point, PointMapping } from '@ferry/sinks';
import type { Reading } from '@ferry/protocol';

export function mapReading(reading: Reading, gatewayId: string, mapping: PointMapping): Point {
  return readingToPoint(reading, gatewayId, mapping);
}
