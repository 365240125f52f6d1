export * from './notifier.js';
export * from './alertmanager.js';
export * from './webhook.js';
export * from './log.js';
export * from './mqtt.js';
