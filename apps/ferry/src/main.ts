// Entry point of the `ferry` binary (bin/ferry.mjs imports this file).
import { CommanderError } from 'commander';
import { buildProgram } from './program.js';
import { EXIT_USAGE } from './service.js';

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  if (!(err instanceof CommanderError)) throw err;
  // Help and --version end with exit code 0; anything else commander refused is a usage error.
  process.exitCode = err.exitCode === 0 ? 0 : EXIT_USAGE;
}
// Every command has closed what it opened; exiting here also ends a stray socket's keepalive.
process.exit(process.exitCode ?? 0);
