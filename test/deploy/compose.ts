// docker/compose.yaml, docker/Dockerfile and docker/.env.example as the deployment tests read them:
// compose interpolation, a service's environment, mounted files, healthchecks and the command its
// container runs, mapped to this host (the repo's CLI, the mounted files' paths here).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { readConfigFile } from '@ferry/runtime';
import { runCommand } from './child.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DOCKER = join(ROOT, 'docker');
/** Where the images put the CLI (Dockerfile: COPY --from=build /out /opt/ferry); here, the repo's. */
export const IMAGE_CLI = '/opt/ferry/bin/ferry.mjs';
export const REPO_CLI = join(ROOT, 'apps/ferry/bin/ferry.mjs');

export type Plain = Record<string, unknown>;

export interface Stage {
  readonly name: string;
  readonly from: string;
  readonly lines: string[];
}

/** Dockerfile stages with their instructions, continuation lines joined. */
export function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  for (const line of logical) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (from) {
      stages.push({ name: from[2] ?? String(stages.length), from: from[1] ?? '', lines: [] });
      continue;
    }
    const arg = /^ARG\s+(\w+)=(\S+)$/.exec(line);
    if (arg && stages.length === 0) args.set(arg[1] ?? '', arg[2] ?? '');
    stages[stages.length - 1]?.lines.push(line);
  }
  return { args, stages };
}

/** The value of the last `INSTRUCTION [json]` in a stage or the stages it is built FROM. */
export function inherited(stages: Stage[], name: string, instruction: string): string[] | undefined {
  const stage = stages.find((s) => s.name === name);
  if (!stage) return undefined;
  const own = stage.lines.filter((l) => l.startsWith(`${instruction} `)).pop();
  if (own) {
    const json = own.slice(instruction.length).replace(/^\s+(--\S+\s+)*(CMD\s+)?/, '');
    return JSON.parse(json) as string[];
  }
  return inherited(stages, stage.from, instruction);
}

/** KEY=VALUE lines of an env file; single quotes are literal, as compose reads them. */
export function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    const raw = m[2] ?? '';
    env[m[1] ?? ''] = raw.startsWith("'") && raw.endsWith("'") ? raw.slice(1, -1) : raw;
  }
  return env;
}

const INTERPOLATION = /\$\{(\w+)(?::([-?])([^}]*))?\}/g;

/** Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}. */
export function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(INTERPOLATION, (_, name: string, op: string | undefined, arg: string | undefined) => {
    const set = env[name];
    if (set !== undefined && set !== '') return set;
    if (op === '-') return arg ?? '';
    throw new Error(`compose needs ${name}: ${arg ?? 'unset'}`);
  });
}

/** Every variable the compose file interpolates, and whether it has a `:-` default. */
export function composeVariables(text: string): Map<string, { hasDefault: boolean }> {
  const found = new Map<string, { hasDefault: boolean }>();
  for (const m of text.matchAll(INTERPOLATION)) {
    const name = m[1] ?? '';
    found.set(name, { hasDefault: (found.get(name)?.hasDefault ?? false) || m[2] === '-' });
  }
  return found;
}

export const compose = readConfigFile(join(DOCKER, 'compose.yaml'));
export const services = compose['services'] as Record<string, Plain>;
export const dotenvText = readFileSync(join(DOCKER, '.env.example'), 'utf8');
export const dotenv = parseEnvFile(dotenvText);
export const dockerfile = parseDockerfile(readFileSync(join(DOCKER, 'Dockerfile'), 'utf8'));

export function service(name: string): Plain {
  const s = services[name];
  if (!s) throw new Error(`compose has no service ${name}`);
  return s;
}

export function composeEnv(name: string, env: Record<string, string> = dotenv): Record<string, string> {
  const vars = (service(name)['environment'] ?? {}) as Record<string, string | number | boolean>;
  return Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, interpolate(String(v), env)]));
}

/** Container path -> host file, from the service's `./x:/y:ro` volumes (interpolated with `env`). */
export function mountedFiles(name: string, env: Record<string, string> = dotenv): Map<string, string> {
  const mounts = new Map<string, string>();
  for (const volume of (service(name)['volumes'] ?? []) as string[]) {
    const [host, container] = interpolate(volume, env).split(':');
    if (host?.startsWith('./') && container) mounts.set(container, join(DOCKER, host));
  }
  return mounts;
}

export function healthcheck(name: string): string[] {
  const check = service(name)['healthcheck'] as { test: string[] };
  expect(check.test[0]).toBe('CMD');
  return check.test.slice(1);
}

