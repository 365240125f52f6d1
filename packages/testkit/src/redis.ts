// Redis as a real, separate server for tests that need one (e.g. a shared dedupe store).

import { findBinary } from './binaries.js';
import { exchangeOverTcp } from './readiness.js';
import { launchServer, ServerProcess, type ServerHandle } from './server.js';
import { makeTempDir } from './tempdir.js';

const PING = Buffer.from('PING\r\n');

/** Starts redis-server on 127.0.0.1:<free port>, nothing persisted. */
export async function startRedis(): Promise<ServerHandle> {
  const binary = findBinary('redis-server');
  const dataDir = await makeTempDir('redis');
  const launched = await launchServer({
    name: 'redis',
    binary,
    scheme: 'redis',
    dataDir,
    configure: async (port) => [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--dir', dataDir,
      '--save', '',
      '--appendonly', 'no',
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
