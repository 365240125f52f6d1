// Timestamp correction for a device whose clock is known to run `offsetMs` ahead (negative:
// behind). Readings the gateway stamped itself are left alone: its clock is not the device's.
import { ReasonCounts, withTs, type Sample, type SeriesOperator } from './sample.js';

export interface SkewOptions {
  /** How far the device clock is ahead of true time; the corrected ts is `ts - offsetMs`. */
  readonly offsetMs: number;
  /** Correct only timestamps that came from the device clock (tsSource 'device'). */
  readonly deviceTimeOnly: boolean;
  readonly flag: boolean;
}

/** Counts `corrected` and `skipped_gateway_time`. */
export class SkewCorrection implements SeriesOperator {
  constructor(
    private readonly opts: SkewOptions,
    private readonly counts: ReasonCounts,
  ) {}

  push(sample: Sample): Sample {
    if (this.opts.deviceTimeOnly && sample.source === 'gateway') {
      this.counts.add('skipped_gateway_time');
      return sample;
    }
    if (this.opts.offsetMs === 0) return sample;
    this.counts.add('corrected');
    return withTs(sample, sample.ts - this.opts.offsetMs, this.opts.flag ? 'skew_corrected' : undefined);
  }
}
