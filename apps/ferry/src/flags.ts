// Turning command-line flags into config fragments and typed values.
import { InvalidArgumentError } from 'commander';
import { setPath } from '@ferry/runtime';
import type { PlainObject } from '@ferry/runtime';

/** Parses a numeric flag; a value that is not a number is left for the config schema to name. */
export function toNumber(value: string): number {
  const trimmed = value.trim();
  return trimmed === '' ? Number.NaN : Number(trimmed);
}

/** A positive whole number, for flags that have no config schema behind them. */
export function toCount(value: string): number {
  const n = toNumber(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
}

/** Builds a config fragment from `[dotted.path, value]` pairs, skipping absent flags. */
export function configFromFlags(pairs: readonly (readonly [string, unknown])[]): PlainObject {
  const out: PlainObject = {};
  for (const [path, value] of pairs) if (value !== undefined) setPath(out, path, value);
  return out;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Help text describing the config sources of a service command. */
export function configHelp(envPrefix: string, example: string): string {
  return [
    '',
    'Configuration is merged from, lowest first: the --config file (YAML or JSON), environment',
    `variables prefixed ${envPrefix} (levels separated by __, e.g. ${example}), then flags.`,
    'A bad value is reported with the field it belongs to, and the command exits with code 2.',
  ].join('\n');
}
