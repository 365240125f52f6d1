// Every Ferry config file shipped in docker/ and deploy/ parses with its service's real schema,
// alone and with the environment compose gives it; deploy/pi/gateway.yaml also with its
// commented-out keys switched on; and every FERRY_<SERVICE>__ variable those files and the
// operations docs name is a key the service knows. A key renamed in apps/*/src/config.ts fails
// here instead of at a site.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { brokerConfigSchema } from '@ferry/broker';
import { gatewayConfigSchema } from '@ferry/gateway';
import { ingestorConfigSchema } from '@ferry/ingestor';
import { configFromEnv, mergeConfig, parseConfig, readConfigFile } from '@ferry/runtime';
import type { PlainObject } from '@ferry/runtime';
import { composeEnv, composeVariables, DOCKER, dotenv, dotenvText, parseEnvFile, ROOT } from './compose.js';

type Schema = typeof brokerConfigSchema | typeof gatewayConfigSchema | typeof ingestorConfigSchema;

interface ServiceSchema {
  readonly schema: Schema;
  readonly envPrefix: string;
}

const SERVICES = {
  broker: { schema: brokerConfigSchema, envPrefix: 'FERRY_BROKER__' },
  gateway: { schema: gatewayConfigSchema, envPrefix: 'FERRY_GATEWAY__' },
  ingestor: { schema: ingestorConfigSchema, envPrefix: 'FERRY_INGESTOR__' },
} satisfies Record<string, ServiceSchema>;

interface FerryConfigFile {
  readonly service: keyof typeof SERVICES;
  /** The compose service that mounts it (its `environment:` is applied on top), if any. */
  readonly composeService?: string;
  /** Text as the service reads it (install.sh fills in the gateway id). */
  readonly text?: (raw: string) => string;
  /** A setting the file leaves to its compose environment on purpose, so the file alone is refused naming it. */
  readonly fromEnvironment?: string;
}

/** Every Ferry config file in docker/ and deploy/, by path from the repository root. */
const FERRY_CONFIGS: Record<string, FerryConfigFile> = {
  // The brokers listen on 0.0.0.0 and get their accounts from FERRY_BROKER__AUTH__USERS: without it they refuse to start.
  'docker/config/broker.yaml': { service: 'broker', composeService: 'broker', fromEnvironment: 'auth' },
  'docker/config/broker-cluster.yaml': { service: 'broker', composeService: 'broker-2', fromEnvironment: 'auth' },
  'docker/config/ingestor.yaml': { service: 'ingestor', composeService: 'ingestor' },
  'docker/config/ingestor-cluster.yaml': { service: 'ingestor', composeService: 'ingestor-2' },
  'docker/config/gateway.yaml': { service: 'gateway' },
  'deploy/pi/gateway.yaml': { service: 'gateway', text: (raw) => raw.replace('@GATEWAY_ID@', 'pi-1') },
};

/** YAML and JSON files in docker/ and deploy/ that are not Ferry configs, and the test that reads each. */
const OTHER_FILES: Record<string, string> = {
  'docker/compose.yaml': 'docker.test.ts, cluster.test.ts',
  'docker/prometheus/prometheus.yml': 'docker.test.ts (scrape targets)',
  'docker/prometheus/prometheus-cluster.yml': 'cluster.test.ts (scrape targets)',
  'docker/prometheus/alerts.yml': 'docker.test.ts (metrics exposed)',
  'docker/prometheus/gateways.yml': 'Prometheus file_sd, no Ferry keys',
  'docker/grafana/provisioning/datasources/ferry.yaml': 'docker.test.ts (data sources)',
  'docker/grafana/provisioning/dashboards/ferry.yaml': 'Grafana provisioning, no Ferry keys',
};

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'out' || name === 'node_modules' ? [] : filesUnder(path);
    return [path];
  });
}

function configText(path: string): string {
  const file = FERRY_CONFIGS[path];
  const raw = readFileSync(join(ROOT, path), 'utf8');
  return file?.text ? file.text(raw) : raw;
}

