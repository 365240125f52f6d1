// The life of one real server process started by the harness: spawn on a free loopback
// port with its own data dir, wait until it answers, and stop, crash or restart it on demand.
// Every server module (mosquitto, influxd, ...) describes itself as a ServerSpec.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '@ferry/protocol';
import { findOptionalBinary } from './binaries.js';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

export interface ServerHandle {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly url: string;
  /** Temp dir holding the server's config, data and log; removed by stop(). */
  readonly dataDir: string;
  /** Pid of the running process; undefined while it is down. */
  readonly pid: number | undefined;
  /** SIGTERM, wait for exit (SIGKILL after a deadline), remove the data dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL now and wait for the exit; keeps the data dir, as a crash would. */
  kill(): Promise<void>;
  /** Start again on the same port and data dir (stopping it gracefully first if it runs) and wait until ready. */
  restart(): Promise<void>;
}

export interface ServerSpec {
  readonly name: string;
  /** Absolute path of the executable (from findBinary). */
  readonly binary: string;
  readonly scheme: 'mqtt' | 'http' | 'redis';
  readonly dataDir: string;
  /** Command-line arguments for a main port; may write a config file or pick extra ports. */
  configure(port: number): Promise<string[]>;
  /** True once the server answers on the port; may throw while it is still coming up. */
  isReady(port: number): Promise<boolean>;
  readonly startTimeoutMs?: number;
  readonly stopTimeoutMs?: number;
  /**
   * Run at the real time even when the tests run under libfaketime (scripts/any-date.mjs): a
   * server that fails under it (Redis: a recursive clock_gettime in its allocator) and keeps time
   * only for itself. Its clients then see a server clock off from theirs, as in any deployment.
   */
  readonly realClock?: boolean;
}

/** The environment without libfaketime's variables. */
function realClockEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'LD_PRELOAD' && !name.startsWith('FAKETIME')));
}

export const SERVER_HOST = '127.0.0.1';
const START_ATTEMPTS = 5;
const LOG_TAIL_CHARS = 4000;

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface RunningProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | undefined;
  /** Byte offset of the log file when this process started: its own lines follow. */
  readonly logOffset: number;
}

// Children must not outlive the test process: a leftover broker would keep a port and
// a temp dir, and a later run would talk to it. 'exit' covers normal ends and uncaught
// errors; setpriv --pdeathsig covers the test process being killed outright.
const liveChildren = new Set<ChildProcess>();
const liveDataDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveChildren) child.kill('SIGKILL');
    for (const dir of liveDataDirs) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort at exit; the OS temp dir is cleaned eventually
      }
    }
  });
}

function track(child: ChildProcess): void {
  installExitHook();
  liveChildren.add(child);
}

const setpriv = process.platform === 'linux' ? findOptionalBinary('setpriv') : undefined;

export function logPath(dataDir: string): string {
  return join(dataDir, 'server.log');
}

class AddressInUse extends Error {}

export interface LaunchedServer {
  readonly spec: ServerSpec;
  readonly port: number;
  readonly args: readonly string[];
  readonly running: RunningProcess;
}

/** Starts a server on a fresh port, retrying with another port when the chosen one was taken. */
export async function launchServer(spec: ServerSpec): Promise<LaunchedServer> {
  installExitHook();
  liveDataDirs.add(spec.dataDir);
  try {
    return await launchOnFreePort(spec);
  } catch (err) {
    // The error carries the log tail; nothing else in the dir is worth keeping.
    liveDataDirs.delete(spec.dataDir);
    await rm(spec.dataDir, { recursive: true, force: true, maxRetries: 3 });
    throw err;
  }
}

async function launchOnFreePort(spec: ServerSpec): Promise<LaunchedServer> {
  let lastInUse: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt += 1) {
    const port = await freePort();
    const args = await spec.configure(port);
    try {
      const running = await startProcess(spec, port, args);
      return { spec, port, args, running };
    } catch (err) {
      if (!(err instanceof AddressInUse)) throw err;
      lastInUse = err;
    }
  }
  throw new FerryError(
    'FERRY_ERR_SERVER_START',
    `${spec.name} found its port in use on ${START_ATTEMPTS} attempts`,
    { server: spec.name, dataDir: spec.dataDir },
    { cause: lastInUse },
  );
}

