// A whole Ferry system as separate processes: `ferry broker`, `ferry ingestor` and `ferry gateway`
// children on fixed loopback ports with one temp dir, so each can be killed and restarted alone.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, stablePort, waitFor } from '@ferry/testkit';
import { compareDelivery, sqliteCopies } from './devices.js';
import type { Delivery } from './devices.js';
import { gatewayOutbox, startFerryProcess } from './processes.js';
import type { FerryProcess } from './processes.js';

export const GATEWAY_ID = 'gw-faults';

type Plain = Record<string, unknown>;

function isPlain(value: unknown): value is Plain {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Later layers win; objects merge key by key, anything else replaces. */
export function deepMerge(base: Plain, over: Plain | undefined): Plain {
  if (!over) return base;
  const out: Plain = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const prior = out[key];
    out[key] = isPlain(prior) && isPlain(value) ? deepMerge(prior, value) : value;
  }
  return out;
}

export interface ChildStackOptions {
  /** Overrides for the broker config (e.g. a dataDir for its SQLite persistence). */
  readonly broker?: Plain;
  /** Overrides for the gateway config. */
  readonly gateway?: Plain;
  /** Overrides for the ingestor config (e.g. a sink). */
  readonly ingestor?: Plain;
  /** How the ingestor counts as ready: 'answers' when its database is meant to be down. */
  readonly ingestorReadyWhen?: 'ok' | 'answers';
}

export interface ChildStack {
  readonly dir: string;
  readonly broker: FerryProcess;
  readonly ingestor: FerryProcess;
  readonly gateway: FerryProcess;
  readonly brokerUrl: string;
  /** Where devices publish: the gateway's embedded listener. */
  readonly deviceUrl: string;
  /** The ingestor's embedded SQLite sink (when no other sink is configured). */
  readonly pointsDb: string;
  /** Logs of all three, for a failure message. */
  logs(): string;
  /** Stops every child and removes the temp dir. */
  close(): Promise<void>;
}

/**
 * Starts the three children on freshly probed ports. Fixed ports are what let a child restart on
 * the same address, but another test may take a probed port before a child binds it: that start
 * is retried on new ports.
 */
export async function startChildStack(options: ChildStackOptions = {}): Promise<ChildStack> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startChildStackOnce(options);
    } catch (err) {
      if (attempt >= 3 || !(err as Error).message.includes('EADDRINUSE')) throw err;
    }
  }
}

async function startChildStackOnce(options: ChildStackOptions): Promise<ChildStack> {
  const dir = await makeTempDir('faults');
  // Below the ephemeral range: a child killed and restarted finds its port still free.
  const [brokerPort, brokerHttp, ingestorHttp, devicePort, gatewayHttp] = [
    await stablePort(),
    await stablePort(),
    await stablePort(),
    await stablePort(),
    await stablePort(),
  ];
  const brokerUrl = `mqtt://127.0.0.1:${brokerPort}`;
  const broker = startFerryProcess({
    kind: 'broker',
    dir,
    httpPort: brokerHttp,
    config: deepMerge({ listen: { host: '127.0.0.1', port: brokerPort }, http: { host: '127.0.0.1', port: brokerHttp }, logLevel: 'info' }, options.broker),
  });
  const ingestor = startFerryProcess({
    kind: 'ingestor',
    dir,
    httpPort: ingestorHttp,
    readyWhen: options.ingestorReadyWhen ?? 'ok',
    config: deepMerge(
      {
        dataDir: join(dir, 'ingestor'),
        broker: { url: brokerUrl },
        http: { host: '127.0.0.1', port: ingestorHttp },
        write: { retry: { initialMs: 100, maxMs: 1000 } },
        logLevel: 'info',
      },
      options.ingestor,
    ),
  });
  const gateway = startFerryProcess({
    kind: 'gateway',
    dir,
    httpPort: gatewayHttp,
    config: deepMerge(
      {
        gatewayId: GATEWAY_ID,
        dataDir: join(dir, 'gateway'),
        devices: { listen: { host: '127.0.0.1', port: devicePort } },
        uplink: { url: brokerUrl, ackTimeoutMs: 3_000, reconnectMinMs: 100, reconnectMaxMs: 1_000 },
        http: { host: '127.0.0.1', port: gatewayHttp },
        statusIntervalMs: 1_000,
        logLevel: 'info',
      },
      options.gateway,
    ),
  });
  const stack: ChildStack = {
    dir,
    broker,
    ingestor,
    gateway,
    brokerUrl,
    deviceUrl: `mqtt://127.0.0.1:${devicePort}`,
    pointsDb: join(typeof options.ingestor?.dataDir === 'string' ? options.ingestor.dataDir : join(dir, 'ingestor'), 'points.db'),
    logs() {
      return [broker, ingestor, gateway].map((p) => `--- ${p.name} (${p.logFile})\n${p.logTail(3000)}`).join('\n');
    },
    async close() {
      await Promise.allSettled([gateway.stop(), ingestor.stop()]);
      await broker.stop();
      if (process.env.FERRY_KEEP_FAULT_DIRS === undefined) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
  try {
    await broker.start();
    await ingestor.start();
    await gateway.start();
  } catch (err) {
    await stack.close();
    throw err;
  }
  return stack;
}

/**
 * Waits until the gateway's outbox is empty and every expected reading is in the ingestor's SQLite
 * store (failing with all three logs), then returns how the readings arrived, for the test to judge.
 */
export async function drainedDelivery(stack: ChildStack, expected: ReadonlyMap<string, ReadonlySet<number>>, what: string): Promise<Delivery> {
  await waitFor(
    async () => (await gatewayOutbox(stack.gateway)).depth === 0 && compareDelivery(expected, sqliteCopies(stack.pointsDb)).missing.length === 0,
    { timeoutMs: 300_000, intervalMs: 200, what },
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${stack.logs()}`);
  });
  return compareDelivery(expected, sqliteCopies(stack.pointsDb));
}
