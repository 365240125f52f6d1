// The `ferry` command line: parses arguments and hands each command to its module. Service
// commands only build config and call the app factories.
import { Command } from 'commander';
import { brokerCommand } from './commands/broker.js';
import { deadletterCommand } from './commands/deadletter.js';
import { demoCommand } from './commands/demo.js';
import { gatewayCommand } from './commands/gateway.js';
import { ingestorCommand } from './commands/ingestor.js';
import { simulateCommand } from './commands/simulate.js';
import { statusCommand } from './commands/status.js';

export const CLI_VERSION = '0.1.0';

/** Usage errors throw (CommanderError) instead of exiting, so main can map them to exit code 2. */
function throwOnUsageErrors(command: Command): void {
  command.exitOverride();
  for (const sub of command.commands) throwOnUsageErrors(sub);
}

export function buildProgram(): Command {
  const program = new Command('ferry')
    .description('Ferry: IoT telemetry from devices to the database over MQTT, with no reading lost or counted twice')
    .version(CLI_VERSION)
    .showHelpAfterError()
    .addCommand(brokerCommand())
    .addCommand(gatewayCommand())
    .addCommand(ingestorCommand())
    .addCommand(simulateCommand())
    .addCommand(demoCommand())
    .addCommand(statusCommand())
    .addCommand(deadletterCommand());
  throwOnUsageErrors(program);
  return program;
}
