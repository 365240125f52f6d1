// A Ferry process (or any command) as a real child of the test, started and ready when a line
// appears in its output, so a test can kill -9 it and start it again on the same data.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { waitFor } from './wait.js';

export interface ReadyChildOptions {
  /** Arguments to `node` (a script first). */
  readonly args: readonly string[];
  /** Ready once stdout or stderr contains this. */
  readonly readyText: string;
  /** Added to the environment. */
  readonly env?: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
  /** For error messages. */
  readonly name?: string;
}

export interface ReadyChild {
  readonly pid: number | undefined;
  /** stdout and stderr so far. */
  readonly output: () => string;
  readonly running: () => boolean;
  /** Resolves with how the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL (as a power cut of the process) and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM and wait for the exit. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHook = false;

/** Kills what a test file left running; call from afterAll (process exit does it too). */
export function killReadyChildren(): void {
  for (const child of live) child.kill('SIGKILL');
}

/** Spawns `node <args>` and resolves once it printed `readyText`; rejects with its output if it exits first. */
export async function startReadyChild(options: ReadyChildOptions): Promise<ReadyChild> {
  if (!exitHook) {
    exitHook = true;
    process.on('exit', killReadyChildren);
  }
  const name = options.name ?? options.args[1] ?? 'child';
  const child = spawn(process.execPath, [...options.args], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  let gone = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      gone = true;
      live.delete(child);
      resolve({ code, signal });
    }),
  );
  await waitFor(() => output.includes(options.readyText) || gone, { timeoutMs: options.timeoutMs ?? 90_000, what: `${name} to be ready` });
  if (gone) throw new Error(`${name} exited before it was ready:\n${output}`);
  return {
    pid: child.pid,
    output: () => output,
    running: () => !gone,
    exited,
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
