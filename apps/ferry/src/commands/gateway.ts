// `ferry gateway`: the edge process devices publish to; it keeps every reading in its outbox
// until the ingestor's end-to-end ack.
import { Command, Option } from 'commander';
import { parseConfig } from '@ferry/runtime';
// The app is imported when the command runs, so that each process loads only its own app's code.
import type { GatewayConfigInput } from '@ferry/gateway';
import { configFromFlags, configHelp, LOG_LEVELS, toNumber } from '../flags.js';
import { cliLogger, describeError, exitCodeFor, resolveConfig, runService, writeErr } from '../service.js';

interface GatewayFlags {
  config?: string;
  gatewayId?: string;
  dataDir?: string;
  uplink?: string;
  listenHost?: string;
  listenPort?: number;
  httpPort?: number;
  logLevel?: string;
}

export async function runGateway(flags: GatewayFlags): Promise<number> {
  const { applyGatewayFootprint, createGateway, gatewayConfigSchema } = await import('@ferry/gateway');
  applyGatewayFootprint();
  let resolved;
  try {
    resolved = resolveConfig((input) => parseConfig(gatewayConfigSchema, input, 'gateway config'), {
      file: flags.config,
      envPrefix: 'FERRY_GATEWAY__',
      flags: configFromFlags([
        ['gatewayId', flags.gatewayId],
        ['dataDir', flags.dataDir],
        ['uplink.url', flags.uplink],
        ['devices.listen.host', flags.listenHost],
        ['devices.listen.port', flags.listenPort],
        ['http.port', flags.httpPort],
        ['logLevel', flags.logLevel],
      ]),
    });
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }
  const logger = cliLogger(resolved.config.logLevel, 'ferry-gateway');
  return runService({
    name: 'gateway',
    logger,
    create() {
      const gateway = createGateway(resolved.input as GatewayConfigInput, { logger });
      return {
        handle: gateway,
        describe: () => ({ gatewayId: resolved.config.gatewayId, deviceUrl: gateway.deviceUrl ?? null, httpUrl: gateway.httpUrl ?? null }),
        summary: () => {
          const s = gateway.stats();
          return { received: s.received, committed: s.committed, ackedReadings: s.ackedReadings, outboxDepth: s.outboxDepth };
        },
      };
    },
  });
}

export function gatewayCommand(): Command {
  return new Command('gateway')
    .description('run a gateway: devices publish to it over MQTT, it batches readings from its SQLite outbox to the broker')
    .option('-c, --config <file>', 'config file, YAML or JSON')
    .option('--gateway-id <id>', 'this gateway\'s id, unique per site')
    .option('--data-dir <dir>', 'where the outbox and dead letters are kept')
    .option('--uplink <url>', 'broker URL the batches go to, e.g. mqtt://broker:1884')
    .option('--listen-host <host>', 'address of the embedded device listener')
    .option('--listen-port <port>', 'port of the embedded device listener (default 1883)', toNumber)
    .option('--http-port <port>', 'ops endpoint port for /healthz and /metrics', toNumber)
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(LOG_LEVELS))
    .addHelpText('after', configHelp('FERRY_GATEWAY__', 'FERRY_GATEWAY__UPLINK__URL=mqtt://broker:1884'))
    .action(async (flags: GatewayFlags) => {
      process.exitCode = await runGateway(flags);
    });
}
