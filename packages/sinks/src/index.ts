export * from './sink.js';
export { checkPoint, withoutBadNames, compareUtf8, seriesTags, MIN_TIMESTAMP_NS, MAX_TIMESTAMP_NS } from './point-rules.js';
export * from './line-protocol.js';
export { createInfluxV2Sink, type InfluxV2SinkOptions } from './influx-v2.js';
export { createInfluxV1Sink, type InfluxV1SinkOptions } from './influx-v1.js';
export { createSqliteSink, type SqliteSink, type SqliteSinkOptions, type PointQuery } from './sqlite.js';
export * from './config.js';
