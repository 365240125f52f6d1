// The compose profile "cluster" (Redis, a second broker and a second ingestor), checked like the
// rest of docker/ in docker.test.ts: the compose file is read for consistency, then the brokers'
// container command runs here twice, with broker-cluster.yaml and the compose environment, against
// a real redis-server, and the two ingestors' container command with ingestor-cluster.yaml against
// those brokers, that Redis and VictoriaMetrics (standing in for InfluxDB 2 through its v2 write
// API). Only addresses differ: compose host names and fixed ports become loopback and free ports,
// and data dirs become temp dirs.
import { join } from 'node:path';
import { readFileSync, rmSync } from 'node:fs';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brokerConfigSchema } from '@ferry/broker';
import { ingestorConfigSchema } from '@ferry/ingestor';
import type { IngestorConfig, IngestorStats } from '@ferry/ingestor';
import { decodeAck, uplinkTopics } from '@ferry/protocol';
import type { Ack } from '@ferry/protocol';
import { configFromEnv, mergeConfig, parseConfig, readConfigFile } from '@ferry/runtime';
import { findBinary, stablePort, makeTempDir, startRedis, startVictoriaMetrics, waitFor } from '@ferry/testkit';
import type { ServerHandle, VictoriaHandle } from '@ferry/testkit';
import { batch, reading } from '../../apps/ingestor/test/fixtures.js';
import { httpText, metricValue, runCommand, startChild, waitHealthy } from './child.js';
import type { Child } from './child.js';
import {
  compose,
  composeEnv,
  containerCommand,
  DOCKER,
  dockerfile,
  dotenv,
  dotenvText,
  healthcheck,
  healthcheckPort,
  hostFile,
  hostFileEnv,
  initSecrets,
  hostArgs,
  inherited,
  interpolate,
  mountedFiles,
  parseEnvFile,
  runHealthcheck,
  service,
  services,
} from './compose.js';

