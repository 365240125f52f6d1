// No Docker engine runs here, so docker/ is checked by doing outside Docker exactly what the
// images would do: the Dockerfile's ENTRYPOINT + CMD with the compose file's config files and
// environment (resolved from .env.example), against real servers (VictoriaMetrics standing in
// for InfluxDB 2 through its v2 write API). Only addresses differ: compose host names and fixed
// ports become loopback and free ports, and data dirs become temp dirs. The healthchecks are the
// compose commands themselves, pointed at those ports. The Grafana dashboards and Prometheus
// rules are checked against what Ferry really writes and really exposes.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { passwordFileLine, readConfigFile } from '@ferry/runtime';
import { stablePort, makeTempDir, startVictoriaMetrics, waitFor } from '@ferry/testkit';
import type { VictoriaHandle } from '@ferry/testkit';
import { httpText, startChild, waitHealthy } from './child.js';
import type { Child } from './child.js';
import {
  composeEnv,
  containerCommand,
  DOCKER,
  dockerfile,
  dotenv,
  healthcheck,
  healthcheckPort,
  hostArgs,
  hostFile,
  hostFileEnv,
  IMAGE_CLI,
  inherited,
  initSecrets,
  interpolate,
  mountedFiles,
  ROOT,
  runHealthcheck,
  service,
  services,
} from './compose.js';
import type { Plain } from './compose.js';

interface Running {
  readonly child: Child;
  readonly httpPort: number;
}

let work: string;
let secrets: ReturnType<typeof initSecrets>;
let vm: VictoriaHandle;
let broker: Running;
let brokerPort: number;
let brokerTlsPort: number;
let ingestor: Running;
let gateway: Running;
let gatewayDevicePort: number;
const DEVICE_PASSWORD = 'docker-dev-1-password';

/** The first gateway site's broker account in .env.example. */
function siteAccount(): { username: string; password: string } {
  const site = (JSON.parse(dotenv['FERRY_BROKER_USERS'] ?? '[]') as { username: string; password: string }[]).find((u) => u.username !== 'ingestor');
  if (!site) throw new Error('.env.example has no gateway account in FERRY_BROKER_USERS');
  return site;
}

async function startService(name: string, env: Record<string, string>, httpPort: number): Promise<Running> {
  const args = hostArgs(containerCommand(name), mountedFiles(name));
  const child = startChild({
    command: process.execPath,
    args,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', NODE_ENV: 'production', ...env },
    logFile: join(work, `${name}.log`),
  });
  await waitHealthy(`http://127.0.0.1:${httpPort}/healthz`, child, name);
  return { child, httpPort };
}

