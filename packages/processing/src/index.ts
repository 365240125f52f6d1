// @ferry/processing: time-series operators (cleaning, rollups, rates, energy, filtering) as pure,
// per-series state machines, and the configured pipeline that runs them on readings.
export * from './sample.js';
export { medianOfSorted, percentileOfSorted, sortedCopy, sortSmall } from './order-statistics.js';
export { compileGlob } from './series-match.js';
export { RangeCheck, type RangeOptions } from './range.js';
export { HampelFilter, MAD_TO_SIGMA, type HampelOptions } from './hampel.js';
export { MedianFilter, type MedianOptions } from './median.js';
export { StuckDetector, type StuckOptions } from './stuck.js';
export { UNITS, UnitNormaliser, unitConversion, unitMismatch, type UnitOptions } from './units.js';
export { SkewCorrection, type SkewOptions } from './skew.js';
export { TumblingWindows, AGGREGATES, type Aggregate, type RollupOptions, type WindowAggregate } from './rollup.js';
export { CounterRate, isWrap, type RateOptions } from './rate.js';
export { Integrator, type IntegrateOptions } from './integrate.js';
export { Deadband, type DeadbandOptions } from './deadband.js';
export { ExponentialMovingAverage, SimpleMovingAverage, type EmaOptions, type SmaOptions } from './smoothing.js';
// The config schema and durations: the same exports as @ferry/processing/schema.
export * from './schema.js';
export { createOperator, createWindows } from './steps.js';
export {
  createPipeline,
  rollupMeasurement,
  ROLLUP_MEASUREMENT_TAG,
  type Pipeline,
  type PipelineOptions,
  type PipelineStats,
  type SeriesSnapshot,
} from './pipeline.js';