const CONFIG = '/etc/ferry/broker.yaml';
const INGESTOR_CONFIG = '/etc/ferry/ingestor.yaml';
const PROMETHEUS_CONFIG = '/etc/prometheus/prometheus.yml';
const INGESTORS = ['ingestor', 'ingestor-2'] as const;
/** .env.example with its commented-out cluster lines switched on, as docs/operations.md says. */
const clusterEnv = { ...dotenv, ...parseEnvFile(dotenvText.replace(/^#\s*(?=[A-Z0-9_]+=)/gm, '')) };

function profiles(name: string): string[] {
  return (service(name)['profiles'] as string[] | undefined) ?? [];
}

function publishedPorts(name: string): string[] {
  return ((service(name)['ports'] ?? []) as string[]).map((p) => interpolate(p, clusterEnv));
}

/** `--name value` pairs of a command line (redis-server's options). */
function options(command: string[]): Map<string, string> {
  const found = new Map<string, string>();
  for (let i = 1; i < command.length; i += 2) found.set((command[i] ?? '').replace(/^--/, ''), command[i + 1] ?? '');
  return found;
}

/** An ingestor service's settings as it starts in its container with the cluster lines on: mounted file + compose environment. */
function ingestorSettings(name: string, env: Record<string, string> = clusterEnv): IngestorConfig {
  const file = readConfigFile(mountedFiles(name, env).get(INGESTOR_CONFIG) ?? '');
  return parseConfig(ingestorConfigSchema, mergeConfig(file, configFromEnv(composeEnv(name, env), 'FERRY_INGESTOR__')), name);
}

function tokenFileOf(config: IngestorConfig): string {
  const file = config.http === false ? undefined : config.http.tokenFile;
  if (file === undefined) throw new Error(`${config.ingestorId}: no http.tokenFile`);
  return file;
}

/** The named volume a service mounts at `path` in its container. */
function namedVolume(name: string, path: string): string | undefined {
  return ((service(name)['volumes'] ?? []) as string[]).map((v) => v.split(':')).find(([host, container]) => container === path && !host?.startsWith('.'))?.[0];
}

interface ScrapeJob {
  readonly job_name: string;
  readonly authorization?: { credentials_file?: string };
  readonly static_configs?: { targets: string[] }[];
}

function scrapeJobs(file: string): ScrapeJob[] {
  return readConfigFile(file)['scrape_configs'] as ScrapeJob[];
}

describe('docker/compose.yaml profile "cluster"', () => {
  it('is turned on by the commented-out lines of .env.example, and only Redis, broker-2 and ingestor-2 belong to it', () => {
    expect(clusterEnv['COMPOSE_PROFILES']).toBe('cluster');
    expect(dotenv['COMPOSE_PROFILES']).toBeUndefined();
    const inProfile = Object.keys(services).filter((name) => profiles(name).length > 0);
    expect(inProfile.sort()).toEqual(['broker-2', 'ingestor-2', 'redis']);
    for (const name of inProfile) expect(profiles(name), name).toEqual(['cluster']);
  });

  it('runs Redis with AOF and an fsync before every reply on a named volume, with a healthcheck, and publishes no port', () => {
    const redis = service('redis');
    const command = redis['command'] as string[];
    expect(command[0]).toBe('redis-server');
    // The ingestors ack a batch once Redis answered its dedupe records: an answered record must
    // survive a crash, or a resend is written twice (docs/scaling.md).
    expect(options(command).get('appendonly')).toBe('yes');
    expect(options(command).get('appendfsync')).toBe('always');
    expect(redis['volumes']).toEqual(['redis-data:/data']);
    expect(Object.keys(compose['volumes'] as Record<string, unknown>)).toContain('redis-data');
    expect(healthcheck('redis')).toEqual(['redis-cli', 'ping']);
    expect(redis['ports']).toBeUndefined();
    expect(redis['restart']).toBe('unless-stopped');
  });

  it('broker-2 is the broker image with the same command, environment and healthcheck, on its own port, after Redis', () => {
    const first = service('broker');
    const second = service('broker-2');
    expect(second['build']).toEqual(first['build']);
    expect(second['image']).toBe(first['image']);
    expect(second['command']).toEqual(first['command']);
    expect(second['command']).toEqual(inherited(dockerfile.stages, 'broker', 'CMD'));
    expect(second['environment']).toEqual(first['environment']);
    expect(second['healthcheck']).toEqual(first['healthcheck']);
    expect(second['restart']).toBe('unless-stopped');
    expect(second['depends_on']).toEqual({ redis: { condition: 'service_healthy' } });
    const [hostPort, containerPort] = (publishedPorts('broker-2')[0] ?? '').split(':');
    expect(Number(containerPort)).toBe(8883);
    expect(hostPort).not.toBe(publishedPorts('broker')[0]?.split(':')[0]);
    expect(mountedFiles('broker-2').get(CONFIG)).toBe(join(DOCKER, 'config/broker-cluster.yaml'));
  });

  it('joins the first broker and the first ingestor to the cluster with the cluster lines, and leaves them on their single files without them', () => {
    expect(mountedFiles('broker', clusterEnv).get(CONFIG)).toBe(join(DOCKER, 'config/broker-cluster.yaml'));
    expect(mountedFiles('broker', dotenv).get(CONFIG)).toBe(join(DOCKER, 'config/broker.yaml'));
    expect(mountedFiles('ingestor', clusterEnv).get(INGESTOR_CONFIG)).toBe(join(DOCKER, 'config/ingestor-cluster.yaml'));
    expect(mountedFiles('ingestor', dotenv).get(INGESTOR_CONFIG)).toBe(join(DOCKER, 'config/ingestor.yaml'));
    expect(ingestorSettings('ingestor', dotenv).state.redisUrl).toBeUndefined();
    // The first broker keeps its data volume and the first ingestor keeps connecting to it.
    expect(service('broker')['volumes']).toContain('broker-data:/var/lib/ferry');
    expect(composeEnv('ingestor', clusterEnv)['FERRY_INGESTOR__BROKER__URL']).toBe('mqtt://broker:1884');
  });

  it('ingestor-2 is the ingestor image with the same command, healthcheck, secret and settings, its own id, volume and broker, after Redis', () => {
    const first = service('ingestor');
    const second = service('ingestor-2');
    for (const key of ['build', 'image', 'command', 'healthcheck', 'restart', 'secrets']) expect(second[key], key).toEqual(first[key]);
    expect(second['command']).toEqual(inherited(dockerfile.stages, 'ingestor', 'CMD'));
    expect(second['ports']).toBeUndefined();
    const { FERRY_INGESTOR__INGESTOR_ID: id, FERRY_INGESTOR__BROKER__URL: brokerUrl, ...settings } = composeEnv('ingestor-2', clusterEnv);
    const { FERRY_INGESTOR__BROKER__URL: firstBrokerUrl, ...firstSettings } = composeEnv('ingestor', clusterEnv);
    expect(settings).toEqual(firstSettings);
    expect(id).toBe('ingestor-2');
    // The second broker's plain listener, as the first ingestor uses the first broker's.
    expect(brokerUrl).toBe(firstBrokerUrl?.replace('//broker:', '//broker-2:'));
    // The cluster file whatever .env says: a second ingestor outside Redis would write every batch again.
    expect(mountedFiles('ingestor-2', dotenv).get(INGESTOR_CONFIG)).toBe(join(DOCKER, 'config/ingestor-cluster.yaml'));
    expect(second['depends_on']).toEqual({
      'broker-2': { condition: 'service_healthy' },
      influxdb: { condition: 'service_healthy' },
      redis: { condition: 'service_healthy' },
    });
    // Its own data dir: a named volume of its own at the data dir its settings name.
    const [one, two] = INGESTORS.map((name) => namedVolume(name, ingestorSettings(name).dataDir));
    expect(one).toBe('ingestor-data');
    expect(two).toBeDefined();
    expect(two).not.toBe(one);
    expect(Object.keys(compose['volumes'] as Record<string, unknown>)).toContain(two);
  });

  it('ingestor-cluster.yaml is ingestor.yaml with the compose Redis for shared state: one fleet of two ingestors, each its own MQTT session', () => {
    const single = readConfigFile(join(DOCKER, 'config/ingestor.yaml'));
    const { state, ...rest } = readConfigFile(join(DOCKER, 'config/ingestor-cluster.yaml'));
    expect(rest).toEqual(single);
    const url = new URL((state as { redisUrl: string }).redisUrl);
    expect(url.hostname).toBe('redis');
    expect(Number(url.port || 6379)).toBe(healthcheckPort(healthcheck('redis')));
    // A database of their own, apart from the brokers' sessions.
    const brokers = new URL((readConfigFile(join(DOCKER, 'config/broker-cluster.yaml'))['cluster'] as { redisUrl: string }).redisUrl);
    expect(url.host).toBe(brokers.host);
    expect(url.pathname).not.toBe(brokers.pathname || '/0');
    const [one, two] = INGESTORS.map((name) => ingestorSettings(name));
    if (!one || !two) throw new Error('two ingestors');
    expect([one.ingestorId, two.ingestorId]).toEqual(['ingestor-1', 'ingestor-2']);
    expect(one.broker.clientId).not.toBe(two.broker.clientId);
    expect(two.state).toEqual(one.state);
    expect(one.state.redisUrl).toBe(url.toString());
    // Settings refused together with state.redisUrl are off, or the ingestors would not start.
    expect(one.partition).toBeUndefined();
    expect(one.direct).toBeUndefined();
    expect(one.processing.rollups).toEqual([]);
  });

  it('has Prometheus scrape broker-2 and ingestor-2 with the cluster lines, in the jobs the alerts watch, with the ops token they read', () => {
    expect(mountedFiles('prometheus', dotenv).get(PROMETHEUS_CONFIG)).toBe(join(DOCKER, 'prometheus/prometheus.yml'));
    const clusterFile = mountedFiles('prometheus', clusterEnv).get(PROMETHEUS_CONFIG) ?? '';
    expect(clusterFile).toBe(join(DOCKER, 'prometheus/prometheus-cluster.yml'));
    const single = scrapeJobs(join(DOCKER, 'prometheus/prometheus.yml'));
    const cluster = scrapeJobs(clusterFile);
    const withoutTargets = (jobs: ScrapeJob[]): unknown[] => jobs.map(({ static_configs: _, ...job }) => job);
    expect(withoutTargets(cluster)).toEqual(withoutTargets(single));
    const { scrape_configs: _c, ...clusterRest } = readConfigFile(clusterFile);
    const { scrape_configs: _s, ...singleRest } = readConfigFile(join(DOCKER, 'prometheus/prometheus.yml'));
    expect(clusterRest).toEqual(singleRest);
    const httpPort = (file: string): number => (readConfigFile(join(DOCKER, 'config', file))['http'] as { port: number }).port;
    const added: Record<string, string[]> = {
      'ferry-broker': [`broker-2:${httpPort('broker-cluster.yaml')}`],
      'ferry-ingestor': [`ingestor-2:${httpPort('ingestor-cluster.yaml')}`],
    };
    const targets = (job: ScrapeJob | undefined): string[] => (job?.static_configs ?? []).flatMap((c) => c.targets);
    for (const job of cluster) {
      expect(targets(job), job.job_name).toEqual([...targets(single.find((j) => j.job_name === job.job_name)), ...(added[job.job_name] ?? [])]);
    }
    // Every target answers on the port its healthcheck checks, and every scrape sends the token
    // file ingestor-2 and broker-2 read (the same compose secret; paths only, nothing is run).
    expect(healthcheckPort(healthcheck('ingestor-2'))).toBe(httpPort('ingestor-cluster.yaml'));
    const generated = '/generated-by-init-secrets';
    const secondToken = hostFile('ingestor-2', tokenFileOf(ingestorSettings('ingestor-2')), generated, clusterEnv);
    for (const job of cluster) expect(hostFile('prometheus', job.authorization?.credentials_file ?? '', generated, clusterEnv), job.job_name).toBe(secondToken);
    expect(hostFile('broker-2', '/run/secrets/ops_token', generated, clusterEnv)).toBe(secondToken);
  });

  it('broker-cluster.yaml is broker.yaml with the compose Redis instead of a data dir, valid for the broker schema', () => {
    const single = readConfigFile(join(DOCKER, 'config/broker.yaml'));
    const cluster = readConfigFile(join(DOCKER, 'config/broker-cluster.yaml'));
    const { cluster: redis, ...rest } = cluster;
    const { dataDir, ...singleRest } = single;
    expect(dataDir).toBeDefined();
    expect(rest).toEqual(singleRest);
    const parsed = parseConfig(brokerConfigSchema, mergeConfig(cluster, configFromEnv(composeEnv('broker-2'), 'FERRY_BROKER__')), 'broker-cluster.yaml');
    expect(parsed.persistence).toBeUndefined();
    expect(parsed.auth?.users?.length).toBeGreaterThan(0);
    const url = new URL((redis as { redisUrl: string }).redisUrl);
    // The Redis service, on the port its healthcheck (redis-cli's default) checks.
    expect(url.hostname).toBe('redis');
    expect(Number(url.port || 6379)).toBe(healthcheckPort(healthcheck('redis')));
  });
});

// --- the brokers' command, twice, against a real Redis ---

interface RunningBroker {
  readonly child: Child;
  readonly mqttUrl: string;
  readonly httpPort: number;
}

let work: string;
let secrets: ReturnType<typeof initSecrets>;
let redis: ServerHandle;
let brokers: RunningBroker[] = [];
const clients: MqttClient[] = [];

/** The compose Redis URL with its address swapped for the test Redis (database and the rest kept). */
function hereRedisUrl(composeUrl: string): string {
  const url = new URL(composeUrl);
  const here = new URL(redis.url);
  url.hostname = here.hostname;
  url.port = here.port;
  return url.toString();
}

/** Starts the container command of `name` here; healthy is up to the caller to wait for. */
async function startClusterBroker(name: string): Promise<RunningBroker> {
  const mounts = mountedFiles(name, clusterEnv);
  const composeUrl = (readConfigFile(mounts.get(CONFIG) ?? '')['cluster'] as { redisUrl: string }).redisUrl;
  const port = await stablePort();
  const httpPort = await stablePort();
  const child = startChild({
    command: process.execPath,
    args: hostArgs(containerCommand(name), mounts),
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      NODE_ENV: 'production',
      ...composeEnv(name, clusterEnv),
      // aclFile, tls.cert, tls.key and http.tokenFile: the files compose mounts there.
      ...hostFileEnv(name, CONFIG, 'FERRY_BROKER__', work, clusterEnv),
      FERRY_BROKER__LISTEN__HOST: '127.0.0.1',
      FERRY_BROKER__LISTEN__PORT: String(port),
      FERRY_BROKER__TLS__HOST: '127.0.0.1',
      FERRY_BROKER__TLS__PORT: String(await stablePort()),
      FERRY_BROKER__HTTP__HOST: '127.0.0.1',
      FERRY_BROKER__HTTP__PORT: String(httpPort),
      FERRY_BROKER__CLUSTER__REDIS_URL: hereRedisUrl(composeUrl),
    },
    logFile: join(work, `${name}.log`),
  });
  return { child, mqttUrl: `mqtt://127.0.0.1:${port}`, httpPort };
}

async function healthy(running: RunningBroker, name: string): Promise<RunningBroker> {
  await waitHealthy(`http://127.0.0.1:${running.httpPort}/healthz`, running.child, name);
  return running;
}

interface Account {
  readonly username: string;
  readonly password: string;
}

/** Broker accounts from .env.example: the ingestor's, the first gateway site's, and every site's. */
function accounts(): { ingestor: Account; site: Account; sites: Account[] } {
  const users = JSON.parse(clusterEnv['FERRY_BROKER_USERS'] ?? '[]') as Account[];
  const ingestor = users.find((u) => u.username === clusterEnv['FERRY_INGESTOR_MQTT_USERNAME']);
  const sites = users.filter((u) => u !== ingestor);
  const site = sites[0];
  if (!ingestor || !site) throw new Error('.env.example needs the ingestor account and a site account in FERRY_BROKER_USERS');
  return { ingestor, site, sites };
}

async function connect(url: string, who: Account): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, clientId: `cluster-test-${who.username}`, ...who });
  clients.push(client);
  return client;
}