/** The port a healthcheck command talks to (an explicit URL, or `influx ping`'s / `redis-cli ping`'s default). */
export function healthcheckPort(command: string[]): number {
  const url = /https?:\/\/[^/'"\s]+/.exec(command.join(' '));
  if (url) return Number(new URL(url[0]).port || 80);
  if (command[0] === 'influx' && command[1] === 'ping') return 8086;
  if (command[0] === 'redis-cli' && command.includes('ping')) return 6379;
  throw new Error(`no port in healthcheck ${command.join(' ')}`);
}

/** The command compose runs for a Ferry service: image ENTRYPOINT + compose `command:` (or CMD). */
export function containerCommand(name: string): string[] {
  const build = service(name)['build'] as { target: string };
  const entrypoint = inherited(dockerfile.stages, build.target, 'ENTRYPOINT') ?? [];
  const command = (service(name)['command'] as string[] | undefined) ?? inherited(dockerfile.stages, build.target, 'CMD') ?? [];
  return [...entrypoint, ...command];
}

/** Runs a container command on this host: the image's CLI path and mounted config files mapped. */
export function hostArgs(command: string[], mounts: Map<string, string>): string[] {
  expect(command[0]).toBe('node');
  expect(command[1]).toBe(IMAGE_CLI);
  return command.slice(1).map((arg) => (arg === IMAGE_CLI ? REPO_CLI : mounts.get(arg) ?? arg));
}

/** Runs a compose healthcheck command (node -e fetch(...)) here, aimed at `port` instead of the container's. */
export function runHealthcheck(command: string[], containerPort: number, port: number): number | null {
  const [binary, ...rest] = command;
  expect(binary).toBe('node');
  const args = rest.map((a) => a.replace(`127.0.0.1:${containerPort}`, `127.0.0.1:${port}`));
  return runCommand(process.execPath, args).code;
}

/** Runs docker/init-secrets.sh into `dir`, as an operator does before the first start, for the names tests dial. */
export function initSecrets(dir: string): { caFile: string; tokenFile: string; token: string } {
  const result = runCommand('sh', [join(DOCKER, 'init-secrets.sh'), '--out', dir, 'localhost', '127.0.0.1'], { PATH: process.env['PATH'] ?? '/usr/bin:/bin' });
  if (result.code !== 0) throw new Error(`docker/init-secrets.sh failed (${String(result.code)}): ${result.stderr}`);
  const tokenFile = join(dir, 'secrets/ops-token');
  return { caFile: join(dir, 'tls/ca.crt'), tokenFile, token: readFileSync(tokenFile, 'utf8').trim() };
}

/** What init-secrets.sh makes under docker/ (git-ignored): taken from the test's own run of it instead. */
const GENERATED_DIRS = ['tls', 'secrets'];

/**
 * The host file behind a path a compose service's container reads: its `./x:/y` volumes (files
 * and directories) and its secrets (`/run/secrets/<name>` from the top-level `secrets:` files).
 * Files init-secrets.sh makes come from `generated`, the directory a test ran it into.
 */
export function hostFile(name: string, containerPath: string, generated: string, env: Record<string, string> = dotenv): string {
  const fromDocker = (rel: string): string => {
    const top = rel.replace(/^\.\//, '').split('/')[0] ?? '';
    return GENERATED_DIRS.includes(top) ? join(generated, rel) : join(DOCKER, rel);
  };
  const secret = /^\/run\/secrets\/([^/]+)$/.exec(containerPath)?.[1];
  if (secret !== undefined) {
    const granted = (service(name)['secrets'] ?? []) as string[];
    const file = ((compose['secrets'] ?? {}) as Record<string, { file?: string }>)[secret]?.file;
    if (!granted.includes(secret) || file === undefined) throw new Error(`compose service ${name} is given no secret ${secret}`);
    return fromDocker(file);
  }
  for (const volume of (service(name)['volumes'] ?? []) as string[]) {
    const [host, container] = interpolate(volume, env).split(':');
    if (!host?.startsWith('./') || !container) continue;
    if (containerPath === container || containerPath.startsWith(`${container}/`)) return fromDocker(join(host, containerPath.slice(container.length)));
  }
  throw new Error(`compose service ${name} mounts nothing at ${containerPath}`);
}

const camelToEnv = (key: string): string => key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();

/**
 * Env overrides that point every file path in a service's mounted config (`configPath` in the
 * container: aclFile, tls.cert, http.tokenFile, ...) at its host file (hostFile), so the service
 * runs here with what its container would read.
 */
export function hostFileEnv(name: string, configPath: string, prefix: string, generated: string, env: Record<string, string> = dotenv): Record<string, string> {
  const overrides: Record<string, string> = {};
  const walk = (node: unknown, path: string[]): void => {
    if (typeof node === 'string' && /^\/(etc\/ferry|run\/secrets)\//.test(node) && node !== configPath) {
      overrides[`${prefix}${path.map(camelToEnv).join('__')}`] = hostFile(name, node, generated, env);
    } else if (node !== null && typeof node === 'object' && !Array.isArray(node)) {
      for (const [key, value] of Object.entries(node)) walk(value, [...path, key]);
    }
  };
  walk(readConfigFile(mountedFiles(name, env).get(configPath) ?? ''), []);
  return overrides;
}
