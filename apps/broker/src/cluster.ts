// Cluster mode: several broker processes share one Redis. mqemitter-redis carries every publish
// to every broker (so a subscriber on one sees a publish on another) and aedes-persistence-redis
// holds sessions, subscriptions, queued messages, retained messages and wills, so a persistent
// session can reconnect to any broker.
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { FerryError } from '@ferry/protocol';

const require = createRequire(import.meta.url);

interface RedisConnection {
  host: string;
  port: number;
  password?: string;
  username?: string;
  db?: number;
}

interface AsyncPersistence {
  setup(broker: unknown): Promise<void>;
  destroy(): Promise<void>;
}

const AsyncRedisPersistence = require('aedes-persistence-redis/asyncPersistence.js') as new (opts: { conn: RedisClient }) => AsyncPersistence;
/** ioredis as aedes-persistence-redis resolves it: the connection is made here so its errors have a listener. */
interface RedisClient {
  on(event: 'error', listener: (err: Error) => void): void;
  /** Closes at once, failing pending commands (ioredis). */
  disconnect(): void;
}
const Redis = createRequire(require.resolve('aedes-persistence-redis/asyncPersistence.js'))('ioredis') as new (opts: RedisConnection) => RedisClient;
/** An mqemitter; aedes types it as any. */
export type Emitter = object;
/** mqemitter-redis's subscriber connection (ioredis). */
interface SubscriberConnection extends RedisClient {
  on(event: 'error', listener: (err: Error) => void): void;
  on(event: 'ready', listener: () => void): void;
  subscribe(channel: string): Promise<unknown>;
  psubscribe(pattern: string): Promise<unknown>;
}
interface RedisEmitter extends Emitter {
  /** mqemitter-redis re-emits its connections' errors here; with no listener the process would crash. */
  readonly state: { on(event: 'error', listener: (err: Error) => void): void };
  readonly subConn: SubscriberConnection;
  readonly pubConn: RedisClient;
  /** mqemitter-redis's record of what it subscribed in Redis: each channel or pattern, with its listener count. */
  readonly _topics: Readonly<Record<string, number>>;
}
const mqemitterRedis = require('mqemitter-redis') as (opts: { connectionString: string }) => RedisEmitter;

export interface ClusterEngine {
  readonly persistence: AsyncPersistence;
  readonly mq: Emitter;
  /**
   * Drops every Redis connection at once, failing what waits on them: for a start given up while
   * Redis does not answer (a graceful destroy would wait for Redis too).
   */
  abandon(): void;
}

/** The methods aedes pipes from; aedes-persistence-redis 11 returns async iterables there. */
const STREAM_METHODS = new Set(['createRetainedStream', 'createRetainedStreamCombi', 'outgoingStream', 'streamWill', 'getClientList']);

/**
 * aedes 1.2 calls `.pipe()` on what those methods return; wrap iterables as streams.
 *
 * And one SUBSCRIBE is stored once: aedes 1.2 calls addSubscriptions once per topic of a
 * persistent session's SUBSCRIBE, in parallel, each time with the packet's whole list, and
 * aedes-persistence-redis waits for its own confirmation under a key made from the first topic, so
 * the parallel calls overwrite each other's wait and one never completes: no SUBACK, and no
 * delivery on that topic (aedes issues #602, #458). The ingestor subscribes to batches and
 * statuses in one packet. So every call for one list shares the first call's promise.
 */
function withStreams(persistence: AsyncPersistence): AsyncPersistence {
  const adding = new WeakMap<object, unknown>();
  return new Proxy(persistence, {
    get(target, key) {
      const value: unknown = Reflect.get(target, key, target);
      if (typeof value !== 'function') return value;
      // Bound to the target: the implementation keeps its state in private fields.
      const bound = (value as (...args: unknown[]) => unknown).bind(target);
      if (key === 'addSubscriptions') {
        return (client: unknown, subs: unknown) => {
          if (typeof subs !== 'object' || subs === null) return bound(client, subs);
          if (!adding.has(subs)) adding.set(subs, broadcastWithin(bound(client, subs) as Promise<unknown>, SUBSCRIPTION_BROADCAST_WAIT_MS));
          return adding.get(subs);
        };
      }
      if (typeof key !== 'string' || !STREAM_METHODS.has(key)) return bound;
      return (...args: unknown[]) => {
        const result = bound(...args);
        return result instanceof Readable ? result : Readable.from(result as AsyncIterable<unknown>);
      };
    },
  });
}

