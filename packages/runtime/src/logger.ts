// Structured logs (pino). Components take a Logger; the CLI decides level and destination.
import { pino } from 'pino';
import { z } from 'zod';
import type { Logger as PinoLogger, LevelWithSilent } from 'pino';

export type Logger = PinoLogger;
export type LogLevel = LevelWithSilent;

/** The `logLevel` field every service's config has. */
export const logLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export interface LoggerOptions {
  readonly level?: LogLevel;
  readonly name?: string;
  /** File descriptor to write to; 2 (stderr) by default so stdout stays free for program output. */
  readonly fd?: number;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    { level: options.level ?? 'info', ...(options.name ? { name: options.name } : {}), base: { pid: process.pid } },
    pino.destination({ fd: options.fd ?? 2, sync: false }),
  );
}

/** A logger that discards everything, for tests and embedded use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** A logger that keeps each line as an object: for tests that check what an operator would read. */
export function recordingLogger(level: LogLevel = 'debug'): { readonly logger: Logger; readonly lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}
