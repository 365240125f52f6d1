// From a validated step config to the operator that runs it on one series.
import type { StepConfig } from './config.js';
import { Deadband } from './deadband.js';
import { HampelFilter } from './hampel.js';
import { Integrator } from './integrate.js';
import { MedianFilter } from './median.js';
import { RangeCheck } from './range.js';
import { CounterRate } from './rate.js';
import { TumblingWindows } from './rollup.js';
import type { ReasonCounts, SeriesOperator } from './sample.js';
import { SkewCorrection } from './skew.js';
import { ExponentialMovingAverage, SimpleMovingAverage } from './smoothing.js';
import { StuckDetector } from './stuck.js';
import { UnitNormaliser } from './units.js';

/** Builds a fresh operator for one series. */
export function createOperator(step: Exclude<StepConfig, { op: 'rollup' }>, counts: ReasonCounts): SeriesOperator {
  switch (step.op) {
    case 'range':
      return new RangeCheck(step, counts);
    case 'hampel':
      return new HampelFilter(step, counts);
    case 'median':
      return new MedianFilter(step, counts);
    case 'stuck':
      return new StuckDetector(step, counts);
    case 'unit':
      return new UnitNormaliser(step, counts);
    case 'skew':
      return new SkewCorrection(step, counts);
    case 'rate':
      return new CounterRate(step, counts);
    case 'integrate':
      return new Integrator(step, counts);
    case 'deadband':
      return new Deadband(step, counts);
    case 'ema':
      return new ExponentialMovingAverage(step, counts);
    case 'sma':
      return new SimpleMovingAverage(step, counts);
  }
}

export function createWindows(step: Extract<StepConfig, { op: 'rollup' }>, counts: ReasonCounts): TumblingWindows {
  return new TumblingWindows(
    {
      windowMs: step.window,
      allowedLatenessMs: step.allowedLatenessMs,
      aggregates: step.aggregates,
      maxValuesPerWindow: step.maxValuesPerWindow,
    },
    counts,
  );
}
