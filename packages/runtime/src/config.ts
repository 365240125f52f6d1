// Configuration: a file (YAML or JSON), then FERRY_* environment variables, then flags, merged
// in that order and validated by a zod schema. A bad value stops the start naming the field.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { z } from 'zod';
import { FerryError } from '@ferry/protocol';

export type PlainObject = Record<string, unknown>;

function isPlainObject(v: unknown): v is PlainObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Deep merge: objects merge key by key, anything else on the right replaces. */
export function mergeConfig(...layers: readonly (PlainObject | undefined)[]): PlainObject {
  const out: PlainObject = {};
  for (const layer of layers) {
    if (!layer) continue;
    for (const [k, v] of Object.entries(layer)) {
      if (v === undefined) continue;
      const prev = out[k];
      out[k] = isPlainObject(prev) && isPlainObject(v) ? mergeConfig(prev, v) : v;
    }
  }
  return out;
}

/**
 * The YAML parser (about 300 KB of code) is loaded for a YAML file only, and let go of once the
 * file is read: a config is read at start, and a long-running process (a gateway on a Pi) should
 * not keep a parser in memory for good. Another YAML file read later loads it again.
 */
function parseYaml(text: string): unknown {
  const require = createRequire(import.meta.url);
  const loaded = new Set(Object.keys(require.cache));
  try {
    return (require('yaml') as typeof import('yaml')).parse(text);
  } finally {
    for (const path of Object.keys(require.cache)) if (!loaded.has(path)) delete require.cache[path];
  }
}

export function readConfigFile(path: string): PlainObject {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `config file ${path} cannot be read: ${(err as Error).message}`, { path });
  }
  let value: unknown;
  try {
    value = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `config file ${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`, { path });
  }
  if (value === null || value === undefined) return {};
  if (!isPlainObject(value)) throw new FerryError('FERRY_ERR_CONFIG_INVALID', `config file ${path} must hold an object`, { path });
  return value;
}

/** Reads a scalar from the environment: JSON when it parses (numbers, booleans, arrays), else the string. */
function envValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/**
 * `FERRY_UPLINK__URL=mqtt://x` becomes `{ uplink: { url: 'mqtt://x' } }`: the prefix is stripped,
 * `__` separates levels, and snake case becomes camel case (`MAX_BATCH_SIZE` -> `maxBatchSize`).
 */
export function configFromEnv(env: NodeJS.ProcessEnv, prefix = 'FERRY_'): PlainObject {
  const out: PlainObject = {};
  for (const [key, raw] of Object.entries(env)) {
    if (!key.startsWith(prefix) || raw === undefined) continue;
    const path = key
      .slice(prefix.length)
      .split('__')
      .map((seg) => seg.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase()));
    if (path.some((p) => p.length === 0)) continue;
    let node = out;
    path.forEach((seg, i) => {
      if (i === path.length - 1) node[seg] = envValue(raw);
      else {
        const next = node[seg];
        node = (node[seg] = isPlainObject(next) ? next : {});
      }
    });
  }
  return out;
}

/** Sets `value` at a dotted path, e.g. `setPath(cfg, 'uplink.url', 'mqtt://x')`. */
export function setPath(target: PlainObject, dotted: string, value: unknown): PlainObject {
  const path = dotted.split('.');
  let node = target;
  path.forEach((seg, i) => {
    if (i === path.length - 1) node[seg] = value;
    else {
      const next = node[seg];
      node = (node[seg] = isPlainObject(next) ? next : {});
    }
  });
  return target;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const field = issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)';
  return `${field}: ${issue.message}`;
}

/** Validates merged config; on failure throws FERRY_ERR_CONFIG_INVALID naming each field and what was expected. */
export function parseConfig<S extends z.ZodType>(schema: S, input: unknown, what = 'config'): z.infer<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues;
  const fields = issues.map((i) => i.path.map(String).join('.') || '(root)');
  throw new FerryError('FERRY_ERR_CONFIG_INVALID', `invalid ${what}: ${issues.map(describeIssue).join('; ')}`, {
    fields,
    issues: issues.map((i) => ({ field: i.path.map(String).join('.'), message: i.message, code: i.code })),
  });
}

export interface LoadConfigOptions<S extends z.ZodType> {
  readonly schema: S;
  readonly file?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
  readonly envPrefix?: string;
  /** Values from flags, already shaped like the config. */
  readonly overrides?: PlainObject;
  readonly what?: string;
}

export function loadConfig<S extends z.ZodType>(options: LoadConfigOptions<S>): z.infer<S> {
  const fromFile = options.file ? readConfigFile(options.file) : undefined;
  const fromEnv = options.env ? configFromEnv(options.env, options.envPrefix) : undefined;
  return parseConfig(options.schema, mergeConfig(fromFile, fromEnv, options.overrides), options.what);
}
