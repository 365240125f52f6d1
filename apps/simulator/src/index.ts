// @ferry/simulator: simulated devices publishing telemetry, for demos, tests and load.
export { createSimulator } from './simulator.js';
export type { Simulator, SimulatorDeps, SimulatorStats } from './simulator.js';
export { simulatorConfigSchema, connectionCount } from './config.js';
export type { SimulatorConfig, SimulatorConfigInput } from './config.js';
export { createDeviceSignals, createPrng, deviceSeed } from './signals.js';
export type { DeviceMetrics, DeviceSignals } from './signals.js';
