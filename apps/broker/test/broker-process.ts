// The broker as a real child process (the built CLI, `node apps/ferry/dist/main.js broker`), so a
// test can kill -9 it and start it again on the same port and data directory.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '@ferry/testkit';

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

const running = new Set<ChildProcess>();

/** Kills whatever a test left running; call from afterAll. */
export function killBrokerProcesses(): void {
  for (const child of running) child.kill('SIGKILL');
}

/**
 * Writes `config` to <dir>/<name>.json and starts `ferry broker --config` on it; resolves once ready.
 * Port 0 lets the broker pick one (no race with other tests for a probed port); the url is read from
 * its ready line.
 */
export async function startBrokerProcess(dir: string, name: string, config: Record<string, unknown>, port: number): Promise<BrokerProcess> {
  if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` first`);
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ listen: { host: '127.0.0.1', port }, http: false, ...config }));
  const child = spawn(process.execPath, [FERRY_MAIN, 'broker', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  let gone = false;
  const exited = new Promise<void>((resolve) =>
    child.on('exit', () => {
      gone = true;
      running.delete(child);
      resolve();
    }),
  );
  await waitFor(() => output.includes('broker ready') || gone, { timeoutMs: 90_000, what: `broker ${name} to be ready` });
  if (gone) throw new Error(`broker ${name} exited before it was ready:\n${output}`);
  const readyLine = output.split('\n').find((line) => line.includes('"broker ready"'));
  const url = readyLine ? (JSON.parse(readyLine) as { url?: string }).url : undefined;
  if (!url) throw new Error(`broker ${name}: no url in its ready line:\n${output}`);
  return {
    url,
    output: () => output,
    running: () => !gone,
    async kill() {
      if (!gone) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (!gone) child.kill('SIGTERM');
      await exited;
    },
  };
}
