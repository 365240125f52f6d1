// `ferry demo`: the whole data path in one process. Simulated devices -> gateway (SQLite outbox)
// -> broker -> ingestor -> database, with a status line a second. With --duration it stops the
// devices, waits for the outbox to drain, and proves every reading the devices sent was written.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
// The apps are imported when the demo runs: every `ferry` command loads this module, and a
// gateway on a Pi must not carry the broker's and ingestor's code in its heap.
import type { Broker } from '@ferry/broker';
import type { Gateway } from '@ferry/gateway';
import type { Ingestor } from '@ferry/ingestor';
import type { Simulator } from '@ferry/simulator';
import { createLogger, createRegistry, parseConfig } from '@ferry/runtime';
import type { LogLevel, Logger } from '@ferry/runtime';
import type { SinkConfig } from '@ferry/sinks';
import { FerryError } from '@ferry/protocol';
import { demoSummary, statusLine } from '../demo-report.js';
import type { DemoSummary } from '../demo-report.js';
import { parseDuration } from '../duration.js';
import { LOG_LEVELS, toNumber } from '../flags.js';
import {
  describeError,
  EXIT_FAILED,
  EXIT_OK,
  exitCodeFor,
  flushLogger,
  stopSignal,
  writeErr,
  writeOut,
} from '../service.js';

interface DemoFlags {
  devices: number;
  intervalMs: number;
  duration?: string;
  dataDir?: string;
  httpPort?: number;
  drainTimeout: string;
  seed?: number;
  keepData?: boolean;
  logLevel: LogLevel;
}

const GATEWAY_ID = 'demo-gw';
const STATUS_EVERY_MS = 1_000;
const DRAIN_POLL_MS = 100;

/** The database: InfluxDB from the environment when configured, else the ingestor's embedded SQLite. */
export function demoSink(env: NodeJS.ProcessEnv): SinkConfig | undefined {
  const url = env.INFLUX_URL;
  if (!url) return undefined;
  if (env.INFLUX_TOKEN && env.INFLUX_ORG && env.INFLUX_BUCKET) {
    return { type: 'influxdb2', url, token: env.INFLUX_TOKEN, org: env.INFLUX_ORG, bucket: env.INFLUX_BUCKET };
  }
  if (env.INFLUX_DB) {
    return {
      type: 'influxdb1',
      url,
      database: env.INFLUX_DB,
      ...(env.INFLUX_USERNAME ? { username: env.INFLUX_USERNAME } : {}),
      ...(env.INFLUX_PASSWORD ? { password: env.INFLUX_PASSWORD } : {}),
    };
  }
  return undefined;
}

interface Pipeline {
  broker?: Broker;
  ingestor?: Ingestor;
  gateway?: Gateway;
  simulator?: Simulator;
}

async function closeAll(p: Pipeline, logger: Logger): Promise<boolean> {
  let clean = true;
  // Downstream last: the gateway's final acks need the broker and the ingestor.
  for (const [name, handle] of [
    ['simulator', p.simulator],
    ['gateway', p.gateway],
    ['ingestor', p.ingestor],
    ['broker', p.broker],
  ] as const) {
    if (!handle) continue;
    try {
      await handle.close();
    } catch (err) {
      clean = false;
      logger.error({ err }, `${name} did not close cleanly`);
      writeErr(`${name} did not close cleanly: ${describeError(err)}`);
    }
  }
  return clean;
}

function delay(ms: number): { promise: Promise<void>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** Waits until the gateway's outbox is empty and nothing is in flight anywhere, or the deadline passes. */
async function drain(gateway: Gateway, ingestor: Ingestor, deadlineMs: number): Promise<boolean> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const g = gateway.stats();
    const i = ingestor.stats();
    if (g.outboxDepth === 0 && g.inFlightBatches === 0 && i.inFlight === 0 && i.pendingBatches === 0) return true;
    if (Date.now() >= until) return false;
    const pause = delay(DRAIN_POLL_MS);
    await pause.promise;
  }
}

