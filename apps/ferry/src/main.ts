// Entry point of the `ferry` binary (bin/ferry.mjs imports this file).
// `ferry gateway` builds the root command with the gateway's alone (root.ts), so that a gateway
// process loads no other command's code; every other command line gets the whole program.
import { CommanderError } from 'commander';
import type { Command } from 'commander';
import { EXIT_USAGE } from './service.js';

async function program(): Promise<Command> {
  if (process.argv[2] === 'gateway') {
    // The heap policy first: the young generation would otherwise grow while the modules load, to
    // the 16 MiB semi-spaces of a plain node, and V8 gives that back only when it sees fit.
    (await import('@ferry/gateway/heap-policy')).applyGatewayHeapPolicy();
    const [{ ferryProgram }, { gatewayCommand }] = await Promise.all([import('./root.js'), import('./commands/gateway.js')]);
    return ferryProgram([gatewayCommand()]);
  }
  return (await import('./program.js')).buildProgram();
}

try {
  await (await program()).parseAsync(process.argv);
} catch (err) {
  if (!(err instanceof CommanderError)) throw err;
  // Help and --version end with exit code 0; anything else commander refused is a usage error.
  process.exitCode = err.exitCode === 0 ? 0 : EXIT_USAGE;
}
// Every command has closed what it opened; exiting here also ends a stray socket's keepalive.
process.exit(process.exitCode ?? 0);
