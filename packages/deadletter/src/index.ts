export * from './store.js';
export * from './sqlite.js';
