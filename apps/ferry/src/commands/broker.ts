// `ferry broker`: the MQTT broker between gateways and ingestors.
import { Argument, Command, Option } from 'commander';
import { parseConfig } from '@ferry/runtime';
// The app is imported when the command runs, so that each process loads only its own app's code.
import { configFromFlags, configHelp, LOG_LEVELS, toNumber } from '../flags.js';
import { cliLogger, describeError, exitCodeFor, resolveConfig, runService, writeErr, writeOut } from '../service.js';

interface BrokerFlags {
  config?: string;
  host?: string;
  port?: number;
  httpHost?: string;
  httpPort?: number;
  logLevel?: string;
}

export async function runBroker(flags: BrokerFlags): Promise<number> {
  const { brokerConfigSchema, createBroker } = await import('@ferry/broker');
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

/** The password for `passwd add`: the first line on stdin, so it never shows in a process list or shell history. */
async function readPasswordLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    if (Buffer.concat(chunks).includes(0x0a)) break;
  }
  return (Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '');
}

/** `ferry broker passwd add|remove|list --file <path>`: the credential file of scrypt hashes. */
export async function runPasswd(action: 'add' | 'remove' | 'list', username: string | undefined, file: string): Promise<number> {
  const { addCredential, listCredentials, removeCredential } = await import('@ferry/broker');
  try {
    if (action === 'list') {
      for (const name of listCredentials(file)) writeOut(name);
      return 0;
    }
    if (username === undefined) {
      writeErr(`ferry broker passwd ${action}: a username is required`);
      return 2;
    }
    if (action === 'add') {
      addCredential(file, username, await readPasswordLine());
      writeErr(`user ${username} saved in ${file}`);
      return 0;
    }
    if (!removeCredential(file, username)) {
      writeErr(`user ${username} is not in ${file}`);
      return 1;
    }
    writeErr(`user ${username} removed from ${file}`);
    return 0;
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }
}

function passwdCommand(): Command {
  return new Command('passwd')
    .description('manage the broker credential file (scrypt hashes): add (password read from stdin), remove, list')
    .addArgument(new Argument('<action>', 'what to do').choices(['add', 'remove', 'list']))
    .argument('[username]', 'the user to add or remove')
    .requiredOption('-f, --file <path>', 'credential file (auth.passwordFile in the broker config)')
    .action(async (action: 'add' | 'remove' | 'list', username: string | undefined, flags: { file: string }) => {
      process.exitCode = await runPasswd(action, username, flags.file);
    });
}

export function brokerCommand(): Command {
  return new Command('broker')
    .addCommand(passwdCommand())
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
