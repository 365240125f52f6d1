// The `ferry` command line: parses arguments and hands each command to its module. Service
// commands only build config and call the app factories.
import type { Command } from 'commander';
import { brokerCommand } from './commands/broker.js';
import { deadletterCommand } from './commands/deadletter.js';
import { demoCommand } from './commands/demo.js';
import { gatewayCommand } from './commands/gateway.js';
import { ingestorCommand } from './commands/ingestor.js';
import { simulateCommand } from './commands/simulate.js';
import { statusCommand } from './commands/status.js';
import { ferryProgram } from './root.js';

export { CLI_VERSION } from './root.js';

export function buildProgram(): Command {
  return ferryProgram([
    brokerCommand(),
    gatewayCommand(),
    ingestorCommand(),
    simulateCommand(),
    demoCommand(),
    statusCommand(),
    deadletterCommand(),
  ]);
}
