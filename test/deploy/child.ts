// Real child processes for the deployment tests: output to a file (never a pipe nobody reads),
// killed with the test process (setpriv --pdeathsig), stopped with SIGTERM like systemd does.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { findBinary, waitFor } from '@ferry/testkit';

export interface ChildOptions {
  readonly command: string;
  readonly args: readonly string[];
  readonly logFile: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** setpriv options placed before `--` (e.g. --reuid); --pdeathsig KILL is always added. */
  readonly setpriv?: readonly string[];
}

export interface Child {
  readonly pid: number;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after a deadline; resolves with the exit code. */
  stop(): Promise<number | null>;
  log(): string;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export function startChild(options: ChildOptions): Child {
  const setpriv = findBinary('setpriv');
  const fd = openSync(options.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(setpriv, [...(options.setpriv ?? []), '--pdeathsig', 'KILL', '--', options.command, ...options.args], {
      stdio: ['ignore', fd, fd],
      env: options.env ?? process.env,
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    });
  } finally {
    closeSync(fd);
  }
  live.add(child);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      live.delete(child);
      resolve(code);
    });
    child.once('error', () => {
      live.delete(child);
      resolve(null);
    });
  });
  let done = false;
  void exited.then(() => {
    done = true;
  });
  return {
    pid: child.pid ?? -1,
    exited,
    async stop() {
      if (!done) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    log: () => {
      try {
        return readFileSync(options.logFile, 'utf8');
      } catch {
        return '(no log)';
      }
    },
  };
}

/** Runs a command to completion (scripts, systemd-analyze); never throws on a non-zero exit. */
export function runCommand(command: string, args: readonly string[], env?: NodeJS.ProcessEnv): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(command, args, { encoding: 'utf8', env: env ?? process.env, timeout: 300_000 });
  if (result.error) throw result.error;
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** GET url as text (with a bearer token when given), or undefined while nothing answers. */
export async function httpText(url: string, token?: string): Promise<{ status: number; body: string } | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000), ...(token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {}) });
    return { status: res.status, body: await res.text() };
  } catch {
    return undefined;
  }
}

/** Waits until GET url answers 200. */
export async function waitHealthy(url: string, child: Child, what: string): Promise<void> {
  let exitedEarly = false;
  void child.exited.then(() => {
    exitedEarly = true;
  });
  await waitFor(
    async () => {
      if (exitedEarly) throw new Error(`${what} exited before it was healthy:\n${child.log().slice(-3000)}`);
      const res = await httpText(url);
      return res?.status === 200;
    },
    { timeoutMs: 60_000, intervalMs: 200, what: `${what} healthy at ${url}` },
  );
}

/** A Prometheus sample's value from /metrics text (sum over label sets), 0 when absent. */
export function metricValue(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match && match[1] === name) sum += Number(match[3]);
  }
  return sum;
}
