// `ferry ingestor`: takes every gateway's batches from the broker, writes them to the database
// and acks each batch once the database confirmed it.
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { parseConfig } from '@ferry/runtime';
// The app is imported when the command runs, so that each process loads only its own app's code.
import type { IngestorConfigInput } from '@ferry/ingestor';
import type { PlainObject } from '@ferry/runtime';
import { configFromFlags, configHelp, LOG_LEVELS, toNumber } from '../flags.js';
import { cliLogger, describeError, exitCodeFor, resolveConfig, runService, writeErr } from '../service.js';

interface IngestorFlags {
  config?: string;
  ingestorId?: string;
  broker?: string;
  dataDir?: string;
  sink?: 'sqlite' | 'influxdb2' | 'influxdb1';
  sinkPath?: string;
  influxUrl?: string;
  influxToken?: string;
  influxOrg?: string;
  influxBucket?: string;
  influxDb?: string;
  httpPort?: number;
  logLevel?: string;
}

function isObject(v: unknown): v is PlainObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * The sink flags. `--sink` names the type; without it, InfluxDB flags imply one (a token means
 * v2, a database name v1). An SQLite sink without a path goes to <dataDir>/points.db.
 */
function sinkFlags(flags: IngestorFlags, base: PlainObject): [string, unknown][] {
  const baseSink = isObject(base.sink) ? base.sink : {};
  const implied =
    flags.influxToken !== undefined || flags.influxOrg !== undefined || flags.influxBucket !== undefined
      ? 'influxdb2'
      : flags.influxDb !== undefined
        ? 'influxdb1'
        : undefined;
  const type = flags.sink ?? (baseSink.type === undefined ? implied : undefined);
  const sqlitePath =
    type === 'sqlite' && flags.sinkPath === undefined && baseSink.path === undefined && typeof base.dataDir === 'string'
      ? join(base.dataDir, 'points.db')
      : flags.sinkPath;
  return [
    ['sink.type', type],
    ['sink.path', sqlitePath],
    ['sink.url', flags.influxUrl],
    ['sink.token', flags.influxToken],
    ['sink.org', flags.influxOrg],
    ['sink.bucket', flags.influxBucket],
    ['sink.database', flags.influxDb],
  ];
}

export async function runIngestor(flags: IngestorFlags): Promise<number> {
  const { createIngestor, ingestorConfigSchema } = await import('@ferry/ingestor');
  let resolved;
  try {
    resolved = resolveConfig((input) => parseConfig(ingestorConfigSchema, input, 'ingestor config'), {
      file: flags.config,
      envPrefix: 'FERRY_INGESTOR__',
      flags: (base) =>
        configFromFlags([
          ['ingestorId', flags.ingestorId],
          ['broker.url', flags.broker],
          ['dataDir', flags.dataDir],
          ['http.port', flags.httpPort],
          ['logLevel', flags.logLevel],
          ...sinkFlags(flags, { ...base, ...(flags.dataDir !== undefined ? { dataDir: flags.dataDir } : {}) }),
        ]),
    });
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }
  const logger = cliLogger(resolved.config.logLevel, 'ferry-ingestor');
  return runService({
    name: 'ingestor',
    logger,
    create() {
      const ingestor = createIngestor(resolved.input as IngestorConfigInput, { logger });
      return {
        handle: ingestor,
        describe: () => ({ ingestorId: resolved.config.ingestorId, httpUrl: ingestor.httpUrl ?? null, sink: resolved.config.sink.type }),
        summary: () => {
          const s = ingestor.stats();
          return { received: s.received, written: s.written, duplicates: s.duplicates, rejected: s.rejected, acksSent: s.acksSent };
        },
      };
    },
  });
}

export function ingestorCommand(): Command {
  return new Command('ingestor')
    .description('run an ingestor: subscribes to gateway batches, writes readings to the database, acks what it confirmed')
    .option('-c, --config <file>', 'config file, YAML or JSON')
    .option('--ingestor-id <id>', 'this ingestor\'s id (default ingestor-1)')
    .option('--broker <url>', 'broker URL, e.g. mqtt://127.0.0.1:1884')
    .option('--data-dir <dir>', 'where the dedupe index, dead letters and the embedded SQLite database are kept')
    .addOption(new Option('--sink <type>', 'database to write to (default sqlite in the data dir)').choices(['sqlite', 'influxdb2', 'influxdb1']))
    .option('--sink-path <file>', 'SQLite sink file (default <data-dir>/points.db)')
    .option('--influx-url <url>', 'InfluxDB URL, e.g. http://127.0.0.1:8086')
    .option('--influx-token <token>', 'InfluxDB v2 API token')
    .option('--influx-org <org>', 'InfluxDB v2 organisation')
    .option('--influx-bucket <bucket>', 'InfluxDB v2 bucket')
    .option('--influx-db <database>', 'InfluxDB v1 database')
    .option('--http-port <port>', 'ops API port: /healthz, /metrics, /api/stats, /api/deadletters', toNumber)
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(LOG_LEVELS))
    .addHelpText('after', configHelp('FERRY_INGESTOR__', 'FERRY_INGESTOR__BROKER__URL=mqtt://broker:1884'))
    .action(async (flags: IngestorFlags) => {
      process.exitCode = await runIngestor(flags);
    });
}