export async function runDemo(flags: DemoFlags): Promise<number> {
  const [{ createBroker }, { createGateway }, { createIngestor }, { createSimulator, simulatorConfigSchema }] = await Promise.all([
    import('@ferry/broker'),
    import('@ferry/gateway'),
    import('@ferry/ingestor'),
    import('@ferry/simulator'),
  ]);
  let durationMs: number | undefined;
  let drainMs: number;
  try {
    durationMs = flags.duration !== undefined ? parseDuration(flags.duration, 'duration') : undefined;
    drainMs = parseDuration(flags.drainTimeout, 'drain-timeout');
    // Checked before anything starts, so that a bad --devices does not leave a broker behind.
    parseConfig(
      simulatorConfigSchema,
      { url: 'mqtt://127.0.0.1:1883', devices: flags.devices, intervalMs: flags.intervalMs, ...(flags.seed !== undefined ? { seed: flags.seed } : {}) },
      'demo config',
    );
    if (flags.httpPort !== undefined && (!Number.isInteger(flags.httpPort) || flags.httpPort < 0 || flags.httpPort > 65_535)) {
      throw new FerryError('FERRY_ERR_CONFIG_INVALID', `http-port: expected a port number from 0 to 65535, got ${flags.httpPort}`, {
        fields: ['http-port'],
      });
    }
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }

  const ownDir = flags.dataDir === undefined;
  const dataDir = flags.dataDir ?? mkdtempSync(join(tmpdir(), 'ferry-demo-'));
  const logger = createLogger({ level: flags.logLevel, name: 'ferry-demo' });
  const registry = createRegistry({ defaultMetrics: true, prefix: '' });
  const sink = demoSink(process.env);
  const p: Pipeline = {};
  const signal = stopSignal(() => {
    writeErr('ferry demo: second signal, exiting without a clean close');
    if (ownDir && !flags.keepData) rmSync(dataDir, { recursive: true, force: true });
    process.exit(EXIT_FAILED);
  });

  let code = EXIT_OK;
  let summary: DemoSummary | undefined;
  let statusTimer: NodeJS.Timeout | undefined;
  try {
    // Each step checks `stopping`, so a signal during start-up leaves nothing running behind close.
    let stopping = false;
    const start = async (): Promise<void> => {
      const broker = (p.broker = createBroker({ listen: { port: 0 }, http: false, logLevel: flags.logLevel }, { logger, registry }));
      await broker.ready();
      if (stopping) return;
      const ingestor = (p.ingestor = createIngestor(
        {
          ingestorId: 'demo',
          dataDir: join(dataDir, 'ingestor'),
          broker: { url: broker.url ?? '' },
          ...(sink ? { sink } : {}),
          http: { port: flags.httpPort ?? 0 },
          logLevel: flags.logLevel,
        },
        { logger, registry },
      ));
      await ingestor.ready();
      if (stopping) return;
      const gateway = (p.gateway = createGateway(
        {
          gatewayId: GATEWAY_ID,
          dataDir: join(dataDir, 'gateway'),
          devices: { listen: { port: 0 } },
          uplink: { url: broker.url ?? '' },
          http: false,
          logLevel: flags.logLevel,
        },
        { logger, registry },
      ));
      await gateway.ready();
      if (stopping) return;
      const simulator = (p.simulator = createSimulator(
        {
          url: gateway.deviceUrl ?? '',
          devices: flags.devices,
          intervalMs: flags.intervalMs,
          ...(flags.seed !== undefined ? { seed: flags.seed } : {}),
        },
        { logger },
      ));
      await simulator.ready();
    };
    const starting = start();
    const started = await Promise.race([starting.then(() => true), signal.then(() => false)]);
    if (!started) {
      stopping = true;
      // Closing ends the start-up wait of the component still starting (its ready() rejects at
      // once); finish() below closes the rest.
      await closeAll(p, logger);
      await starting.catch(() => undefined);
      throw new Interrupted();
    }
    const { broker, ingestor, gateway, simulator } = p as Required<Pipeline>;

    const database = sink && sink.type !== 'sqlite' ? `${sink.type} ${sink.url}` : `sqlite ${join(dataDir, 'ingestor', 'points.db')}`;
    writeOut(`ferry demo: ${flags.devices} devices every ${flags.intervalMs} ms -> gateway ${GATEWAY_ID} (${gateway.deviceUrl ?? '?'}) -> broker ${broker.url ?? '?'} -> ingestor -> ${database}`);
    writeOut(`ops: ${ingestor.httpUrl ?? '(off)'}  (/healthz /metrics /api/stats /api/gateways /api/deadletters)`);
    writeOut(`data: ${dataDir}${durationMs !== undefined ? `  duration: ${durationMs / 1000}s` : '  (Ctrl-C to stop)'}`);

    const startedAt = Date.now();
    let lastReceived = gateway.stats().received;
    let lastAt = startedAt;
    statusTimer = setInterval(() => {
      const now = Date.now();
      const g = gateway.stats();
      const i = ingestor.stats();
      const s = simulator.stats();
      writeOut(
        statusLine({
          elapsedS: (now - startedAt) / 1000,
          inPerS: ((g.received - lastReceived) * 1000) / Math.max(1, now - lastAt),
          written: i.written,
          acked: g.ackedReadings,
          outboxDepth: g.outboxDepth,
          devicesOnline: s.devices,
          devices: flags.devices,
          deadLetters: g.deadLetters + i.deadLettersHeld,
          uplinkConnected: g.uplinkConnected,
        }),
      );
      lastReceived = g.received;
      lastAt = now;
    }, STATUS_EVERY_MS);

    const timer = durationMs !== undefined ? delay(durationMs) : undefined;
    await Promise.race([signal, ...(timer ? [timer.promise] : [])]);
    timer?.cancel();

    // Devices stop first; every reading they sent is then either in the outbox or already acked.
    await simulator.close();
    const drained = await drain(gateway, ingestor, drainMs);
    if (!drained) writeErr(`ferry demo: the outbox did not drain within ${drainMs / 1000}s`);
    clearInterval(statusTimer);
    statusTimer = undefined;
    const g = gateway.stats();
    const i = ingestor.stats();
    const s = simulator.stats();
    summary = demoSummary({
      telemetry: s.published,
      statuses: s.statuses,
      written: i.written,
      acked: g.ackedReadings,
      outboxDepth: g.outboxDepth,
      deadLetters: g.deadLetters + i.deadLettersHeld,
    });
    if (durationMs !== undefined && !summary.ok) code = EXIT_FAILED;
  } catch (err) {
    if (err instanceof Interrupted) return finish();
    code = exitCodeFor(err);
    logger.error({ err }, 'demo failed');
    writeErr(`ferry demo: ${describeError(err)}`);
  } finally {
    clearInterval(statusTimer);
  }
  return finish();

  async function finish(): Promise<number> {
    if (!(await closeAll(p, logger)) && code === EXIT_OK) code = EXIT_FAILED;
    if (ownDir && !flags.keepData) rmSync(dataDir, { recursive: true, force: true });
    // The summary is the last line on stdout, for scripts.
    if (summary) writeOut(JSON.stringify(summary));
    await flushLogger(logger);
    return code;
  }
}

