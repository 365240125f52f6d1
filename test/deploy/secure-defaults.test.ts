// Issue #22, the broker's part: one site cannot read or wipe another's data in the deployment we
// ship. The broker runs as its container would (docker/compose.yaml's command, config files and
// environment from .env.example; only ports, the data dir and mounted paths mapped to this host),
// and the accounts of .env.example try each other's topics.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uplinkTopics } from '@ferry/protocol';
import { findBinary, stablePort, makeTempDir, waitFor } from '@ferry/testkit';
import { httpText, runCommand, startChild, waitHealthy } from './child.js';
import type { Child } from './child.js';
import { composeEnv, containerCommand, DOCKER, dotenv, hostArgs, hostFileEnv, initSecrets, mountedFiles, REPO_CLI as cli } from './compose.js';

interface Account {
  readonly username: string;
  readonly password: string;
}

const CONFIG = '/etc/ferry/broker.yaml';
const accounts = JSON.parse(dotenv['FERRY_BROKER_USERS'] ?? '[]') as Account[];

function account(username: string | undefined): Account {
  const found = accounts.find((a) => a.username === username);
  if (!found) throw new Error(`.env.example has no broker account ${String(username)} in FERRY_BROKER_USERS`);
  return found;
}

const ingestorAccount = account(dotenv['FERRY_INGESTOR_MQTT_USERNAME']);
const [site1, site2] = accounts.filter((a) => a !== ingestorAccount) as [Account | undefined, Account | undefined];

let work: string;
let secrets: ReturnType<typeof initSecrets>;
let broker: Child;
let brokerUrl: string;
let tlsUrl: string;
let healthUrl: string;
let metricsUrl: string;
const clients: MqttClient[] = [];

/** The broker container's environment, on loopback and free ports. */
async function brokerEnv(): Promise<{ env: Record<string, string>; port: number; httpPort: number }> {
  const port = await stablePort();
  const httpPort = await stablePort();
  // The TLS certificate and ops token it reads; the ACL file only where a test wants the shipped one.
  const { FERRY_BROKER__ACL_FILE: _acl, ...files } = hostFileEnv('broker', CONFIG, 'FERRY_BROKER__', work);
  const env = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    NODE_ENV: 'production',
    ...composeEnv('broker'),
    ...files,
    FERRY_BROKER__LISTEN__HOST: '127.0.0.1',
    FERRY_BROKER__LISTEN__PORT: String(port),
    FERRY_BROKER__TLS__HOST: '127.0.0.1',
    FERRY_BROKER__TLS__PORT: String(await stablePort()),
    FERRY_BROKER__HTTP__HOST: '127.0.0.1',
    FERRY_BROKER__HTTP__PORT: String(httpPort),
    FERRY_BROKER__DATA_DIR: join(work, `broker-${port}`),
  };
  return { env, port, httpPort };
}

/** The broker's container command with `config` in place of the mounted broker.yaml. */
function brokerArgs(config?: string): string[] {
  const mounts = mountedFiles('broker');
  if (config !== undefined) mounts.set(CONFIG, config);
  return hostArgs(containerCommand('broker'), mounts);
}

async function connect(who: Account, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(brokerUrl, { protocolVersion: 4, reconnectPeriod: 0, username: who.username, password: who.password, ...options }, false);
  clients.push(client);
  return client;
}

function messages(client: MqttClient): { topic: string; payload: string }[] {
  const seen: { topic: string; payload: string }[] = [];
  client.on('message', (topic, payload) => seen.push({ topic, payload: payload.toString() }));
  return seen;
}

function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()));
}

/** ferry_broker_acl_denied_total{action} from the broker's /metrics. */
async function denied(action: string): Promise<number> {
  const res = await httpText(metricsUrl, secrets.token);
  const line = (res?.body ?? '').split('\n').find((l) => l.startsWith(`ferry_broker_acl_denied_total{action="${action}"}`));
  return line === undefined ? 0 : Number(line.split(/\s+/).pop());
}

