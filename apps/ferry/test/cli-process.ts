// Runs the built `ferry` binary as a child process, the way a user or a service manager would.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll } from 'vitest';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(REPO_ROOT, 'apps', 'ferry', 'dist', 'main.js');

/** Builds the CLI the tests run (incremental: quick when up to date); a compile error fails with tsc's report. */
export async function buildCli(): Promise<void> {
  try {
    await promisify(execFile)(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', 'apps/ferry'], { cwd: REPO_ROOT });
  } catch (err) {
    // tsc reports compile errors on stdout.
    const { stdout = '' } = err as { stdout?: string };
    throw new Error(`ferry could not be built:\n${stdout.slice(0, 4000)}`, { cause: err });
  }
}

export interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly lines: string[];
}

export interface Running {
  readonly child: ChildProcess;
  readonly lines: string[];
  stderr(): string;
  /** Resolves with the first stdout line matching `pattern`, or rejects after `timeoutMs`. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  readonly exited: Promise<Finished>;
}

/** Environment for the child: no FERRY_* or INFLUX_* from the test runner's own environment leak in. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FERRY_') && !k.startsWith('INFLUX_')) env[k] = v;
  return { ...env, ...extra };
}

export function startCli(args: readonly string[], env: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO_ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    const parts = stdout.split('\n');
    lines.splice(0, lines.length, ...parts.filter((l) => l !== ''));
    for (const wake of waiters) wake();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr, lines: lines.slice() }));
  return {
    child,
    lines,
    stderr: () => stderr,
    waitForLine(pattern, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = lines.find((l) => pattern.test(l));
          if (found !== undefined) {
            cleanup();
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no stdout line matched ${String(pattern)} within ${timeoutMs} ms; stdout: ${stdout}; stderr: ${stderr.slice(-2000)}`));
        }, timeoutMs);
        const onExit = (): void => {
          cleanup();
          reject(new Error(`ferry exited before printing ${String(pattern)}; stdout: ${stdout}; stderr: ${stderr.slice(-2000)}`));
        };
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
          child.off('close', onExit);
        };
        waiters.add(check);
        child.once('close', onExit);
        check();
      });
    },
    exited,
  };
}

export function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<Finished> {
  return startCli(args, env).exited;
}

/** Kills (SIGKILL) every process of `running` still alive, and waits for each to exit; empties the list. */
export async function killAll(running: Running[]): Promise<void> {
  for (const r of running.splice(0)) {
    if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
    await r.exited;
  }
}

/**
 * A test file's CLI processes and temp dirs: the CLI is built before its tests, what a test left
 * running (pushed to `running`) is killed after it, and the dirs `tempDir` made are removed after all.
 */
export function cliTestbed(prefix: string): { readonly running: Running[]; readonly tempDir: () => string } {
  const dirs: string[] = [];
  const running: Running[] = [];
  beforeAll(async () => {
    await buildCli();
  });
  afterEach(async () => {
    await killAll(running);
  });
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  return {
    running,
    tempDir() {
      const dir = mkdtempSync(join(tmpdir(), prefix));
      dirs.push(dir);
      return dir;
    },
  };
}