/** A signal arrived while the pipeline was starting: close what started and exit 0. */
class Interrupted extends Error {}

export function demoCommand(): Command {
  return new Command('demo')
    .description('run simulator -> gateway -> broker -> ingestor -> database in one process, with a status line a second')
    .option('--devices <n>', 'simulated devices', toNumber, 10)
    .option('--interval-ms <ms>', 'time between readings of one device', toNumber, 1000)
    .option('--duration <time>', 'stop after this long (e.g. 30s, 5m), drain, print a JSON summary and exit 0 only if every reading was written')
    .option('--data-dir <dir>', 'where the gateway and ingestor keep their files (default: a temp dir, removed at the end)')
    .option('--http-port <port>', 'port of the ops endpoint (default: any free port)', toNumber)
    .option('--drain-timeout <time>', 'how long to wait for the outbox to drain at the end', '60s')
    .option('--seed <n>', 'seed of the simulated signals', toNumber)
    .option('--keep-data', 'keep the temp data dir')
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(LOG_LEVELS).default('warn'))
    .addHelpText(
      'after',
      [
        '',
        'The database is the embedded SQLite unless the environment names an InfluxDB:',
        '  INFLUX_URL + INFLUX_TOKEN + INFLUX_ORG + INFLUX_BUCKET   InfluxDB 2 (or VictoriaMetrics)',
        '  INFLUX_URL + INFLUX_DB [+ INFLUX_USERNAME/INFLUX_PASSWORD] InfluxDB 1.x',
        'The last line of a --duration run is JSON: {"published","written","acked","outboxDepth","deadLetters","ok"}.',
      ].join('\n'),
    )
    .action(async (flags: DemoFlags) => {
      process.exitCode = await runDemo(flags);
    });
}
