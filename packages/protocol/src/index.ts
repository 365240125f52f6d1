export * from './errors.js';
export * from './limits.js';
export * from './topics.js';
export * from './reading.js';
export * from './device.js';
export * from './envelope.js';
