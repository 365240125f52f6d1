// The compose profile "cluster" (Redis and a second broker), checked like the rest of docker/ in
// docker.test.ts: the compose file is read for consistency, then the brokers' container command
// runs here twice, with broker-cluster.yaml and the compose environment, against a real
// redis-server. Only addresses differ: redis:6379 and the brokers' fixed ports become loopback
// and free ports.
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brokerConfigSchema } from '@ferry/broker';
import { uplinkTopics } from '@ferry/protocol';
import { configFromEnv, mergeConfig, parseConfig, readConfigFile } from '@ferry/runtime';
import { findBinary, freePort, makeTempDir, startRedis, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { runCommand, startChild, waitHealthy } from './child.js';
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
/** .env.example with its commented-out cluster lines switched on, as docs/operations.md says. */
const clusterEnv = { ...dotenv, ...parseEnvFile(dotenvText.replace(/^#\s*(?=[A-Z0-9_]+=)/gm, '')) };

function profiles(name: string): string[] {
  return (service(name)['profiles'] as string[] | undefined) ?? [];
}

function publishedPorts(name: string): string[] {
  return ((service(name)['ports'] ?? []) as string[]).map((p) => interpolate(p, clusterEnv));
}

describe('docker/compose.yaml profile "cluster"', () => {
  it('is turned on by the commented-out lines of .env.example, and only Redis and broker-2 belong to it', () => {
    expect(clusterEnv['COMPOSE_PROFILES']).toBe('cluster');
    expect(dotenv['COMPOSE_PROFILES']).toBeUndefined();
    const inProfile = Object.keys(services).filter((name) => profiles(name).length > 0);
    expect(inProfile.sort()).toEqual(['broker-2', 'redis']);
    for (const name of inProfile) expect(profiles(name), name).toEqual(['cluster']);
  });

  it('runs Redis with AOF on a named volume, with a healthcheck, and publishes no port', () => {
    const redis = service('redis');
    const command = redis['command'] as string[];
    expect(command[0]).toBe('redis-server');
    expect(command.join(' ')).toContain('--appendonly yes');
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

  it('joins the first broker to the cluster with the cluster lines, and leaves it on broker.yaml without them', () => {
    expect(mountedFiles('broker', clusterEnv).get(CONFIG)).toBe(join(DOCKER, 'config/broker-cluster.yaml'));
    expect(mountedFiles('broker', dotenv).get(CONFIG)).toBe(join(DOCKER, 'config/broker.yaml'));
    // The first broker keeps its data volume and the ingestor keeps connecting to it.
    expect(service('broker')['volumes']).toContain('broker-data:/var/lib/ferry');
    expect(composeEnv('ingestor', clusterEnv)['FERRY_INGESTOR__BROKER__URL']).toBe('mqtt://broker:1884');
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
  const port = await freePort();
  const httpPort = await freePort();
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
      FERRY_BROKER__TLS__PORT: String(await freePort()),
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

/** Broker accounts from .env.example: the ingestor's, and the first gateway site's. */
function accounts(): { ingestor: Account; site: Account } {
  const users = JSON.parse(clusterEnv['FERRY_BROKER_USERS'] ?? '[]') as Account[];
  const ingestor = users.find((u) => u.username === clusterEnv['FERRY_INGESTOR_MQTT_USERNAME']);
  const site = users.find((u) => u !== ingestor);
  if (!ingestor || !site) throw new Error('.env.example needs the ingestor account and a site account in FERRY_BROKER_USERS');
  return { ingestor, site };
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
    initSecrets(work);
    redis = await startRedis();
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
});
