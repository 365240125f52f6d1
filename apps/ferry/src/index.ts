// @ferry/cli: the `ferry` command line. Exported for embedding and tests; the binary is main.ts.
export { buildProgram, CLI_VERSION } from './program.js';
export { parseDuration } from './duration.js';
export { demoSummary, statusLine } from './demo-report.js';
export type { DemoCounts, DemoSnapshot, DemoSummary } from './demo-report.js';
export { demoSink } from './commands/demo.js';
export { formatStatus } from './commands/status.js';
