// `ferry broker`: the MQTT broker between gateways and ingestors.
import { Command, Option } from 'commander';
import { parseConfig } from '@ferry/runtime';
import { brokerConfigSchema, createBroker } from '@ferry/broker';
import { configFromFlags, configHelp, LOG_LEVELS, toNumber } from '../flags.js';
import { cliLogger, describeError, exitCodeFor, resolveConfig, runService, writeErr } from '../service.js';

interface BrokerFlags {
  config?: string;
  host?: string;
  port?: number;
  httpHost?: string;
  httpPort?: number;
  logLevel?: string;
}

export async function runBroker(flags: BrokerFlags): Promise<number> {
  let resolved;
  try {
    resolved = resolveConfig((input) => parseConfig(brokerConfigSchema, input, 'broker config'), {
      file: flags.config,
      envPrefix: 'FERRY_BROKER__',
      flags: configFromFlags([
        ['listen.host', flags.host],
        ['listen.port', flags.port],
        ['http.host', flags.httpHost],
        ['http.port', flags.httpPort],
        ['logLevel', flags.logLevel],
      ]),
    });
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }
  const logger = cliLogger(resolved.config.logLevel, 'ferry-broker');
  return runService({
    name: 'broker',
    logger,
    create() {
      const broker = createBroker(resolved.input, { logger });
      return { handle: broker, describe: () => ({ url: broker.url, httpUrl: broker.httpUrl ?? null }) };
    },
  });
}

export function brokerCommand(): Command {
  return new Command('broker')
    .description('run the Ferry MQTT broker that gateways publish batches to and ingestors subscribe on')
    .option('-c, --config <file>', 'config file, YAML or JSON')
    .option('--host <host>', 'MQTT listen address (default 127.0.0.1)')
    .option('--port <port>', 'MQTT listen port, 0 for any free port (default 1884)', toNumber)
    .option('--http-host <host>', 'ops endpoint address')
    .option('--http-port <port>', 'ops endpoint port for /healthz and /metrics (default 0: any free port)', toNumber)
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(LOG_LEVELS))
    .addHelpText('after', configHelp('FERRY_BROKER__', 'FERRY_BROKER__LISTEN__PORT=1884'))
    .action(async (flags: BrokerFlags) => {
      process.exitCode = await runBroker(flags);
    });
}
