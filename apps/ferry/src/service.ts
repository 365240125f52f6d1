// What every long-running command shares: config from file, environment and flags (in that
// order, validated by the app's schema), logs to stderr, and a clean close on SIGINT/SIGTERM.
import { isFerryError } from '@ferry/protocol';
import { configFromEnv, createLogger, listenForStopSignals, mergeConfig, readConfigFile } from '@ferry/runtime';
import type { LogLevel, Logger, PlainObject } from '@ferry/runtime';

/**
 * Exit codes: 0 done (including a stop asked for with SIGINT or SIGTERM, at any moment, start-up
 * included), 1 failed at run time (or a second signal cut the close short), 2 bad configuration or usage.
 */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export interface ServiceHandle {
  ready(): Promise<void>;
  close(): Promise<void>;
}

export interface ConfigSources {
  readonly file?: string | undefined;
  /** e.g. FERRY_GATEWAY__ */
  readonly envPrefix: string;
  /** Flags, already shaped like the config; a function sees the file and environment layers first. */
  readonly flags: PlainObject | ((base: PlainObject) => PlainObject);
}

/**
 * Merges file < environment < flags and validates the result with `parse` (the app's schema
 * through parseConfig); returns the raw merged input, for the app factory, and the parsed config.
 */
export function resolveConfig<T>(parse: (input: unknown) => T, sources: ConfigSources): { input: PlainObject; config: T } {
  const fromFile = sources.file !== undefined ? readConfigFile(sources.file) : undefined;
  const base = mergeConfig(fromFile, configFromEnv(process.env, sources.envPrefix));
  const input = mergeConfig(base, typeof sources.flags === 'function' ? sources.flags(base) : sources.flags);
  return { input, config: parse(input) };
}

/** Drops undefined values so that an absent flag never hides a value from the file or environment. */
export function defined(entries: Record<string, unknown>): PlainObject {
  return Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined));
}

export function cliLogger(level: LogLevel, name: string): Logger {
  return createLogger({ level, name });
}

export function writeOut(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function writeErr(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Exit code for an error thrown while starting: 2 for bad configuration, else 1. */
export function exitCodeFor(err: unknown): number {
  return isFerryError(err, 'FERRY_ERR_CONFIG_INVALID') ? EXIT_USAGE : EXIT_FAILED;
}

export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Resolves with the first SIGINT or SIGTERM; a second one exits at once. */
export function stopSignal(onForced: () => void): Promise<NodeJS.Signals> {
  return listenForStopSignals(() => onForced()).received;
}

export function flushLogger(logger: Logger | undefined): Promise<void> {
  if (!logger) return Promise.resolve();
  return new Promise((resolve) => {
    try {
      logger.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}

export interface RunningService {
  readonly handle: ServiceHandle;
  /** Printed to stdout as JSON once ready (URLs and the like). */
  describe(): Record<string, unknown>;
  /** Resolves when the service has finished on its own (e.g. a bounded simulation). */
  readonly finished?: Promise<void>;
  /** Printed to stdout as JSON after close. */
  summary?(): Record<string, unknown>;
}

export interface RunServiceOptions {
  readonly name: string;
  readonly logger: Logger;
  /** Builds the service; may throw (bad config, unwritable data dir). */
  create(): RunningService;
}

/** Starts a service, runs it until a signal (or until it finishes), closes it; returns the exit code. */
export async function runService(options: RunServiceOptions): Promise<number> {
  const { name, logger } = options;
  let service: RunningService;
  try {
    service = options.create();
  } catch (err) {
    logger.error({ err }, `${name} could not be created`);
    writeErr(describeError(err));
    await flushLogger(logger);
    return exitCodeFor(err);
  }
  const signal = stopSignal(() => {
    writeErr(`ferry ${name}: second signal, exiting without a clean close`);
    process.exit(EXIT_FAILED);
  });
  let code = EXIT_OK;
  try {
    // A signal during start-up stops the wait: close() below ends the app's own start-up waits
    // (a broker that does not answer) and undoes whatever was opened.
    const started = await Promise.race([service.handle.ready().then(() => true), signal.then(() => false)]);
    if (started) {
      writeOut(JSON.stringify({ service: name, state: 'ready', ...service.describe() }));
      const why = await Promise.race([signal, ...(service.finished ? [service.finished.then(() => 'finished' as const)] : [])]);
      logger.info({ reason: why }, `${name} stopping`);
    } else {
      logger.info({ reason: await signal }, `${name} stopping during start-up`);
    }
  } catch (err) {
    code = exitCodeFor(err);
    logger.error({ err }, `${name} failed`);
    writeErr(describeError(err));
  }
  try {
    await service.handle.close();
  } catch (err) {
    code = EXIT_FAILED;
    logger.error({ err }, `${name} did not close cleanly`);
    writeErr(describeError(err));
  }
  if (service.summary) writeOut(JSON.stringify(service.summary()));
  logger.info({ exitCode: code }, `${name} stopped`);
  await flushLogger(logger);
  return code;
}
