export * from './store.js';
export * from './sqlite.js';
export * from './present.js';
