// @ferry/testkit: real servers (mosquitto, influxd, victoria-metrics, redis) as disposable
// test resources, each on its own loopback port and temp dir, plus polling with a deadline.

export { waitFor, type WaitOptions } from './wait.js';
export { freePort, stablePort } from './ports.js';
export { makeTempDir } from './tempdir.js';
export { findBinary } from './binaries.js';
export type { ServerHandle } from './server.js';
export { startMosquitto, type MosquittoOptions } from './mosquitto.js';
export { startVictoriaMetrics, type VictoriaHandle, type VmSeries } from './victoria-metrics.js';
export { startInfluxd, type InfluxdHandle, type InfluxSeries, type InfluxQueryOptions } from './influxd.js';
export { startRedis, type RedisOptions } from './redis.js';
export { startReadyChild, killReadyChildren, type ReadyChild, type ReadyChildOptions } from './child.js';
export { startPowercutDisk, type PowercutDisk } from './powercut.js';
export { fillDisk, mountSmallDisk, type SmallDisk } from './small-disk.js';
