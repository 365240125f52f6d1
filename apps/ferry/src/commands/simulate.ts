// `ferry simulate`: simulated devices publishing telemetry to a gateway (or any MQTT broker).
import { Command, Option } from 'commander';
import { parseConfig } from '@ferry/runtime';
// The app is imported when the command runs, so that each process loads only its own app's code.
import type { SimulatorConfigInput } from '@ferry/simulator';
import { configFromFlags, configHelp, LOG_LEVELS, toNumber } from '../flags.js';
import { cliLogger, describeError, exitCodeFor, resolveConfig, runService, writeErr } from '../service.js';

interface SimulateFlags {
  config?: string;
  url?: string;
  devices?: number;
  intervalMs?: number;
  readingsPerDevice?: number;
  qos?: number;
  dropoutProbability?: number;
  seed?: number;
  deviceIdPrefix?: string;
  topicPattern?: string;
  connections?: number;
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

export async function runSimulate(flags: SimulateFlags): Promise<number> {
  const { createSimulator, simulatorConfigSchema } = await import('@ferry/simulator');
  let resolved;
  try {
    resolved = resolveConfig((input) => parseConfig(simulatorConfigSchema, input, 'simulator config'), {
      file: flags.config,
      envPrefix: 'FERRY_SIMULATOR__',
      flags: configFromFlags([
        ['url', flags.url],
        ['devices', flags.devices],
        ['intervalMs', flags.intervalMs],
        ['readingsPerDevice', flags.readingsPerDevice],
        ['qos', flags.qos],
        ['dropoutProbability', flags.dropoutProbability],
        ['seed', flags.seed],
        ['deviceIdPrefix', flags.deviceIdPrefix],
        ['topicPattern', flags.topicPattern],
        ['connections', flags.connections],
      ]),
    });
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }
  const logger = cliLogger(flags.logLevel ?? 'info', 'ferry-simulate');
  return runService({
    name: 'simulate',
    logger,
    create() {
      const simulator = createSimulator(resolved.input as SimulatorConfigInput, { logger });
      return {
        handle: simulator,
        describe: () => ({ url: resolved.config.url, devices: resolved.config.devices, intervalMs: resolved.config.intervalMs }),
        ...(resolved.config.readingsPerDevice !== undefined ? { finished: simulator.done } : {}),
        summary: () => ({ ...simulator.stats() }),
      };
    },
  });
}

export function simulateCommand(): Command {
  return new Command('simulate')
    .description('simulate devices publishing temperature, humidity, battery and rssi readings over MQTT')
    .option('-c, --config <file>', 'config file, YAML or JSON')
    .option('--url <url>', 'device-side broker, e.g. a gateway\'s listener mqtt://127.0.0.1:1883')
    .option('--devices <n>', 'number of devices (default 10)', toNumber)
    .option('--interval-ms <ms>', 'time between readings of one device (default 1000)', toNumber)
    .option('--readings-per-device <n>', 'stop after this many readings per device and exit', toNumber)
    .option('--qos <qos>', 'MQTT QoS of readings, 0 or 1 (default 1)', toNumber)
    .option('--dropout-probability <p>', 'chance that a device misses a reading (default 0.01)', toNumber)
    .option('--seed <n>', 'seed of the signals, for reproducible runs (default 1)', toNumber)
    .option('--device-id-prefix <prefix>', 'device ids are <prefix><n> (default sim-)')
    .option('--topic-pattern <pattern>', 'telemetry topic (default devices/{deviceId}/telemetry)')
    .option('--connections <n>', 'MQTT connections to spread the devices over (default one per device up to 50)', toNumber)
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(LOG_LEVELS))
    .addHelpText('after', configHelp('FERRY_SIMULATOR__', 'FERRY_SIMULATOR__URL=mqtt://127.0.0.1:1883'))
    .action(async (flags: SimulateFlags) => {
      process.exitCode = await runSimulate(flags);
    });
}