async function startProcess(spec: ServerSpec, port: number, args: readonly string[]): Promise<RunningProcess> {
  const running = spawnProcess(spec, args);
  const timeoutMs = spec.startTimeoutMs ?? 30_000;
  let outcome: 'ready' | 'exited';
  try {
    outcome = await waitFor(
      async () => {
        if (running.exitInfo !== undefined) return 'exited' as const;
        // Ownership first: a stranger listening on our port must not pass for our server.
        if (!ownsListeningPort(running.child.pid, port)) return undefined;
        return (await spec.isReady(port)) ? ('ready' as const) : undefined;
      },
      { timeoutMs, intervalMs: 50, what: `${spec.name} to answer on ${SERVER_HOST}:${port}` },
    );
  } catch (err) {
    await killAndWait(running);
    const tail = await readLogTail(spec.dataDir, running.logOffset);
    throw new FerryError(
      'FERRY_ERR_SERVER_START',
      `${spec.name} did not become ready on ${SERVER_HOST}:${port} within ${timeoutMs} ms; log tail:\n${tail}`,
      { server: spec.name, port, dataDir: spec.dataDir, args: [...args], logTail: tail },
      { cause: err },
    );
  }
  if (outcome === 'ready') return running;

  const tail = await readLogTail(spec.dataDir, running.logOffset);
  const exit = running.exitInfo;
  const how = exit?.signal != null ? `signal ${exit.signal}` : `code ${String(exit?.code)}`;
  if (/address already in use|EADDRINUSE/i.test(tail)) {
    throw new AddressInUse(`${spec.name} port ${port} already in use`);
  }
  throw new FerryError(
    'FERRY_ERR_SERVER_START',
    `${spec.name} exited with ${how} before becoming ready on ${SERVER_HOST}:${port}; log tail:\n${tail}`,
    { server: spec.name, port, dataDir: spec.dataDir, args: [...args], logTail: tail },
  );
}

function spawnProcess(spec: ServerSpec, args: readonly string[]): RunningProcess {
  const log = logPath(spec.dataDir);
  // Output goes to a file, never a pipe: a chatty server blocks once a pipe nobody reads is full.
  const fd = openSync(log, 'a');
  let logOffset: number;
  let child: ChildProcess;
  try {
    logOffset = statSync(log).size;
    const [command, argv] =
      setpriv === undefined ? [spec.binary, [...args]] : [setpriv, ['--pdeathsig', 'KILL', '--', spec.binary, ...args]];
    child = spawn(command, argv, { cwd: spec.dataDir, stdio: ['ignore', fd, fd], env: spec.realClock === true ? realClockEnv() : process.env });
  } finally {
    closeSync(fd);
  }
  track(child);
  const running: RunningProcess = {
    child,
    logOffset,
    exitInfo: undefined,
    exited: new Promise<ExitInfo>((resolve) => {
      // 'error' alone (spawn failure) never emits 'exit'; either way the process is gone.
      child.once('error', () => {
        liveChildren.delete(child);
        running.exitInfo ??= { code: null, signal: null };
        resolve(running.exitInfo);
      });
      child.once('exit', (code, signal) => {
        liveChildren.delete(child);
        running.exitInfo = { code, signal };
        resolve(running.exitInfo);
      });
    }),
  };
  return running;
}

async function killAndWait(running: RunningProcess): Promise<void> {
  if (running.exitInfo !== undefined) return;
  running.child.kill('SIGKILL');
  await running.exited;
}

async function terminate(running: RunningProcess, deadlineMs: number): Promise<void> {
  if (running.exitInfo !== undefined) return;
  running.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), deadlineMs);
  });
  const result = await Promise.race([running.exited, timedOut]);
  clearTimeout(timer);
  if (result === 'timeout') await killAndWait(running);
}