/** Publishes on `from` until the subscriber on the other broker has it (subscriptions reach the other broker through Redis). */
async function crosses(from: MqttClient, to: MqttClient, topic: string, payload: string): Promise<string[]> {
  const seen: string[] = [];
  to.on('message', (t, p) => {
    if (t === topic) seen.push(p.toString());
  });
  await to.subscribeAsync(topic, { qos: 1 });
  await waitFor(
    async () => {
      await from.publishAsync(topic, payload, { qos: 1 });
      return seen.length > 0;
    },
    { timeoutMs: 30_000, intervalMs: 250, what: `${topic} at the subscriber on the other broker` },
  );
  return seen;
}

describe('the clustered brokers run outside Docker against a real Redis', () => {
  beforeAll(async () => {
    work = await makeTempDir('docker-cluster');
    secrets = initSecrets(work);
    // As the compose Redis runs: AOF with an fsync per write.
    redis = await startRedis({ persistent: true });
    // compose starts `broker` without waiting for Redis (it has no depends_on on a profile
    // service): here it starts while Redis is down, and must become healthy once Redis is up.
    await redis.kill();
    const first = await startClusterBroker('broker');
    await waitFor(() => first.child.log().includes('"event":"cluster_redis_error"'), { timeoutMs: 60_000, what: 'the first broker to find Redis down' });
    await redis.restart();
    // broker-2 has depends_on redis (service_healthy): it starts after Redis.
    brokers = [await healthy(first, 'broker'), await healthy(await startClusterBroker('broker-2'), 'broker-2')];
  }, 180_000);

  afterAll(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    for (const running of brokers) await running.child.stop();
    await redis?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('the first broker, started while Redis was down, logged the lost connection and came up once Redis did', () => {
    const log = (brokers[0] as RunningBroker).child.log();
    expect(log).toContain('"event":"cluster_redis_error"');
    expect(log.indexOf('"event":"cluster_redis_error"')).toBeLessThan(log.indexOf('"event":"listening"'));
  });

  it('both brokers are healthy by their compose healthcheck and keep their state in Redis', () => {
    for (const [i, name] of (['broker', 'broker-2'] as const).entries()) {
      const running = brokers[i] as RunningBroker;
      const command = healthcheck(name);
      expect(runHealthcheck(command, healthcheckPort(command), running.httpPort), name).toBe(0);
      expect(running.child.log(), name).toMatch(/"event":"listening".*"persistence":"redis"/);
    }
    // Redis's own healthcheck, aimed at the test Redis; and it fails when nothing answers.
    const [binary, ...args] = healthcheck('redis');
    const port = new URL(redis.url).port;
    const ping = runCommand(findBinary(binary ?? ''), ['-p', port, ...args]);
    expect(ping.code).toBe(0);
    expect(ping.stdout.trim()).toBe('PONG');
    expect(runCommand(findBinary(binary ?? ''), ['-p', '1', ...args]).code).not.toBe(0);
  });

  it("an ingestor's ack published on the first broker reaches a gateway on broker-2, and a batch the other way", async () => {
    const [first, second] = brokers as [RunningBroker, RunningBroker];
    const { ingestor: ingestorAccount, site: siteAccount } = accounts();
    const site = siteAccount.username;
    const ingestor = await connect(first.mqttUrl, ingestorAccount);
    const gateway = await connect(second.mqttUrl, siteAccount);
    expect(await crosses(ingestor, gateway, uplinkTopics.ack(site), 'ack across')).toContain('ack across');
    expect(await crosses(gateway, ingestor, uplinkTopics.batch(site), 'batch across')).toContain('batch across');
  }, 90_000);

  // After the test above: its raw publishes on a batch topic reach no ingestor (none has a session yet).
  describe('and both ingestors, with ingestor-cluster.yaml, against them and that Redis', () => {
    let vm: VictoriaHandle;
    let ingestors: RunningIngestor[] = [];

    /** Compose addresses (`//host:port` in the service's environment) mapped to the servers here; an unmapped one is an error. */
    function hereAddresses(env: Record<string, string>): Record<string, string> {
      const [first, second] = brokers as [RunningBroker, RunningBroker];
      const here: Record<string, string> = {
        'broker:1884': new URL(first.mqttUrl).host,
        'broker-2:1884': new URL(second.mqttUrl).host,
        'influxdb:8086': new URL(vm.url).host,
      };
      return Object.fromEntries(
        Object.entries(env).map(([key, value]) => [
          key,
          value.replace(/^([a-z]+:\/\/)([^/]+)/, (_, scheme: string, address: string) => {
            const mapped = here[address];
            if (mapped === undefined) throw new Error(`${key}: no server here for ${address}`);
            return `${scheme}${mapped}`;
          }),
        ]),
      );
    }

    /** The container command of an ingestor service, here, until healthy. */
    async function startClusterIngestor(name: (typeof INGESTORS)[number]): Promise<RunningIngestor> {
      const mounts = mountedFiles(name, clusterEnv);
      const composeUrl = (readConfigFile(mounts.get(INGESTOR_CONFIG) ?? '')['state'] as { redisUrl: string }).redisUrl;
      const httpPort = await stablePort();
      const child = startChild({
        command: process.execPath,
        args: hostArgs(containerCommand(name), mounts),
        env: {
          PATH: process.env['PATH'] ?? '/usr/bin:/bin',
          NODE_ENV: 'production',
          ...hereAddresses(composeEnv(name, clusterEnv)),
          // http.tokenFile: the compose secret.
          ...hostFileEnv(name, INGESTOR_CONFIG, 'FERRY_INGESTOR__', work, clusterEnv),
          FERRY_INGESTOR__HTTP__HOST: '127.0.0.1',
          FERRY_INGESTOR__HTTP__PORT: String(httpPort),
          FERRY_INGESTOR__DATA_DIR: join(work, name),
          FERRY_INGESTOR__STATE__REDIS_URL: hereRedisUrl(composeUrl),
        },
        logFile: join(work, `${name}.log`),
      });
      const running = { name, child, httpPort, url: `http://127.0.0.1:${httpPort}` };
      await waitHealthy(`${running.url}/healthz`, child, name);
      return running;
    }

    beforeAll(async () => {
      vm = await startVictoriaMetrics();
      // compose starts both after Redis, their broker and InfluxDB are healthy: all are, here.
      ingestors = await Promise.all(INGESTORS.map(startClusterIngestor));
    }, 120_000);

    afterAll(async () => {
      await Promise.all(ingestors.map((running) => running.child.stop()));
      await vm?.stop();
    });

    /** Each ingestor's counters and log tail, for a failure message. */
    async function whatIngestorsSaw(): Promise<string> {
      const seen = await Promise.all(
        ingestors.map(async (running) => `--- ${running.name}: ${JSON.stringify({ ...(await stats(running)), gateways: undefined })}\n${running.child.log().slice(-3000)}`),
      );
      return seen.join('\n');
    }

    it('both are healthy by their compose healthcheck, subscribed, and see each other as one fleet, in their own Redis database', async () => {
      for (const running of ingestors) {
        const command = healthcheck(running.name);
        expect(runHealthcheck(command, healthcheckPort(command), running.httpPort), running.name).toBe(0);
      }
      // /healthz answers once the broker connection and the database are up; the batch
      // subscription (SUBACK) is what "ingestor ready" waits for.
      for (const running of ingestors) {
        await waitFor(() => running.child.log().includes('"msg":"ingestor ready"'), { timeoutMs: 10_000, what: `${running.name} subscribed (ingestor ready)` }).catch(async (err: unknown) => {
          throw new Error(`${(err as Error).message}\n${await whatIngestorsSaw()}`);
        });
      }
      // Compose gives the ingestors no http.tokens, so /api answers loopback callers only (inside
      // the container); here the test is on loopback too.
      const fleets = await Promise.all(
        ingestors.map((running) =>
          waitFor(
            async () => {
              const members = (await stats(running)).cluster?.members ?? [];
              return members.length === 2 ? members : undefined;
            },
            { timeoutMs: 15_000, intervalMs: 100, what: `${running.name} to see two members` },
          ),
        ),
      );
      const [seenByFirst, seenBySecond] = fleets.map((members) => [...members].sort());
      expect(seenBySecond).toEqual(seenByFirst);
      expect(seenByFirst?.map((m) => m.split('#')[0])).toEqual(['ingestor-1', 'ingestor-2']);
      for (const running of ingestors) expect((await stats(running)).cluster?.mode, running.name).toBe('leases');
      // Their keys are in the database ingestor-cluster.yaml names; the brokers' database has none of them.
      const database = new URL(ingestorSettings('ingestor').state.redisUrl ?? '').pathname.slice(1);
      const prefix = ingestorSettings('ingestor').state.keyPrefix;
      expect(redisKeys(database, `${prefix}*`).length).toBeGreaterThan(0);
      expect(redisKeys('0', `${prefix}*`)).toEqual([]);
    });

    it('answers the Prometheus scrape with the token file Prometheus mounts, and only with it', async () => {
      const job = scrapeJobs(mountedFiles('prometheus', clusterEnv).get(PROMETHEUS_CONFIG) ?? '').find((j) => j.job_name === 'ferry-ingestor');
      const token = readFileSync(hostFile('prometheus', job?.authorization?.credentials_file ?? '', work, clusterEnv), 'utf8').trim();
      expect(token).toBe(secrets.token);
      for (const running of ingestors) {
        expect((await httpText(`${running.url}/metrics`))?.status, running.name).toBe(401);
        const scraped = await httpText(`${running.url}/metrics`, token);
        expect(scraped?.status, running.name).toBe(200);
        expect(metricValue(scraped?.body ?? '', 'ferry_ingestor_cluster_members'), running.name).toBe(2);
      }
    });

    it('writes a batch a gateway publishes on broker-2 once, by one ingestor, and acks it; the resend is acked as duplicates and not written again', async () => {
      const [second] = brokers.slice(1) as [RunningBroker];
      // A site the broker test above did not use.
      const account = accounts().sites.at(-1) as Account;
      const gatewayId = account.username;
      const gateway = await connect(second.mqttUrl, account);
      const acks: Ack[] = [];
      gateway.on('message', (_topic, payload) => {
        const ack = decodeAck(payload);
        if (ack) acks.push(ack);
      });
      await gateway.subscribeAsync(uplinkTopics.ack(gatewayId), { qos: 1 });
      const deviceId = 'cluster-dev-1';
      const items = [1, 2, 3, 4, 5].map((seq) => reading(seq, { deviceId }));
      const sendUntilAcked = async (count: number): Promise<Ack> => {
        await gateway.publishAsync(uplinkTopics.batch(gatewayId), batch(gatewayId, 1, items), { qos: 1 });
        try {
          return await waitFor(() => (acks.length >= count ? acks[count - 1] : undefined), { timeoutMs: 20_000, what: `ack ${count} of ${gatewayId} batch 1` });
        } catch (err) {
          throw new Error(`${(err as Error).message}\n${await whatIngestorsSaw()}`);
        }
      };

      const first = await sendUntilAcked(1);
      expect(first).toMatchObject({ gatewayId, batchId: 1, accepted: items.length, duplicates: 0, rejected: [] });
      const samples = async (): Promise<number> => {
        await vm.flush();
        const series = await vm.exportSeries(`{__name__="telemetry_temperature",device="${deviceId}"}`);
        return series.reduce((sum, s) => sum + s.values.length, 0);
      };
      // Acked after the database confirmed: every sample is there, once (VictoriaMetrics keeps a second write as a second sample).
      expect(await samples()).toBe(items.length);
      const written = await Promise.all(ingestors.map(async (running) => (await stats(running)).written));
      expect([...written].sort((a, b) => a - b)).toEqual([0, items.length]);

      // A gateway that lost the ack sends the batch again: whichever ingestor takes it finds the records in Redis.
      const again = await sendUntilAcked(2);
      expect(again).toMatchObject({ gatewayId, batchId: 1, accepted: 0, duplicates: items.length, rejected: [] });
      expect(await samples()).toBe(items.length);
      for (const running of ingestors) {
        const counts = await json<{ gateways: Record<string, { written: number }> }>(running, '/api/fleet/counts');
        expect(counts.gateways[gatewayId]?.written, running.name).toBe(items.length);
      }
    }, 60_000);
  });
});

interface RunningIngestor {
  readonly name: (typeof INGESTORS)[number];
  readonly child: Child;
  readonly httpPort: number;
  readonly url: string;
}

async function json<T>(running: RunningIngestor, path: string): Promise<T> {
  const res = await httpText(`${running.url}${path}`);
  if (res?.status !== 200) throw new Error(`${running.name} ${path}: ${res?.status ?? 'no answer'} ${res?.body ?? ''}`);
  return JSON.parse(res.body) as T;
}

function stats(running: RunningIngestor): Promise<IngestorStats> {
  return json(running, '/api/stats');
}

/** Keys of one database of the test Redis matching `pattern`, read with redis-cli. */
function redisKeys(database: string, pattern: string): string[] {
  const result = runCommand(findBinary('redis-cli'), ['-p', new URL(redis.url).port, '-n', database, '--scan', '--pattern', pattern]);
  if (result.code !== 0) throw new Error(`redis-cli: ${result.stderr}`);
  return result.stdout.split('\n').filter((line) => line !== '');
}
