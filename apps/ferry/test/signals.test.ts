// SIGTERM and SIGINT stop every service at any moment, start-up waits included: the built `ferry`
// binary as a child process, pointed at a broker, a database or a Redis that never answers on
// loopback. A stop is asked for, so the exit code is 0 (EXIT_OK), with a log line saying why.
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '@ferry/testkit';
import { cliTestbed, killAll, startCli } from './cli-process.js';
import type { Finished, Running } from './cli-process.js';

/** Far longer than a stop takes; a process still running then has ignored the signal. */
const EXIT_DEADLINE_MS = 20_000;

const { running, tempDir } = cliTestbed('ferry-signals-test-');
const servers: Server[] = [];
const sockets: Socket[][] = [];

afterEach(async () => {
  await killAll(running);
  // A server's close() waits for its open sockets.
  for (const list of sockets.splice(0)) for (const socket of list) socket.destroy();
  for (const server of servers.splice(0)) await new Promise<void>((resolve) => server.close(() => resolve()));
});

function start(args: readonly string[], env: Record<string, string> = {}): Running {
  const r = startCli(args, env);
  running.push(r);
  return r;
}

/** A loopback port nobody listens on: bound by the system, then released. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A server that accepts connections and never answers: a database still starting up. */
async function silentServer(): Promise<{ url: string; connections: Socket[] }> {
  const connections: Socket[] = [];
  const server = createServer((socket) => {
    connections.push(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  sockets.push(connections);
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, connections };
}

async function stderrShows(r: Running, pattern: RegExp, what: string): Promise<void> {
  await waitFor(() => pattern.test(r.stderr()), { timeoutMs: 30_000, what: `${what} (stderr: ${r.stderr().slice(-1500)})` });
}

/** The exit, or a failure naming the signal the process ignored. */
async function exitAfter(r: Running, signal: NodeJS.Signals): Promise<Finished> {
  r.child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`still running ${EXIT_DEADLINE_MS} ms after ${signal}; stderr: ${r.stderr().slice(-2000)}`)), EXIT_DEADLINE_MS);
  });
  try {
    return await Promise.race([r.exited, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** The pino lines on stderr, parsed. */
function logLines(stderr: string): { msg?: string; reason?: string; exitCode?: number }[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg?: string; reason?: string; exitCode?: number });
}

describe('stopping on SIGTERM and SIGINT', () => {
  it('an ingestor waiting at start-up for a broker nobody answers for stops on SIGTERM, exits 0 and says why', async () => {
    const port = await deadPort();
    const ingestor = start(['ingestor', '--broker', `mqtt://127.0.0.1:${port}`, '--data-dir', join(tempDir(), 'ingestor'), '--http-port', '0']);
    await stderrShows(ingestor, /"msg":"waiting for the broker"/, 'the ingestor waiting for the broker');

    const result = await exitAfter(ingestor, 'SIGTERM');
    expect(result.code, result.stderr).toBe(0);
    const logs = logLines(result.stderr);
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'ingestor stopping during start-up', reason: 'SIGTERM' }));
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'ingestor stopped', exitCode: 0 }));
    // It never became ready, and did not fail: it was stopped.
    expect(result.lines.some((l) => l.includes('"state":"ready"'))).toBe(false);
    expect(logs.some((l) => l.msg === 'ingestor failed')).toBe(false);
  });

  it('an ingestor waiting at start-up stops on SIGINT (Ctrl-C) the same way', async () => {
    const port = await deadPort();
    const ingestor = start(['ingestor', '--broker', `mqtt://127.0.0.1:${port}`, '--data-dir', join(tempDir(), 'ingestor'), '--http-port', '0']);
    await stderrShows(ingestor, /"msg":"waiting for the broker"/, 'the ingestor waiting for the broker');

    const result = await exitAfter(ingestor, 'SIGINT');
    expect(result.code, result.stderr).toBe(0);
    expect(logLines(result.stderr)).toContainEqual(expect.objectContaining({ msg: 'ingestor stopping during start-up', reason: 'SIGINT' }));
  });

  it('an ingestor whose database accepts connections and does not answer yet stops on SIGTERM while it waits for it', async () => {
    const influx = await silentServer();
    const port = await deadPort();
    const ingestor = start([
      'ingestor',
      '--broker',
      `mqtt://127.0.0.1:${port}`,
      '--data-dir',
      join(tempDir(), 'ingestor'),
      '--http-port',
      '0',
      '--influx-url',
      influx.url,
      '--influx-token',
      'test-token',
      '--influx-org',
      'ferry',
      '--influx-bucket',
      'readings',
    ]);
    // The start asks the database first: its question is hanging on the silent server.
    await waitFor(() => influx.connections.length > 0, { timeoutMs: 30_000, what: `the ingestor asking the database (stderr: ${ingestor.stderr().slice(-1500)})` });
    expect(ingestor.stderr()).not.toContain('waiting for the broker');

    const result = await exitAfter(ingestor, 'SIGTERM');
    expect(result.code, result.stderr).toBe(0);
    expect(logLines(result.stderr)).toContainEqual(expect.objectContaining({ msg: 'ingestor stopping during start-up', reason: 'SIGTERM' }));
  });

  it('a clustered broker waiting at start-up for a Redis nobody answers for stops on SIGTERM and exits 0', async () => {
    const dir = tempDir();
    const config = join(dir, 'broker.yaml');
    writeFileSync(config, `listen: { port: 0 }\nhttp: { port: 0 }\ncluster: { redisUrl: "redis://127.0.0.1:${await deadPort()}" }\n`);
    const broker = start(['broker', '--config', config]);
    await stderrShows(broker, /"event":"cluster_redis_error"/, 'the broker waiting for Redis');

    const result = await exitAfter(broker, 'SIGTERM');
    expect(result.code, result.stderr).toBe(0);
    const logs = logLines(result.stderr);
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'broker stopping during start-up', reason: 'SIGTERM' }));
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'broker stopped', exitCode: 0 }));
  });

  it('a gateway whose uplink nobody answers (it starts without waiting for it) stops on SIGTERM and exits 0', async () => {
    const gateway = start(['gateway', '--gateway-id', 'gw-signals', '--data-dir', join(tempDir(), 'gateway'), '--uplink', `mqtt://127.0.0.1:${await deadPort()}`, '--listen-port', '0', '--http-port', '0']);
    await gateway.waitForLine(/"state":"ready"/);
    await stderrShows(gateway, /uplink connection failed/, 'the gateway retrying its uplink');

    const result = await exitAfter(gateway, 'SIGTERM');
    expect(result.code, result.stderr).toBe(0);
    const logs = logLines(result.stderr);
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'gateway stopping', reason: 'SIGTERM' }));
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'gateway stopped', exitCode: 0 }));
  });
});
