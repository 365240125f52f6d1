// One real Redis for the Redis `describe` of a store's contract tests: started before its tests,
// stopped after; connections made as the ingestor makes them (connectRedis) and closed after each
// test; each deployment (test) its own key prefix in the one server.
import { afterAll, afterEach, beforeAll } from 'vitest';
import { silentLogger, systemClock } from '@ferry/runtime';
import type { Clock } from '@ferry/runtime';
import { startRedis } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { connectRedis } from '../src/cluster/redis.js';
import type { RedisClient } from '../src/cluster/redis.js';

export interface TestRedis {
  /** The server itself, for tests that kill and restart it. */
  readonly server: ServerHandle;
  readonly url: string;
  /** A connection as the ingestor makes it, closed after the test. */
  connect(clock?: Clock): RedisClient;
  /** A key prefix no other test of the file uses: a deployment of its own. */
  freshPrefix(): string;
}

/** Call inside a `describe`: its hooks start and stop the server around that block. */
export function useRedis(prefix: string): TestRedis {
  let server: ServerHandle | undefined;
  const clients: RedisClient[] = [];
  let prefixes = 0;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.quit().catch(() => c.disconnect());
  });
  afterAll(async () => {
    for (const c of clients.splice(0)) c.disconnect();
    await server?.stop();
  });
  return {
    get server() {
      if (!server) throw new Error('useRedis: the server is not started (used outside a test?)');
      return server;
    },
    get url() {
      return this.server.url;
    },
    connect(clock = systemClock) {
      const client = connectRedis({ url: this.url, name: 'test', logger: silentLogger(), clock });
      clients.push(client);
      return client;
    },
    freshPrefix: () => `${prefix}${++prefixes}:`,
  };
}
