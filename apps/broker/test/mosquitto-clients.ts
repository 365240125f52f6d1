// The real mosquitto command-line clients, driven from tests to prove interoperability.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

export interface SubscribedMessage {
  readonly topic: string;
  readonly qos: number;
  readonly retained: boolean;
  readonly payload: string;
}

export interface MosquittoSubscriber {
  /** Resolves once the broker has acknowledged the subscription (SUBACK). */
  readonly subscribed: Promise<void>;
  readonly messages: SubscribedMessage[];
  /** Resolves when `count` messages have arrived in total, or rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<SubscribedMessage[]>;
  stop(): Promise<void>;
}

const MESSAGE_MARK = 'MSG\t';

/** Starts `mosquitto_sub` in debug mode, so that its SUBACK shows when it is ready. */
export function mosquittoSubscribe(port: number, topic: string, extra: readonly string[] = []): MosquittoSubscriber {
  // mosquitto_sub block-buffers stdout into a pipe; stdbuf makes it line-buffered so lines arrive as printed.
  const child = spawn(
    'stdbuf',
    ['-oL', '/usr/bin/mosquitto_sub', '-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv311', '-t', topic, '-d', '-F', `${MESSAGE_MARK}%t\t%q\t%r\t%p`, ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const messages: SubscribedMessage[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = once(child, 'exit');
  const subscribed = new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      if (line.includes('received SUBACK')) resolve();
      if (!line.startsWith(MESSAGE_MARK)) return;
      const [t = '', q = '0', r = '0', ...rest] = line.slice(MESSAGE_MARK.length).split('\t');
      messages.push({ topic: t, qos: Number(q), retained: r === '1', payload: rest.join('\t') });
      for (const wake of waiters) wake();
    });
    void exited.then(() => reject(new Error(`mosquitto_sub exited before SUBACK: ${stderr}`)));
  });
  // Callers that only wait for messages never look at `subscribed`; its failure then shows as a timeout.
  subscribed.catch(() => undefined);
  return {
    subscribed,
    messages,
    waitFor(count, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (messages.length >= count) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(messages.slice());
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`mosquitto_sub got ${messages.length} of ${count} messages`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

export interface PublishOutcome {
  readonly code: number;
  readonly stderr: string;
}

/** Runs `mosquitto_pub` once and reports its exit code. */
export function mosquittoPublish(port: number, args: readonly string[]): Promise<PublishOutcome> {
  return new Promise((resolve) => {
    execFile('/usr/bin/mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv311', ...args], { timeout: 15_000 }, (err, _stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stderr });
    });
  });
}
