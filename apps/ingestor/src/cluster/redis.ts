// One Redis connection of the shared state, set up for what exact counts need:
// - commands are written to the socket in the tick they are made (no auto-pipelining), so a
//   record sent right after the database confirmed a chunk is out of the process at once;
// - a command never fails for a lost connection (maxRetriesPerRequest: null): it waits in the
//   offline queue, and one in flight when the connection dropped is sent again on reconnect, so
//   the ingestors wait out a Redis restart and go on;
// - a READONLY answer (a replica promoted elsewhere) reconnects and resends;
// - errors are logged at most once per 10 s, with the count of those suppressed.
import { Redis } from 'ioredis';
import { LogThrottle } from '@ferry/runtime';
import type { Clock, Logger } from '@ferry/runtime';
import { redactUrl } from '../redact.js';

export type RedisClient = Redis;

export interface RedisConnectOptions {
  readonly url: string;
  /** What this connection is for, in its log lines ("state", "fleet events"). */
  readonly name: string;
  readonly logger: Logger;
  readonly clock: Clock;
}

/** Reconnect backoff: 100 ms doubling to 2 s. */
export function reconnectDelayMs(attempt: number): number {
  return Math.min(2_000, 100 * 2 ** Math.min(5, Math.max(0, attempt - 1)));
}

export function connectRedis(options: RedisConnectOptions): RedisClient {
  const { logger } = options;
  const redis = new Redis(options.url, {
    maxRetriesPerRequest: null,
    enableOfflineQueue: true,
    enableAutoPipelining: false,
    autoResendUnfulfilledCommands: true,
    retryStrategy: reconnectDelayMs,
    // After a failover the old primary answers writes with READONLY: reconnect (to the new
    // primary behind the same address) and send the command again.
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 2 : false),
    connectionName: `ferry-${options.name}`,
    lazyConnect: false,
  });
  const throttle = new LogThrottle(options.clock, 10_000);
  const where = redactUrl(options.url);
  let down = false;
  redis.on('error', (err: Error) => {
    const verdict = throttle.hit();
    if (verdict.log) logger.warn({ err: err.message, redis: where, connection: options.name, suppressed: verdict.suppressed }, 'redis connection error; commands wait and are sent again');
  });
  redis.on('close', () => {
    if (!down) logger.warn({ redis: where, connection: options.name }, 'redis connection lost; waiting for it');
    down = true;
  });
  redis.on('ready', () => {
    if (down) logger.info({ redis: where, connection: options.name }, 'redis connection back');
    down = false;
    throttle.reset();
  });
  return redis;
}

/** A Lua script run by EVALSHA; keys and args are passed as one list after the key count. */
export type ScriptCall = (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;

/**
 * Registers `lua` on the client under `name` with ioredis defineCommand, which sends EVAL the
 * first time on each connection and EVALSHA after, so a Redis restart (empty script cache,
 * NOSCRIPT) costs one EVAL rather than an error. Names are global to the client: prefix them.
 */
export function defineScript(redis: RedisClient, name: string, lua: string): ScriptCall {
  redis.defineCommand(name, { lua });
  const command = (redis as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>)[name];
  if (command === undefined) throw new Error(`ioredis did not define the script command ${name}`);
  return (keys, args) => command.call(redis, keys.length, ...keys, ...args);
}
