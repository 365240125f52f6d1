export * from './clock.js';
export * from './backoff.js';
export * from './logger.js';
export * from './metrics.js';
export * from './config.js';
export * from './http.js';
export * from './sqlite.js';
export * from './disk-full.js';
