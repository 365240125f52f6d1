// @ferry/processing/schema: the processing config schema and durations alone, for a process that
// validates a `processing` section without running pipelines (a gateway with none configured
// loads no operator code).
export {
  processingConfigSchema,
  pipelineSchema,
  stepSchema,
  parseProcessingConfig,
  type ProcessingConfig,
  type ProcessingConfigInput,
  type PipelineConfig,
  type StepConfig,
  type StepOp,
} from './config.js';
export { parseDuration, formatDuration } from './duration.js';
