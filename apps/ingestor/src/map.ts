// Stage 4, map: a validated reading becomes its database point. readingToPoint is idempotent,
// which is what makes a repeated write an overwrite instead of a second point; it also picks the
// device's own seq over the gateway seq where the device sent one with its own time (see
// pointSeq in @ferry/sinks and device-dedupe.ts). A field or tag the database's name rules refuse
// (a gateway older than those rules let it through) is left out here, so the sink never refuses
// the whole point for it: the good fields are written.
import { readingToPoint, withoutBadNames } from '@ferry/sinks';
import type { Point, PointMapping } from '@ferry/sinks';
import type { Reading } from '@ferry/protocol';

export function mapReading(reading: Reading, gatewayId: string, mapping: PointMapping, namesDropped?: (problems: readonly string[]) => void): Point {
  const checked = withoutBadNames(readingToPoint(reading, gatewayId, mapping));
  if (checked.dropped.length > 0) namesDropped?.(checked.dropped);
  return checked.point;
}
