// Ferry's own processes as real children for fault-injection tests: each runs the built CLI
// (`node apps/ferry/dist/main.js <kind> -c <config.json>`) on fixed loopback ports, so a kill -9
// and a restart come back on the same ports and the same data dir, as on a real host.
// `npx tsc -b` must have run first (the root `npm test` builds before vitest).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findBinary, waitFor } from '@ferry/testkit';

export type FerryKind = 'gateway' | 'ingestor' | 'broker';

export const FERRY_MAIN = fileURLToPath(new URL('../../apps/ferry/dist/main.js', import.meta.url));

export interface FerryProcessOptions {
  readonly kind: FerryKind;
  /** Written as <dir>/<name>.json; must fix every port (no 0) so restarts keep them. */
  readonly config: Record<string, unknown>;
  /** Where the config file and the log (<name>.log: stdout and stderr, appended across restarts) go. */
  readonly dir: string;
  /** The ops endpoint: http://127.0.0.1:<port>. */
  readonly httpPort: number;
  readonly name?: string;
  /**
   * 'ok' (default): ready when /healthz answers 200. 'answers': when /healthz answers at all,
   * e.g. an ingestor whose database is down on purpose reports 503 but is running.
   */
  readonly readyWhen?: 'ok' | 'answers';
  readonly startTimeoutMs?: number;
}

export interface FerryProcess {
  readonly name: string;
  readonly httpUrl: string;
  readonly logFile: string;
  /** Pid of the running child; undefined while it is down. */
  readonly pid: number | undefined;
  /** How many times the child was started. */
  readonly starts: number;
  /** Spawns the child (if not running) and waits until it is ready. */
  start(): Promise<void>;
  /** SIGKILL, as a power cut of the process; waits for the exit. */
  kill(): Promise<void>;
  /** SIGTERM and wait for the exit (SIGKILL after a deadline). Idempotent. */
  stop(): Promise<void>;
  /** GET /healthz as JSON (whatever the status). */
  health(): Promise<Record<string, unknown>>;
  /** GET /metrics text. */
  metrics(): Promise<string>;
  /** The last `chars` characters of the log, for failure messages. */
  logTail(chars?: number): string;
}

// Children must not outlive the test file: setpriv --pdeathsig kills them if the test process
// dies outright, the exit hook covers normal and uncaught-error ends.
const setpriv = (() => {
  try {
    return findBinary('setpriv');
  } catch {
    return undefined;
  }
})();
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export function startFerryProcess(options: FerryProcessOptions): FerryProcess {
  if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` first`);
  const name = options.name ?? options.kind;
  const configFile = join(options.dir, `${name}.json`);
  const logFile = join(options.dir, `${name}.log`);
  const httpUrl = `http://127.0.0.1:${options.httpPort}`;
  writeFileSync(configFile, JSON.stringify(options.config, null, 2));

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let starts = 0;

  function spawnChild(): ChildProcess {
    // A file, never a pipe: a chatty child blocks once a pipe nobody reads is full.
    const fd = openSync(logFile, 'a');
    try {
      const args = [FERRY_MAIN, options.kind, '-c', configFile];
      const [command, argv] = setpriv === undefined ? [process.execPath, args] : [setpriv, ['--pdeathsig', 'KILL', '--', process.execPath, ...args]];
      const c = spawn(command, argv, { stdio: ['ignore', fd, fd], env: process.env });
      live.add(c);
      exited = new Promise<void>((resolve) => {
        c.once('exit', () => {
          live.delete(c);
          if (child === c) child = undefined;
          resolve();
        });
        c.once('error', () => {
          live.delete(c);
          if (child === c) child = undefined;
          resolve();
        });
      });
      return c;
    } finally {
      closeSync(fd);
    }
  }

  function tail(chars = 4000): string {
    try {
      const text = readFileSync(logFile, 'utf8');
      return text.slice(-chars);
    } catch {
      return '(no log)';
    }
  }

  const handle: FerryProcess = {
    name,
    httpUrl,
    logFile,
    get pid() {
      return child?.pid;
    },
    get starts() {
      return starts;
    },
    async start() {
      if (child) return;
      starts += 1;
      const c = spawnChild();
      child = c;
      const outcome = await waitFor(
        async () => {
          // A child that exited will not become ready: stop waiting at once.
          if (child !== c) return 'exited' as const;
          const res = await fetch(`${httpUrl}/healthz`);
          await res.arrayBuffer();
          return options.readyWhen === 'answers' || res.status === 200 ? ('ready' as const) : undefined;
        },
        { timeoutMs: options.startTimeoutMs ?? 120_000, intervalMs: 50, what: `${name} /healthz` },
      ).catch((err: unknown) => {
        throw new Error(`${name} did not become ready: ${(err as Error).message}\nlog tail:\n${tail()}`);
      });
      if (outcome === 'exited') throw new Error(`${name} exited while starting; log tail:\n${tail()}`);
    },
    async kill() {
      const c = child;
      if (!c) return;
      c.kill('SIGKILL');
      await exited;
    },
    async stop() {
      const c = child;
      if (!c) return;
      c.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), 15_000);
      });
      const outcome = await Promise.race([exited.then(() => 'exited' as const), late]);
      clearTimeout(timer);
      if (outcome === 'late') {
        c.kill('SIGKILL');
        await exited;
      }
    },
    async health() {
      const res = await fetch(`${httpUrl}/healthz`);
      return (await res.json()) as Record<string, unknown>;
    },
    async metrics() {
      const res = await fetch(`${httpUrl}/metrics`);
      return res.text();
    },
    logTail: tail,
  };
  return handle;
}

/** Sum of a Prometheus metric's samples, optionally only those whose labels contain `labelMatch`. */
export function metricValue(text: string, name: string, labelMatch?: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    if (labelMatch !== undefined && !rest.includes(labelMatch)) continue;
    const value = Number(rest.slice(rest.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) sum += value;
  }
  return sum;
}

/** The gateway's outbox figures from its /healthz. */
export interface OutboxHealth {
  readonly depth: number;
  readonly bytes: number;
  readonly dropped: Record<string, number>;
}

export async function gatewayOutbox(gateway: FerryProcess): Promise<OutboxHealth> {
  const health = await gateway.health();
  const outbox = health.outbox as { depth?: unknown; bytes?: unknown; dropped?: unknown } | undefined;
  if (!outbox || typeof outbox.depth !== 'number') throw new Error(`gateway /healthz has no outbox depth: ${JSON.stringify(health)}`);
  return {
    depth: outbox.depth,
    bytes: typeof outbox.bytes === 'number' ? outbox.bytes : 0,
    dropped: (outbox.dropped ?? {}) as Record<string, number>,
  };
}
