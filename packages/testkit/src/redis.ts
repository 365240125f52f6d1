// Redis as a real, separate server for tests that need one (e.g. a shared dedupe store).

import { findBinary } from './binaries.js';
import { exchangeOverTcp } from './readiness.js';
import { launchServer, ServerProcess, type ServerHandle } from './server.js';
import { makeTempDir } from './tempdir.js';

const PING = Buffer.from('PING\r\n');

export interface RedisOptions {
  /**
   * Keep every write on disk (append-only file, fsync per write, no snapshots), so kill() then
   * restart(), or restart(), brings back the same keys, as the Redis of the shared ingestor state
   * is meant to run. Default false: nothing persisted.
   */
  readonly persistent?: boolean;
}

/** Starts redis-server on 127.0.0.1:<free port>; with `persistent`, its data survives restarts. */
export async function startRedis(options: RedisOptions = {}): Promise<ServerHandle> {
  const persistence = options.persistent === true ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const binary = findBinary('redis-server');
  const dataDir = await makeTempDir('redis');
  const launched = await launchServer({
    name: 'redis',
    binary,
    scheme: 'redis',
    dataDir,
    realClock: true,
    configure: async (port) => [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--dir', dataDir,
      '--save', '',
      ...persistence,
      '--daemonize', 'no',
      '--logfile', '',
    ],
    isReady: async (port) => {
      const reply = await exchangeOverTcp(port, PING, (r) => r.includes('\r\n'));
      return reply.toString('latin1').startsWith('+PONG');
    },
  });
  return new ServerProcess(launched);
}
