// The `ferry` root command, without its subcommands: program.ts adds them all; main.ts adds only
// the gateway's for `ferry gateway`, so a gateway process loads no other command's code.
import { Command } from 'commander';

export const CLI_VERSION = '0.1.0';

/** Usage errors throw (CommanderError) instead of exiting, so main can map them to exit code 2. */
function throwOnUsageErrors(command: Command): void {
  command.exitOverride();
  for (const sub of command.commands) throwOnUsageErrors(sub);
}

/** The root command with `commands` under it, usage errors thrown. */
export function ferryProgram(commands: readonly Command[]): Command {
  const program = new Command('ferry')
    .description('Ferry: IoT telemetry from devices to the database over MQTT, with no reading lost or counted twice')
    .version(CLI_VERSION)
    .showHelpAfterError();
  for (const command of commands) program.addCommand(command);
  throwOnUsageErrors(program);
  return program;
}