// Config text is read through the runtime's own reader (readConfigFile), as the services read it.
const scratch = mkdtempSync(join(tmpdir(), 'ferry-config-files-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let scratchFiles = 0;

function parseYaml(text: string): PlainObject {
  scratchFiles += 1;
  const file = join(scratch, `${scratchFiles}.yaml`);
  writeFileSync(file, text);
  return readConfigFile(file);
}

function parseAs(file: FerryConfigFile, input: unknown, what: string): unknown {
  return parseConfig(SERVICES[file.service].schema, input, what);
}

// --- which keys a schema knows, for the FERRY_* variable names ---

interface SchemaDef {
  readonly type: string;
  readonly innerType?: SchemaNode;
  readonly in?: SchemaNode;
  readonly options?: readonly SchemaNode[];
  readonly shape?: Record<string, SchemaNode>;
  readonly valueType?: SchemaNode;
}
interface SchemaNode {
  readonly _zod: { readonly def: SchemaDef };
}

/** Whether `path` names a setting of the schema (through defaults, optionals, unions and transforms). */
function knowsPath(schema: SchemaNode, path: readonly string[]): boolean {
  if (path.length === 0) return true;
  const def = schema._zod.def;
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
      return def.innerType !== undefined && knowsPath(def.innerType, path);
    case 'pipe':
      return def.in !== undefined && knowsPath(def.in, path);
    case 'union':
      return (def.options ?? []).some((option) => knowsPath(option, path));
    case 'object': {
      const child = def.shape?.[path[0] ?? ''];
      return child !== undefined && knowsPath(child, path.slice(1));
    }
    // Free-form maps (health.defaults, mapping.staticTags): any key; below it, what the value allows.
    case 'record':
      return def.valueType !== undefined && knowsPath(def.valueType, path.slice(1));
    case 'unknown':
    case 'any':
      return true;
    default:
      return false;
  }
}

/** The config path a FERRY_* variable sets, as the runtime's configFromEnv reads it. */
function envPath(name: string, prefix: string): string[] {
  const path: string[] = [];
  let node: unknown = configFromEnv({ [name]: 'x' }, prefix);
  while (node !== null && typeof node === 'object') {
    const [key, value] = Object.entries(node as PlainObject)[0] ?? [];
    if (key === undefined) break;
    path.push(key);
    node = value;
  }
  return path;
}

describe('Ferry config files in docker/ and deploy/', () => {
  it('lists every YAML and JSON file there as a Ferry config or as another file a test reads', () => {
    const found = [join(ROOT, 'docker'), join(ROOT, 'deploy')]
      .flatMap(filesUnder)
      .map((p) => relative(ROOT, p))
      .filter((p) => /\.(ya?ml|json)$/.test(p) && !p.startsWith('docker/grafana/dashboards/'));
    for (const path of found) expect(path in FERRY_CONFIGS || path in OTHER_FILES, `${path} is checked by no test`).toBe(true);
    for (const path of [...Object.keys(FERRY_CONFIGS), ...Object.keys(OTHER_FILES)]) expect(found, path).toContain(path);
  });

  it.each(Object.keys(FERRY_CONFIGS))('%s parses with its service schema, alone and with its compose environment', (path) => {
    const file = FERRY_CONFIGS[path] as FerryConfigFile;
    const fromFile = parseYaml(configText(path));
    if (file.fromEnvironment === undefined) expect(() => parseAs(file, fromFile, path)).not.toThrow();
    else expect(() => parseAs(file, fromFile, path)).toThrow(new RegExp(`${file.fromEnvironment}:`));
    if (file.composeService !== undefined) {
      const env = composeEnv(file.composeService);
      const fromEnv = configFromEnv(env, SERVICES[file.service].envPrefix);
      // Every variable compose sets is one the service reads (a typo would be silently ignored).
      expect(Object.keys(env).every((k) => k.startsWith(SERVICES[file.service].envPrefix)), path).toBe(true);
      const parsed = parseAs(file, mergeConfig(fromFile, fromEnv), `${path} + compose environment`) as PlainObject;
      expect(parsed['logLevel']).toBe(dotenv['FERRY_LOG_LEVEL']);
    }
  });

  it('the compose environment reaches the ingestor and broker settings it is meant for', () => {
    const ingestor = parseConfig(
      ingestorConfigSchema,
      mergeConfig(readConfigFile(join(DOCKER, 'config/ingestor.yaml')), configFromEnv(composeEnv('ingestor'), 'FERRY_INGESTOR__')),
    );
    expect(ingestor.sink).toMatchObject({ type: 'influxdb2', org: dotenv['INFLUXDB_ORG'], bucket: dotenv['INFLUXDB_BUCKET'], token: dotenv['INFLUXDB_TOKEN'] });
    expect(ingestor.broker).toMatchObject({ url: 'mqtt://broker:1884', username: dotenv['FERRY_INGESTOR_MQTT_USERNAME'], password: dotenv['FERRY_INGESTOR_MQTT_PASSWORD'] });
    for (const [name, file] of [['broker', 'broker.yaml'], ['broker-2', 'broker-cluster.yaml']] as const) {
      // The file too: a broker with users and no aclFile refuses to start.
      const broker = parseConfig(brokerConfigSchema, mergeConfig(readConfigFile(join(DOCKER, 'config', file)), configFromEnv(composeEnv(name), 'FERRY_BROKER__')));
      expect(broker.auth?.users, name).toEqual(JSON.parse(dotenv['FERRY_BROKER_USERS'] ?? ''));
      expect(broker.auth?.allowAnonymous, name).toBe(false);
    }
  });

  it('deploy/pi/gateway.yaml is valid with every commented-out key switched on', () => {
    // `  # key: value` (one word), `  #   key: value` and `  # key:` lines are settings left off; prose has more words.
    const switchedOn = configText('deploy/pi/gateway.yaml').replace(/^(\s+)# (\s*[a-zA-Z]+:(?: \S+)?)$/gm, '$1$2');
    const keys = [...configText('deploy/pi/gateway.yaml').matchAll(/^\s+#\s+([a-zA-Z]+):(?: \S+)?$/gm)].map((m) => m[1]);
    expect(keys).toEqual(expect.arrayContaining(['username', 'password', 'attach', 'url', 'clientId', 'ca', 'bridgeUsers', 'deviceMustMatchUser']));
    const parsed = parseConfig(gatewayConfigSchema, parseYaml(switchedOn), 'deploy/pi/gateway.yaml, all keys on');
    expect(parsed.devices.attach?.url).toBe('mqtt://127.0.0.1:1883');
    expect(parsed.uplink.ca).toBe('/etc/ferry/ca.pem');
    expect(parsed.devices.listen).toMatchObject({ bridgeUsers: ['zigbee2mqtt'], deviceMustMatchUser: true });
  });

  it('deploy/pi/gateway.yaml takes devices on the LAN by per-device login only, and sends over TLS', () => {
    const parsed = parseConfig(gatewayConfigSchema, parseYaml(configText('deploy/pi/gateway.yaml')), 'deploy/pi/gateway.yaml');
    expect(parsed.devices.listen).toMatchObject({ host: '0.0.0.0', passwordFile: '/etc/ferry/devices.passwd', allowAnonymous: false });
    expect(parsed.devices.listen !== false && parsed.devices.listen.username).toBeUndefined();
    expect(parsed.uplink.url).toMatch(/^mqtts:\/\//);
  });

  it('every FERRY_<SERVICE>__ variable named in docker/, deploy/ and the operations docs is a setting of that service', () => {
    const texts = [
      ...[join(ROOT, 'docker'), join(ROOT, 'deploy')].flatMap(filesUnder).filter((p) => !p.endsWith('.json')),
      join(ROOT, 'docs/operations.md'),
      join(ROOT, 'docs/raspberry-pi.md'),
    ].map((p) => ({ path: relative(ROOT, p), text: readFileSync(p, 'utf8') }));
    let checked = 0;
    for (const { path, text } of texts) {
      for (const m of text.matchAll(/\bFERRY_(BROKER|GATEWAY|INGESTOR)__[A-Z0-9_]*[A-Z0-9]/g)) {
        const service = SERVICES[(m[1] ?? '').toLowerCase() as keyof typeof SERVICES];
        const path_ = envPath(m[0], service.envPrefix);
        expect(knowsPath(service.schema as unknown as SchemaNode, path_), `${path}: ${m[0]} (${path_.join('.')})`).toBe(true);
        checked += 1;
      }
    }
    expect(checked).toBeGreaterThan(10);
    // The check does catch a drifted name.
    expect(knowsPath(SERVICES.ingestor.schema as unknown as SchemaNode, envPath('FERRY_INGESTOR__SINK__TOKENS', 'FERRY_INGESTOR__'))).toBe(false);
    expect(knowsPath(SERVICES.broker.schema as unknown as SchemaNode, envPath('FERRY_BROKER__CLUSTER__REDIS_URL', 'FERRY_BROKER__'))).toBe(true);
  });

  it('every setting the operations and Raspberry Pi docs name (`uplink.ca`, `outbox.synchronous: ...`) is a setting of a service', () => {
    const schemas = Object.values(SERVICES).map((s) => s.schema as unknown as SchemaNode);
    let checked = 0;
    for (const doc of ['docs/operations.md', 'docs/raspberry-pi.md']) {
      const text = readFileSync(join(ROOT, doc), 'utf8');
      for (const m of text.matchAll(/`([a-z][a-zA-Z]*(?:\.[a-z][a-zA-Z]*)+)[`:]/g)) {
        const path = (m[1] ?? '').split('.');
        // File names (outbox.db, gateway.yaml.example, install.sh) are not settings.
        if (['db', 'yaml', 'yml', 'sh', 'example', 'md', 'json', 'service', 'key', 'crt'].includes(path[path.length - 1] ?? '')) continue;
        expect(schemas.some((schema) => knowsPath(schema, path)), `${doc}: ${m[1]}`).toBe(true);
        checked += 1;
      }
    }
    expect(checked).toBeGreaterThan(10);
  });

  it('docker/.env.example sets every variable compose requires, and each of its variables is used', () => {
    const used = composeVariables(readFileSync(join(DOCKER, 'compose.yaml'), 'utf8'));
    // Commented-out lines are the optional settings (the cluster profile).
    const all = parseEnvFile(dotenvText.replace(/^#\s*(?=[A-Z0-9_]+=)/gm, ''));
    for (const [name, { hasDefault }] of used) {
      if (!hasDefault) expect(dotenv[name], `${name} is required by compose`).toBeDefined();
    }
    // COMPOSE_PROFILES is compose's own (it turns the profile on).
    for (const name of Object.keys(all)) expect(used.has(name) || name === 'COMPOSE_PROFILES', `${name} is set but compose never reads it`).toBe(true);
  });
});