beforeAll(async () => {
  work = await makeTempDir('docker-entrypoints');
  // What an operator runs once before `docker compose up`: the broker's certificate and the ops token.
  secrets = initSecrets(work);
  vm = await startVictoriaMetrics();
  const vmUrl = new URL(vm.url);

  brokerPort = await stablePort();
  brokerTlsPort = await stablePort();
  const brokerHttp = await stablePort();
  broker = await startService('broker', {
    ...composeEnv('broker'),
    // aclFile, tls.cert, tls.key and http.tokenFile: the files compose mounts there.
    ...hostFileEnv('broker', '/etc/ferry/broker.yaml', 'FERRY_BROKER__', work),
    FERRY_BROKER__LISTEN__HOST: '127.0.0.1',
    FERRY_BROKER__LISTEN__PORT: String(brokerPort),
    FERRY_BROKER__TLS__HOST: '127.0.0.1',
    FERRY_BROKER__TLS__PORT: String(brokerTlsPort),
    FERRY_BROKER__HTTP__HOST: '127.0.0.1',
    FERRY_BROKER__HTTP__PORT: String(brokerHttp),
    FERRY_BROKER__DATA_DIR: join(work, 'broker'),
  }, brokerHttp);

  const ingestorHttp = await stablePort();
  const ingestorEnv = Object.fromEntries(
    Object.entries(composeEnv('ingestor')).map(([k, v]) => [
      k,
      v.replace('mqtt://broker:1884', `mqtt://127.0.0.1:${brokerPort}`).replace('http://influxdb:8086', `http://${vmUrl.host}`),
    ]),
  );
  ingestor = await startService('ingestor', {
    ...ingestorEnv,
    ...hostFileEnv('ingestor', '/etc/ferry/ingestor.yaml', 'FERRY_INGESTOR__', work),
    FERRY_INGESTOR__HTTP__HOST: '127.0.0.1',
    FERRY_INGESTOR__HTTP__PORT: String(ingestorHttp),
    FERRY_INGESTOR__DATA_DIR: join(work, 'ingestor'),
  }, ingestorHttp);

  // The gateway image is not in compose (gateways run at the sites); its CMD and config, with a
  // site account from .env.example.
  const site = siteAccount();
  const gatewayHttp = await stablePort();
  gatewayDevicePort = await stablePort();
  const devicesPasswd = join(work, 'devices.passwd');
  writeFileSync(devicesPasswd, `${passwordFileLine('docker-dev-1', DEVICE_PASSWORD, { N: 1024, r: 8, p: 1 })}\n`);
  const gatewayCommand = [...(inherited(dockerfile.stages, 'gateway', 'ENTRYPOINT') ?? []), ...(inherited(dockerfile.stages, 'gateway', 'CMD') ?? [])];
  const gatewayChild = startChild({
    command: process.execPath,
    args: hostArgs(gatewayCommand, new Map([['/etc/ferry/gateway.yaml', join(DOCKER, 'config/gateway.yaml')]])),
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      // The site's account name is its gateway id (docker/config/acl.conf).
      FERRY_GATEWAY__GATEWAY_ID: site.username,
      // Over TLS to the broker's published port, checked against the deployment CA as the shipped
      // config says (uplink.ca, the operator's copy of docker/tls/ca.crt).
      FERRY_GATEWAY__UPLINK__URL: `mqtts://localhost:${brokerTlsPort}`,
      FERRY_GATEWAY__UPLINK__CA: secrets.caFile,
      FERRY_GATEWAY__HTTP__TOKEN_FILE: secrets.tokenFile,
      FERRY_GATEWAY__UPLINK__USERNAME: site.username,
      FERRY_GATEWAY__UPLINK__PASSWORD: site.password,
      FERRY_GATEWAY__DEVICES__LISTEN__HOST: '127.0.0.1',
      FERRY_GATEWAY__DEVICES__LISTEN__PORT: String(gatewayDevicePort),
      // The file the shipped config names, as an operator would mount it at /etc/ferry/devices.passwd.
      FERRY_GATEWAY__DEVICES__LISTEN__PASSWORD_FILE: devicesPasswd,
      FERRY_GATEWAY__HTTP__HOST: '127.0.0.1',
      FERRY_GATEWAY__HTTP__PORT: String(gatewayHttp),
      FERRY_GATEWAY__DATA_DIR: join(work, 'gateway'),
    },
    logFile: join(work, 'gateway.log'),
  });
  await waitHealthy(`http://127.0.0.1:${gatewayHttp}/healthz`, gatewayChild, 'gateway');
  gateway = { child: gatewayChild, httpPort: gatewayHttp };
}, 180_000);

