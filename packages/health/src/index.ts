export * from './deadlines.js';
export * from './rules.js';
export * from './liveness.js';
export * from './fleet.js';
export * from './alerts.js';
export * from './monitor.js';
export * from './store-sqlite.js';
export * from './notifiers/index.js';