/**
 * How long a persistent session's SUBSCRIBE waits to be stored in Redis and for its own broadcast
 * to come back (normally milliseconds). Redis pub/sub keeps nothing for a subscriber connection
 * that is down: a broadcast published then is lost, and aedes-persistence-redis would wait for it,
 * and the client for its SUBACK, for good. Past this wait the SUBSCRIBE fails instead and aedes
 * closes the connection; the client connects again (Ferry's ingestor subscribes on every connect).
 * What aedes-persistence-redis still had queued may store the subscription afterwards: then the
 * session has it on its next connect, as a SUBSCRIBE that went through would.
 */
export const SUBSCRIPTION_BROADCAST_WAIT_MS = 10_000;

/** `adding`, or a FERRY_ERR_NOT_READY failure after `ms`. */
export function broadcastWithin(adding: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new FerryError('FERRY_ERR_NOT_READY', `the subscription was not stored in Redis and broadcast to the brokers within ${ms} ms; the connection is closed for the client to subscribe again`)),
      ms,
    );
    // A wait must not hold the process open at shutdown.
    timer.unref();
  });
  return Promise.race([adding, late]).finally(() => clearTimeout(timer));
}

/**
 * Subscribes the emitter's subscriber connection, on every (re)connect, to every channel and
 * pattern the emitter has listeners for. ioredis restores a connection's subscriptions after a
 * reconnect only if the connection it lost had been ready: a (P)SUBSCRIBE it sent while the new
 * connection was still being checked, confirmed and then lost with that connection, is not sent
 * again. A broker started while Redis was down lost its `$SYS/sub/+` subscription that way once
 * (Redis came up and went at once), and every persistent session's SUBSCRIBE on it then waited for
 * its own broadcast for good: no SUBACK. Subscribing again to what is subscribed changes nothing.
 */
function keepSubscribed(mq: RedisEmitter, onError: (err: Error) => void): void {
  mq.subConn.on('ready', () => {
    for (const key of Object.keys(mq._topics)) {
      // mqemitter-redis turns MQTT wildcards into '*' and psubscribes those. A topic with a literal
      // '*' subscribed as a pattern only lets more through to the emitter, which matches topics itself.
      const subscribing = key.includes('*') ? mq.subConn.psubscribe(key) : mq.subConn.subscribe(key);
      subscribing.catch(onError);
    }
  });
}

function connectionOf(redisUrl: string): RedisConnection {
  const url = new URL(redisUrl);
  const conn: RedisConnection = { host: url.hostname, port: Number(url.port || 6379) };
  if (url.password) conn.password = decodeURIComponent(url.password);
  if (url.username) conn.username = decodeURIComponent(url.username);
  const db = url.pathname.replace('/', '');
  if (db) conn.db = Number(db);
  return conn;
}

/**
 * Opens the Redis-backed persistence and emitter. A lost Redis connection is reported to `onError`
 * (ioredis reconnects by itself) instead of crashing the broker, which would drop every client.
 */
export function openClusterEngine(redisUrl: string, onError: (err: Error) => void): ClusterEngine {
  const mq = mqemitterRedis({ connectionString: redisUrl });
  mq.state.on('error', onError);
  keepSubscribed(mq, onError);
  // Without a listener ioredis prints "Unhandled error event" for every failed reconnect.
  const conn = new Redis(connectionOf(redisUrl));
  conn.on('error', onError);
  return {
    persistence: withStreams(new AsyncRedisPersistence({ conn })),
    mq,
    abandon() {
      conn.disconnect();
      mq.subConn.disconnect();
      mq.pubConn.disconnect();
    },
  };
}