afterAll(async () => {
  for (const running of [gateway, ingestor, broker]) {
    if (running) await running.child.stop();
  }
  await vm?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('docker/Dockerfile and docker/compose.yaml', () => {
  it('builds from node:20-bookworm-slim in stages and runs every service as the unprivileged node user', () => {
    expect(dockerfile.args.get('NODE_IMAGE')).toBe('node:20-bookworm-slim');
    const build = dockerfile.stages.find((s) => s.name === 'build');
    expect(build?.lines.join('\n')).toMatch(/python3 make g\+\+/);
    const runtime = dockerfile.stages.find((s) => s.name === 'runtime');
    expect(runtime?.from).toBe('${NODE_IMAGE}');
    expect(runtime?.lines).toContain('USER node');
    expect(runtime?.lines.some((l) => l.startsWith('COPY --from=build /out /opt/ferry'))).toBe(true);
    for (const target of ['broker', 'ingestor', 'gateway']) {
      expect(dockerfile.stages.find((s) => s.name === target)?.from, target).toBe('runtime');
      expect(inherited(dockerfile.stages, target, 'ENTRYPOINT')).toEqual(['node', IMAGE_CLI]);
      expect(inherited(dockerfile.stages, target, 'CMD')).toEqual([target, '--config', `/etc/ferry/${target}.yaml`]);
      expect(inherited(dockerfile.stages, target, 'HEALTHCHECK'), target).toBeDefined();
    }
    // The build context is the repository root: the host's node_modules (native modules for this host, links into
    // its pnpm store) and any docker/.env with real secrets must stay out of it.
    const ignored = readFileSync(join(DOCKER, 'Dockerfile.dockerignore'), 'utf8').split('\n');
    for (const pattern of ['**/node_modules', '**/dist', 'docker/.env']) expect(ignored).toContain(pattern);
    for (const name of ['broker', 'ingestor']) {
      // compose runs the same command the image would by default.
      expect(service(name)['command']).toEqual(inherited(dockerfile.stages, name, 'CMD'));
      expect((service(name)['build'] as { target: string }).target).toBe(name);
    }
  });

  it('points every healthcheck and Prometheus scrape at a port its service listens on', () => {
    const ferryHttp: Record<string, number> = {};
    for (const name of ['broker', 'ingestor']) {
      const config = readConfigFile(join(DOCKER, `config/${name}.yaml`));
      const http = config['http'] as { host: string; port: number };
      expect(http.host, `${name} must listen beyond loopback in its container`).toBe('0.0.0.0');
      ferryHttp[name] = http.port;
      expect(healthcheckPort(healthcheck(name)), name).toBe(http.port);
      // The image's own HEALTHCHECK too.
      expect(healthcheckPort(inherited(dockerfile.stages, name, 'HEALTHCHECK') ?? []), `${name} image`).toBe(http.port);
    }
    const gatewayConfig = readConfigFile(join(DOCKER, 'config/gateway.yaml'));
    expect(healthcheckPort(inherited(dockerfile.stages, 'gateway', 'HEALTHCHECK') ?? [])).toBe((gatewayConfig['http'] as { port: number }).port);
    // Third-party images listen on their documented defaults.
    const defaults: Record<string, number> = { influxdb: 8086, prometheus: 9090, grafana: 3000 };
    for (const [name, port] of Object.entries(defaults)) {
      expect(healthcheckPort(healthcheck(name)), name).toBe(port);
      const published = ((service(name)['ports'] ?? []) as string[]).map((p) => Number(p.split(':').pop()));
      expect(published, name).toContain(port);
    }
    // The broker publishes MQTT over TLS only; its plain listener serves the compose network.
    const brokerConfig = readConfigFile(join(DOCKER, 'config/broker.yaml'));
    const brokerPorts = (service('broker')['ports'] as string[]).map((p) => Number(interpolate(p, dotenv).split(':').pop()));
    expect(brokerPorts).toEqual([(brokerConfig['tls'] as { port: number }).port]);
    expect(brokerPorts).not.toContain((brokerConfig['listen'] as { port: number }).port);

    const prometheus = readConfigFile(join(DOCKER, 'prometheus/prometheus.yml'));
    const targets = (prometheus['scrape_configs'] as { job_name: string; static_configs?: { targets: string[] }[] }[])
      .flatMap((job) => (job.static_configs ?? []).flatMap((c) => c.targets));
    expect(targets.sort()).toEqual([`broker:${ferryHttp['broker']}`, `ingestor:${ferryHttp['ingestor']}`]);
    // Every Ferry scrape sends the ops token the services read: the same compose secret.
    for (const job of prometheus['scrape_configs'] as { job_name: string; authorization?: { credentials_file?: string } }[]) {
      const file = job.authorization?.credentials_file;
      expect(file, job.job_name).toBe('/run/secrets/ops_token');
      expect(hostFile('prometheus', file ?? '', work)).toBe(hostFile('broker', (brokerConfig['http'] as { tokenFile: string }).tokenFile, work));
    }
    // Files the services mount exist.
    for (const name of Object.keys(services)) {
      for (const [, host] of mountedFiles(name)) expect(() => readdirSync(join(host, '..')), host).not.toThrow();
    }
  });

  it('has InfluxDB create the org, bucket and token the ingestor and Grafana use', () => {
    const influx = composeEnv('influxdb');
    const ingestorEnv = composeEnv('ingestor');
    expect(influx['DOCKER_INFLUXDB_INIT_MODE']).toBe('setup');
    expect(ingestorEnv['FERRY_INGESTOR__SINK__ORG']).toBe(influx['DOCKER_INFLUXDB_INIT_ORG']);
    expect(ingestorEnv['FERRY_INGESTOR__SINK__BUCKET']).toBe(influx['DOCKER_INFLUXDB_INIT_BUCKET']);
    expect(ingestorEnv['FERRY_INGESTOR__SINK__TOKEN']).toBe(influx['DOCKER_INFLUXDB_INIT_ADMIN_TOKEN']);
    expect(composeEnv('grafana')['INFLUXDB_TOKEN']).toBe(influx['DOCKER_INFLUXDB_INIT_ADMIN_TOKEN']);
    const datasources = readConfigFile(join(DOCKER, 'grafana/provisioning/datasources/ferry.yaml'))['datasources'] as Plain[];
    const influxSource = datasources.find((d) => d['type'] === 'influxdb');
    expect(influxSource?.['url']).toBe('http://influxdb:8086');
    expect((influxSource?.['secureJsonData'] as Plain)['token']).toBe('${INFLUXDB_TOKEN}');
    expect(datasources.find((d) => d['type'] === 'prometheus')?.['url']).toBe('http://prometheus:9090');
  });

  it('runs the broker, ingestor and gateway entrypoints with their config files and env, healthy by their own healthchecks', () => {
    for (const [name, running] of [['broker', broker], ['ingestor', ingestor]] as const) {
      const command = healthcheck(name);
      expect(runHealthcheck(command, healthcheckPort(command), running.httpPort), `${name} healthcheck`).toBe(0);
    }
    const gatewayCheck = (inherited(dockerfile.stages, 'gateway', 'HEALTHCHECK') ?? []);
    expect(runHealthcheck(gatewayCheck, healthcheckPort(gatewayCheck), gateway.httpPort)).toBe(0);
    // The same healthcheck fails when nothing answers: it is a real check.
    expect(runHealthcheck(healthcheck('broker'), healthcheckPort(healthcheck('broker')), 1)).not.toBe(0);
  });

  it('carries a reading from the gateway through the authenticated broker and ingestor into the InfluxDB v2 write API', async () => {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gatewayDevicePort}`, { protocolVersion: 4, clientId: 'docker-dev-1', reconnectPeriod: 0, username: 'docker-dev-1', password: DEVICE_PASSWORD });
    try {
      await client.publishAsync('devices/docker-dev-1/telemetry', JSON.stringify({ ts: Date.now(), metrics: { temperature: 21.5, humidity: 40, battery: 88, rssi: -60 } }), { qos: 1 });
    } finally {
      await client.endAsync();
    }
    const series = await waitFor(
      async () => {
        await vm.flush();
        const found = await vm.exportSeries('{__name__="telemetry_temperature",device="docker-dev-1"}');
        return found.length > 0 ? found : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'the reading in VictoriaMetrics' },
    );
    expect(series[0]?.metric['gateway']).toBe(siteAccount().username);
    expect(series[0]?.values).toEqual([21.5]);
  }, 90_000);
});

// --- Grafana dashboards and Prometheus rules ---

/** What Ferry writes (docs/protocol.md section 3; fields: the simulator's metrics, status `state`). */
const WRITTEN: Record<string, readonly string[]> = {
  telemetry: ['temperature', 'humidity', 'battery', 'rssi'],
  device_status: ['state'],
};
const TAGS = ['device', 'gateway'];

interface DashboardQuery {
  readonly dashboard: string;
  readonly panel: string;
  readonly datasource: string;
  readonly text: string;
}

function dashboardQueries(): DashboardQuery[] {
  const dir = join(DOCKER, 'grafana/dashboards');
  const queries: DashboardQuery[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const dashboard = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Plain;
    for (const panel of dashboard['panels'] as Plain[]) {
      for (const target of panel['targets'] as Plain[]) {
        const ds = (target['datasource'] ?? panel['datasource']) as { uid: string };
        queries.push({ dashboard: file, panel: String(panel['title']), datasource: ds.uid, text: String(target['query'] ?? target['expr']) });
      }
    }
    for (const variable of ((dashboard['templating'] as { list: Plain[] }).list)) {
      if (variable['type'] === 'query') {
        queries.push({ dashboard: file, panel: `variable ${String(variable['name'])}`, datasource: (variable['datasource'] as { uid: string }).uid, text: String(variable['query']) });
      }
    }
  }
  return queries;
}

/** Metric names a PromQL expression reads; histogram series map to their histogram. */
function promMetrics(expr: string): string[] {
  return [...expr.matchAll(/\bferry_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
}

/** Metric names the running broker, ingestor and gateway list on /metrics (labelled ones too, before any sample). */
async function exposedMetrics(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const running of [broker, ingestor, gateway]) {
    expect((await httpText(`http://127.0.0.1:${running.httpPort}/metrics`))?.status).toBe(401);
    const res = await httpText(`http://127.0.0.1:${running.httpPort}/metrics`, secrets.token);
    expect(res?.status).toBe(200);
    for (const m of (res?.body ?? '').matchAll(/^# TYPE (\S+) /gm)) if (m[1]) names.add(m[1]);
  }
  return names;
}

describe('docker/grafana dashboards', () => {
  it('are well-formed dashboards: fleet overview, device detail, gateway backlog, ingest throughput', () => {
    const dir = join(DOCKER, 'grafana/dashboards');
    const titles = readdirSync(dir).map((f) => (JSON.parse(readFileSync(join(dir, f), 'utf8')) as Plain)['title']);
    expect(titles.sort()).toEqual(['Ferry / Device detail', 'Ferry / Fleet overview', 'Ferry / Gateway backlog', 'Ferry / Ingest throughput']);
    const uids = new Set<string>();
    for (const file of readdirSync(dir)) {
      const d = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Plain;
      expect(typeof d['uid']).toBe('string');
      uids.add(String(d['uid']));
      const ids = (d['panels'] as Plain[]).map((p) => p['id']);
      expect(new Set(ids).size, `${file}: panel ids unique`).toBe(ids.length);
      for (const p of d['panels'] as Plain[]) expect((p['targets'] as unknown[]).length, `${file} ${String(p['title'])}`).toBeGreaterThan(0);
    }
    expect(uids.size).toBe(titles.length);
    const provisioned = readConfigFile(join(DOCKER, 'grafana/provisioning/datasources/ferry.yaml'))['datasources'] as Plain[];
    const known = new Set(provisioned.map((d) => d['uid']));
    for (const q of dashboardQueries()) expect(known.has(q.datasource), `${q.dashboard} ${q.panel}: datasource ${q.datasource}`).toBe(true);
  });

  it('every Flux query names a measurement and fields that Ferry writes', () => {
    const flux = dashboardQueries().filter((q) => q.datasource === 'ferry-influxdb');
    expect(flux.length).toBeGreaterThan(0);
    for (const q of flux) {
      const where = `${q.dashboard} / ${q.panel}`;
      const measurements = [...q.text.matchAll(/r\._measurement == "([^"]+)"/g)].map((m) => m[1] ?? '');
      expect(measurements.length, `${where}: no measurement`).toBeGreaterThan(0);
      const fields = [
        ...[...q.text.matchAll(/r\._field == "([^"]+)"/g)].map((m) => m[1] ?? ''),
        ...[...q.text.matchAll(/contains\(value: r\._field, set: \[([^\]]*)\]\)/g)].flatMap((m) => [...(m[1] ?? '').matchAll(/"([^"]+)"/g)].map((f) => f[1] ?? '')),
      ];
      for (const m of measurements) {
        expect(Object.keys(WRITTEN), where).toContain(m);
        for (const f of fields) expect(WRITTEN[m], `${where}: field ${f} of ${m}`).toContain(f);
      }
      if (!q.panel.startsWith('variable')) expect(fields.length, `${where}: no field`).toBeGreaterThan(0);
      for (const tag of [...q.text.matchAll(/r\.([a-z]+) == /g)].map((m) => m[1] ?? '')) {
        if (tag !== '_measurement' && tag !== '_field' && tag !== '_value') expect(TAGS, `${where}: tag ${tag}`).toContain(tag);
      }
    }
  });

  it('every Prometheus query and alert reads a metric the running services expose', async () => {
    const exposed = await exposedMetrics();
    expect(exposed.size).toBeGreaterThan(10);
    const prom = dashboardQueries().filter((q) => q.datasource === 'ferry-prometheus');
    expect(prom.length).toBeGreaterThan(0);
    const alerts = (readConfigFile(join(DOCKER, 'prometheus/alerts.yml'))['groups'] as { rules: { alert: string; expr: string }[] }[])
      .flatMap((g) => g.rules)
      .map((r) => ({ dashboard: 'alerts.yml', panel: r.alert, datasource: 'ferry-prometheus', text: r.expr }));
    for (const q of [...prom, ...alerts]) {
      const names = promMetrics(q.text);
      if (!/\bup\{/.test(q.text)) expect(names.length, `${q.dashboard} / ${q.panel}`).toBeGreaterThan(0);
      for (const name of names) expect(exposed.has(name), `${q.dashboard} / ${q.panel}: ${name}`).toBe(true);
    }
  });

  it('every metric docs/operations.md tells operators to watch is one the running services expose', async () => {
    const exposed = await exposedMetrics();
    // Metric names are in backticks (`name` or `name{labels}`); volume names like ferry_ingestor-data are not.
    const documented = new Set([...readFileSync(join(ROOT, 'docs/operations.md'), 'utf8').matchAll(/`(ferry_[a-z0-9_]+)[`{]/g)].map((m) => m[1] ?? ''));
    expect(documented.size).toBeGreaterThan(10);
    for (const name of documented) expect(exposed.has(name), `docs/operations.md: ${name}`).toBe(true);
  });
});
