// The broker as a real child process (the built CLI, `node apps/ferry/dist/main.js broker`), so a
// test can kill -9 it and start it again on the same port and data directory.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killReadyChildren, startReadyChild } from '@ferry/testkit';

export const FERRY_MAIN = fileURLToPath(new URL('../../ferry/dist/main.js', import.meta.url));

export interface BrokerProcess {
  readonly url: string;
  readonly output: () => string;
  /** False once the process has exited. */
  readonly running: () => boolean;
  /** SIGKILL, then wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM, then wait for the exit. */
  stop(): Promise<void>;
}

/** Kills whatever a test left running; call from afterAll. */
export const killBrokerProcesses = killReadyChildren;

/**
 * Writes `config` to <dir>/<name>.json and starts `ferry broker --config` on it; resolves once ready.
 * Port 0 lets the broker pick one (no race with other tests for a probed port); the url is read from
 * its ready line.
 */
export async function startBrokerProcess(dir: string, name: string, config: Record<string, unknown>, port: number): Promise<BrokerProcess> {
  if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` first`);
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ listen: { host: '127.0.0.1', port }, http: false, ...config }));
  const child = await startReadyChild({ args: [FERRY_MAIN, 'broker', '--config', file], readyText: 'broker ready', name: `broker ${name}` });
  const readyLine = child.output().split('\n').find((line) => line.includes('"broker ready"'));
  const url = readyLine ? (JSON.parse(readyLine) as { url?: string }).url : undefined;
  if (!url) throw new Error(`broker ${name}: no url in its ready line:\n${child.output()}`);
  return { url, output: child.output, running: child.running, kill: () => child.kill(), stop: () => child.stop() };
}