beforeAll(async () => {
  work = await makeTempDir('secure-defaults');
  secrets = initSecrets(work);
  if (!site1 || !site2) throw new Error('.env.example needs two gateway site accounts in FERRY_BROKER_USERS');
  const { env, port, httpPort } = await brokerEnv();
  broker = startChild({
    command: process.execPath,
    args: brokerArgs(),
    // The ACL file compose mounts, where the shipped broker.yaml expects it.
    env: { ...env, FERRY_BROKER__ACL_FILE: hostFileEnv('broker', CONFIG, 'FERRY_BROKER__', work)['FERRY_BROKER__ACL_FILE'] ?? '' },
    logFile: join(work, 'broker.log'),
  });
  await waitHealthy(`http://127.0.0.1:${httpPort}/healthz`, broker, 'broker');
  brokerUrl = `mqtt://127.0.0.1:${port}`;
  tlsUrl = `mqtts://localhost:${env.FERRY_BROKER__TLS__PORT}`;
  healthUrl = `http://127.0.0.1:${httpPort}/healthz`;
  metricsUrl = `http://127.0.0.1:${httpPort}/metrics`;
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  await broker?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the shipped broker (docker/config/broker.yaml, acl.conf, .env.example accounts)', () => {
  it('lets a site do its gateway job: publish its own batch and status, receive its own acks', async () => {
    const gw1 = account(site1?.username);
    const ingestor = await connect(ingestorAccount, { clientId: 'ferry-ingestor-secure' });
    const atIngestor = messages(ingestor);
    expect((await ingestor.subscribeAsync([uplinkTopics.allBatches, uplinkTopics.allStatuses], { qos: 1 })).map((g) => g.qos)).toEqual([1, 1]);

    // The gateway's default client id, ferry-gw-<gatewayId>; its rights come from its username.
    const gateway = await connect(gw1, { clientId: `ferry-gw-${gw1.username}`, clean: false });
    const atGateway = messages(gateway);
    expect((await gateway.subscribeAsync(uplinkTopics.ack(gw1.username), { qos: 1 }))[0]?.qos).toBe(1);
    await gateway.publishAsync(uplinkTopics.batch(gw1.username), 'batch 1', { qos: 1 });
    await gateway.publishAsync(uplinkTopics.status(gw1.username), 'online', { qos: 1, retain: true });
    await waitFor(() => atIngestor.length === 2, { what: 'the batch and status at the ingestor' });
    expect(atIngestor.map((m) => m.topic).sort()).toEqual([uplinkTopics.batch(gw1.username), uplinkTopics.status(gw1.username)].sort());

    await ingestor.publishAsync(uplinkTopics.ack(gw1.username), 'ack 1', { qos: 1 });
    await waitFor(() => atGateway.length === 1, { what: 'the ack at the gateway' });
    expect(gateway.connected).toBe(true);
  });

  it("does not let site-1 subscribe to every site's batches or to site-2's", async () => {
    const [gw1, gw2] = [account(site1?.username), account(site2?.username)];
    const intruder = await connect(gw1, { clientId: 'intruder-subscribe' });
    const seen = messages(intruder);
    const deniedBefore = await denied('subscribe');
    // MQTT.js reports a SUBACK failure (0x80) as an error; the connection stays up.
    await expect(intruder.subscribeAsync(uplinkTopics.allBatches, { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await expect(intruder.subscribeAsync(uplinkTopics.batch(gw2.username), { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await expect(intruder.subscribeAsync('#', { qos: 1 })).rejects.toThrow(/Subscribe error/);
    expect(intruder.connected).toBe(true);
    expect(await denied('subscribe')).toBe(deniedBefore + 3);

    // site-2's batch reaches the ingestor, never site-1.
    const ingestor = await connect(ingestorAccount, { clientId: 'ferry-ingestor-secure-2' });
    const atIngestor = messages(ingestor);
    await ingestor.subscribeAsync(uplinkTopics.allBatches, { qos: 1 });
    const other = await connect(gw2, { clientId: `ferry-gw-${gw2.username}-batch` });
    await other.publishAsync(uplinkTopics.batch(gw2.username), 'site-2 batch', { qos: 1 });
    await waitFor(() => atIngestor.some((m) => m.payload === 'site-2 batch'), { what: "site-2's batch at the ingestor" });
    // A marker on site-1's own ack, published after site-2's batch: once it arrives, site-2's batch would have too.
    await intruder.subscribeAsync(uplinkTopics.ack(gw1.username), { qos: 1 });
    await ingestor.publishAsync(uplinkTopics.ack(gw1.username), 'marker', { qos: 1 });
    await waitFor(() => seen.length > 0, { what: "the marker on site-1's ack" });
    expect(seen.map((m) => m.payload)).toEqual(['marker']);
  });

  it("refuses and counts site-1's publish on site-2's ack topic, and never relays it", async () => {
    const [gw1, gw2] = [account(site1?.username), account(site2?.username)];
    const victim = await connect(gw2, { clientId: `ferry-gw-${gw2.username}` });
    const atVictim = messages(victim);
    await victim.subscribeAsync(uplinkTopics.ack(gw2.username), { qos: 1 });
    const deniedBefore = await denied('publish');

    // Choosing site-2's id as client id gives site-1 none of site-2's rights.
    const forger = await connect(gw1, { clientId: gw2.username });
    const gone = closed(forger);
    forger.publish(uplinkTopics.ack(gw2.username), 'forged ack', { qos: 1 });
    // MQTT 3.1.1 cannot refuse one message: the broker closes the connection.
    await gone;
    await waitFor(async () => (await denied('publish')) === deniedBefore + 1, { what: 'the denied publish counted' });

    const ingestor = await connect(ingestorAccount, { clientId: 'ferry-ingestor-secure-3' });
    await ingestor.publishAsync(uplinkTopics.ack(gw2.username), 'real ack', { qos: 1 });
    await waitFor(() => atVictim.length > 0, { what: "the ingestor's ack at site-2" });
    expect(atVictim.map((m) => m.payload)).toEqual(['real ack']);
    expect(readFileSync(join(work, 'broker.log'), 'utf8')).toMatch(/"event":"acl_denied","action":"publish".*"username":"site-1"/);
  });

  it("gives site-1 nothing from site-2's persistent session when it takes over its client id", async () => {
    const [gw1, gw2] = [account(site1?.username), account(site2?.username)];
    const clientId = `ferry-gw-${gw2.username}-session`;
    const owner = await connect(gw2, { clientId, clean: false });
    await owner.subscribeAsync(uplinkTopics.ack(gw2.username), { qos: 1 });
    await owner.endAsync();
    // An ack queued for site-2 while it is away.
    const ingestor = await connect(ingestorAccount, { clientId: 'ferry-ingestor-secure-4' });
    await ingestor.publishAsync(uplinkTopics.ack(gw2.username), 'queued ack', { qos: 1 });

    const deniedBefore = await denied('deliver');
    const thief = await connect(gw1, { clientId, clean: false });
    const stolen = messages(thief);
    await waitFor(async () => (await denied('deliver')) > deniedBefore, { what: 'the queued ack withheld from site-1' });
    // Nor does it get site-2's live acks; a marker on its own ack topic, published after one, shows when it would have.
    await ingestor.publishAsync(uplinkTopics.ack(gw2.username), 'live ack', { qos: 1 });
    await thief.subscribeAsync(uplinkTopics.ack(gw1.username), { qos: 1 });
    await ingestor.publishAsync(uplinkTopics.ack(gw1.username), 'marker', { qos: 1 });
    await waitFor(() => stolen.length > 0, { what: "the marker on site-1's ack" });
    expect(stolen.map((m) => m.payload)).toEqual(['marker']);
  });
});

describe('TLS and the ops endpoint of the shipped broker (certificate and token from docker/init-secrets.sh)', () => {
  it('serves MQTT over TLS with the certificate init-secrets.sh made, and a gateway that checks it against the CA gets in', async () => {
    const client = await mqtt.connectAsync(tlsUrl, { protocolVersion: 4, reconnectPeriod: 0, ...account(site1?.username), ca: readFileSync(secrets.caFile) }, false);
    clients.push(client);
    expect(client.connected).toBe(true);
    await client.publishAsync(uplinkTopics.status(site1?.username ?? ''), '{}', { qos: 1 });
  });

  it('refuses a TLS client that does not trust the deployment CA, and a plain client on the TLS port', async () => {
    await expect(mqtt.connectAsync(tlsUrl, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5_000, ...account(site1?.username) }, false)).rejects.toThrow(/self.signed|unable to verify|certificate/i);
    const plainOnTls = tlsUrl.replace('mqtts://', 'mqtt://');
    await expect(mqtt.connectAsync(plainOnTls, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3_000, ...account(site1?.username) }, false)).rejects.toThrow();
  });

  it('init-secrets.sh passes shellcheck, keeps what exists when run again, and --renew replaces only the broker certificate', () => {
    expect(runCommand(findBinary('shellcheck'), [join(DOCKER, 'init-secrets.sh')]).code).toBe(0);
    const read = (rel: string): string => readFileSync(join(work, rel), 'utf8');
    const before = { ca: read('tls/ca.crt'), cert: read('tls/broker.crt'), token: read('secrets/ops-token') };
    initSecrets(work);
    expect({ ca: read('tls/ca.crt'), cert: read('tls/broker.crt'), token: read('secrets/ops-token') }).toEqual(before);
    const renewed = runCommand('sh', [join(DOCKER, 'init-secrets.sh'), '--out', work, '--renew', 'localhost', '127.0.0.1']);
    expect(renewed.code, renewed.stderr).toBe(0);
    expect(read('tls/ca.crt')).toBe(before.ca);
    expect(read('secrets/ops-token')).toBe(before.token);
    expect(read('tls/broker.crt')).not.toBe(before.cert);
    expect(runCommand('openssl', ['verify', '-CAfile', join(work, 'tls/ca.crt'), join(work, 'tls/broker.crt')]).code).toBe(0);
    expect(runCommand('sh', [join(DOCKER, 'init-secrets.sh'), '--out', work]).code).toBe(2);
  });

  it('answers /metrics only with the ops token, and /healthz without it with its verdict alone', async () => {
    const anonymous = await httpText(metricsUrl);
    expect(anonymous?.status).toBe(401);
    expect(anonymous?.body).not.toContain('ferry_broker');
    expect((await httpText(metricsUrl, 'a-wrong-token-of-enough-length'))?.status).toBe(401);
    const withToken = await httpText(metricsUrl, secrets.token);
    expect(withToken?.status).toBe(200);
    expect(withToken?.body).toContain('ferry_broker_acl_denied_total');
    const bare = await httpText(healthUrl);
    expect(bare?.status).toBe(200);
    expect(JSON.parse(bare?.body ?? '')).toEqual({ ok: true });
    const detailed = JSON.parse((await httpText(healthUrl, secrets.token))?.body ?? '{}') as Record<string, unknown>;
    expect(detailed).toMatchObject({ ok: true, component: 'broker' });
  });

  it('each service refuses an ops endpoint beyond loopback without a token, naming http.host', () => {
    const env = { PATH: process.env['PATH'] ?? '/usr/bin:/bin' };
    const cases: { service: string; args: string[] }[] = [
      { service: 'broker', args: ['broker', '--port', '0'] },
      { service: 'ingestor', args: ['ingestor', '--broker', 'mqtt://127.0.0.1:1', '--data-dir', join(work, 'refused-ingestor')] },
      { service: 'gateway', args: ['gateway', '--gateway-id', 'refused', '--uplink', 'mqtt://127.0.0.1:1', '--data-dir', join(work, 'refused-gateway'), '--listen-port', '0'] },
    ];
    for (const { service, args } of cases) {
      const prefix = `FERRY_${service.toUpperCase()}__`;
      const refused = runCommand(process.execPath, [cli, ...args], { ...env, [`${prefix}HTTP__HOST`]: '0.0.0.0', [`${prefix}HTTP__PORT`]: '0' });
      expect(refused.code, `${service}: ${refused.stderr}`).toBe(2);
      expect(refused.stderr, service).toMatch(/http\.host: 0\.0\.0\.0 is reachable beyond this host, so \/metrics and \/healthz need a bearer token/);
    }
  });
});

describe('a broker with users and no ACL', () => {
  it('refuses to start, naming aclFile, and starts with acl: off, warning', async () => {
    const shipped = readFileSync(mountedFiles('broker').get(CONFIG) ?? '', 'utf8');
    expect(shipped).toMatch(/^aclFile: /m);
    const withoutAcl = join(work, 'broker-no-acl.yaml');
    writeFileSync(withoutAcl, shipped.replace(/^aclFile: .*$/m, ''));
    const { env } = await brokerEnv();
    const refused = runCommand(process.execPath, brokerArgs(withoutAcl), env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('FERRY_ERR_CONFIG_INVALID');
    expect(refused.stderr).toMatch(/aclFile: auth has users but no ACL/);

    const aclOff = join(work, 'broker-acl-off.yaml');
    writeFileSync(aclOff, `${shipped.replace(/^aclFile: .*$/m, '')}\nacl: off\n`);
    const open = await brokerEnv();
    const child = startChild({ command: process.execPath, args: brokerArgs(aclOff), env: open.env, logFile: join(work, 'broker-acl-off.log') });
    try {
      await waitHealthy(`http://127.0.0.1:${open.httpPort}/healthz`, child, 'broker with acl: off');
      expect(child.log()).toMatch(/"level":40.*"event":"acl_off"/);
    } finally {
      await child.stop();
    }
  }, 120_000);
});