/** The last few thousand characters this process wrote to its log. */
export async function readLogTail(dataDir: string, fromOffset: number): Promise<string> {
  try {
    const file = await open(logPath(dataDir), 'r');
    try {
      const { size } = await file.stat();
      const start = Math.max(fromOffset, size - LOG_TAIL_CHARS);
      const buffer = Buffer.alloc(Math.max(0, size - start));
      await file.read(buffer, 0, buffer.length, start);
      const text = buffer.toString('utf8').trimEnd();
      return text === '' ? '(log is empty)' : text;
    } finally {
      await file.close();
    }
  } catch (err) {
    return `(log unreadable: ${(err as Error).message})`;
  }
}

/**
 * Whether `pid` holds the socket listening on 127.0.0.1:port, read from /proc. Where
 * /proc is not available the answer is yes: the protocol probe is then the only check.
 */
function ownsListeningPort(pid: number | undefined, port: number): boolean {
  if (pid === undefined) return false;
  let tcpTable: string;
  try {
    tcpTable = readFileSync('/proc/net/tcp', 'utf8');
  } catch {
    return true;
  }
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const line of tcpTable.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    const local = fields[1];
    const state = fields[3];
    const inode = fields[9];
    // 0A = LISTEN; 0100007F = 127.0.0.1, 00000000 = any address.
    if (state === '0A' && inode !== undefined && (local === `0100007F:${portHex}` || local === `00000000:${portHex}`)) {
      inodes.add(`socket:[${inode}]`);
    }
  }
  if (inodes.size === 0) return false;
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  for (const fd of fds) {
    try {
      if (inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`))) return true;
    } catch {
      // fd closed while we looked
    }
  }
  return false;
}

/** A handle on a running server; subclasses add protocol-specific calls. */
export class ServerProcess implements ServerHandle {
  readonly name: string;
  readonly host = SERVER_HOST;
  readonly port: number;
  readonly url: string;
  readonly dataDir: string;
  readonly #spec: ServerSpec;
  readonly #args: readonly string[];
  #running: RunningProcess | undefined;
  #removed = false;

  constructor(launched: LaunchedServer) {
    this.#spec = launched.spec;
    this.#args = launched.args;
    this.#running = launched.running;
    this.name = launched.spec.name;
    this.port = launched.port;
    this.dataDir = launched.spec.dataDir;
    this.url = `${launched.spec.scheme}://${SERVER_HOST}:${launched.port}`;
  }

  get pid(): number | undefined {
    const running = this.#running;
    return running !== undefined && running.exitInfo === undefined ? running.child.pid : undefined;
  }

  async stop(): Promise<void> {
    if (this.#running !== undefined) await terminate(this.#running, this.#spec.stopTimeoutMs ?? 10_000);
    this.#running = undefined;
    if (this.#removed) return;
    this.#removed = true;
    liveDataDirs.delete(this.dataDir);
    await rm(this.dataDir, { recursive: true, force: true, maxRetries: 3 });
  }

  async kill(): Promise<void> {
    if (this.#running !== undefined) await killAndWait(this.#running);
  }

  async restart(): Promise<void> {
    if (this.#removed) {
      throw new FerryError('FERRY_ERR_NOT_READY', `${this.name} was stopped and its data dir removed; start a new one`, {
        server: this.name,
        dataDir: this.dataDir,
      });
    }
    if (this.#running !== undefined) await terminate(this.#running, this.#spec.stopTimeoutMs ?? 10_000);
    this.#running = undefined;
    try {
      this.#running = await startProcess(this.#spec, this.port, this.#args);
    } catch (err) {
      if (!(err instanceof AddressInUse)) throw err;
      throw new FerryError(
        'FERRY_ERR_SERVER_START',
        `${this.name} cannot restart: ${SERVER_HOST}:${this.port} is in use by another process`,
        { server: this.name, port: this.port, dataDir: this.dataDir },
        { cause: err },
      );
    }
  }
}
