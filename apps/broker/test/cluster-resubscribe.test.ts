// The cluster engine's Redis subscriptions against a real redis-server: whatever the emitter has
// listeners for is subscribed again on every reconnect, even a subscription ioredis forgot (one
// confirmed on a connection lost before it was ready is never sent again by ioredis). And a
// persistent session's SUBSCRIBE whose broadcast never comes back fails instead of waiting for good.
import { createConnection } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { broadcastWithin, openClusterEngine } from '../src/cluster.js';
import type { ClusterEngine } from '../src/cluster.js';

/** mqemitter-redis as the test drives it. */
interface TestEmitter {
  on(topic: string, listener: (packet: { topic: string }, done: () => void) => void, subscribed: () => void): void;
  emit(packet: { topic: string; payload: Buffer }, done: (err?: Error) => void): void;
  readonly subConn: { punsubscribe(pattern: string): Promise<unknown>; status: string };
}

let redis: ServerHandle;
let engine: ClusterEngine | undefined;
const errors: Error[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  engine?.abandon();
  await redis?.stop();
});

/**
 * One Redis command with an integer reply, over a plain socket (RESP): no child process (redis-cli
 * hangs under libfaketime, and a synchronous call would hang the test past its timeout).
 */
function redisInteger(...args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port: redis.port });
    let reply = '';
    socket.setTimeout(5_000, () => socket.destroy(new Error(`redis ${args.join(' ')}: no reply within 5 s`)));
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      const end = reply.indexOf('\r\n');
      if (end < 0) return;
      socket.end();
      if (reply[0] === ':') resolve(Number(reply.slice(1, end)));
      else reject(new Error(`redis ${args.join(' ')}: ${reply.slice(0, end)}`));
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}

describe('the cluster emitter', () => {
  it('subscribes again, after a reconnect, to a pattern its connection had lost without ioredis knowing', async () => {
    engine = openClusterEngine(redis.url, (err) => errors.push(err));
    const mq = engine.mq as unknown as TestEmitter;
    const seen: string[] = [];
    await new Promise<void>((subscribed) => mq.on('$SYS/sub/+', (packet, done) => (seen.push(packet.topic), done()), subscribed));
    // A second subscription keeps the connection in pubsub mode, so CLIENT KILL TYPE pubsub finds it.
    await new Promise<void>((subscribed) => mq.on('keep/this', (_packet, done) => done(), subscribed));

    // The state a subscription confirmed on a connection lost before ready leaves behind: the
    // emitter holds a listener for the pattern, ioredis's connection is not subscribed to it.
    await mq.subConn.punsubscribe('$SYS/sub/*');
    expect(await redisInteger('PUBSUB', 'NUMPAT')).toBe(0);

    expect(await redisInteger('CLIENT', 'KILL', 'TYPE', 'pubsub')).toBe(1);
    await waitFor(
      async () => {
        await new Promise<void>((resolve, reject) => mq.emit({ topic: '$SYS/sub/add', payload: Buffer.from('{}') }, (err) => (err ? reject(err) : resolve())));
        return seen.length > 0;
      },
      { timeoutMs: 10_000, what: 'a $SYS/sub/add broadcast back at the emitter after its connection came back' },
    );
    expect(seen[0]).toBe('$SYS/sub/add');
    expect(await redisInteger('PUBSUB', 'NUMPAT')).toBe(1);
  });
});

describe('a persistent session subscription', () => {
  it('fails with FERRY_ERR_NOT_READY when its broadcast does not come back in time, and is passed through when it does', async () => {
    await expect(broadcastWithin(new Promise(() => undefined), 30)).rejects.toMatchObject({ code: 'FERRY_ERR_NOT_READY' });
    await expect(broadcastWithin(Promise.resolve('client'), 30)).resolves.toBe('client');
  });
});
