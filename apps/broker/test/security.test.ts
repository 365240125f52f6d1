// Listeners (TLS, client certificates, WebSocket), the credential file, ACLs and limits, against
// the broker in process and real MQTT.js clients.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import { isFerryError, uplinkTopics } from '@ferry/protocol';
import { createLogger, createRegistry, ManualClock, silentLogger } from '@ferry/runtime';
import type { Registry } from '@ferry/runtime';
import { makeTempDir, waitFor } from '@ferry/testkit';
import { addCredential, createAcl, createBroker, createPublishRate, credentialFileAuthenticator, filterCovers, hashPassword, listCredentials, parseAcl, removeCredential } from '../src/index.js';
import type { Broker, BrokerConfigInput } from '../src/index.js';

const CERT = fileURLToPath(new URL('./fixtures/uplink-cert.pem', import.meta.url));
const KEY = fileURLToPath(new URL('./fixtures/uplink-key.pem', import.meta.url));

let dir: string;
const brokers: Broker[] = [];
const clients: MqttClient[] = [];
const sockets: Socket[] = [];

beforeAll(async () => {
  dir = await makeTempDir('broker-security');
});
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  await Promise.all(brokers.splice(0).map((b) => b.close()));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function startBroker(config: BrokerConfigInput = {}, registry?: Registry): Promise<Broker> {
  const broker = createBroker({ listen: { port: 0 }, http: false, ...config }, { logger: silentLogger(), ...(registry ? { registry } : {}) });
  brokers.push(broker);
  await broker.ready();
  return broker;
}

async function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, ...options }, false);
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

async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const value = metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return value?.value ?? 0;
}

describe('credential file', () => {
  it('adds, lists and removes users, storing only salted scrypt hashes', () => {
    const file = join(dir, 'list.passwd');
    addCredential(file, 'gw-1', 'pw-one');
    addCredential(file, 'gw-2', 'pw-one');
    addCredential(file, 'gw-1', 'pw-new');
    expect(listCredentials(file)).toEqual(['gw-2', 'gw-1']);
    const text = readFileSync(file, 'utf8');
    expect(text).not.toContain('pw-');
    const salts = text.trim().split('\n').map((l) => l.split('$')[4]);
    expect(new Set(salts).size).toBe(2);
    expect(removeCredential(file, 'gw-2')).toBe(true);
    expect(removeCredential(file, 'gw-2')).toBe(false);
    expect(listCredentials(file)).toEqual(['gw-1']);
  });

  it('admits users of the credential file and refuses wrong passwords and anonymous clients', async () => {
    const file = join(dir, 'auth.passwd');
    addCredential(file, 'gw-1', 'right');
    const broker = await startBroker({ auth: { passwordFile: file }, acl: 'off' });
    expect((await connect(broker.url!, { username: 'gw-1', password: 'right' })).connected).toBe(true);
    await expect(mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0, username: 'gw-1', password: 'wrong' }, false)).rejects.toThrow(
      /Bad username or password/i,
    );
    await expect(mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0, username: 'nobody', password: 'right' }, false)).rejects.toThrow(
      /Bad username or password/i,
    );
    await expect(mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0 }, false)).rejects.toThrow(/Bad username or password/i);
  });

  it('hashes a CONNECT password off the event loop, so other clients are served meanwhile', async () => {
    const auth = credentialFileAuthenticator([hashPassword('gw-1', 'right')]);
    const order: string[] = [];
    // A hash computed on the event loop would settle before any already-queued callback runs.
    const checked = auth.check('gw-1', Buffer.from('right')).then((ok) => order.push(`checked ${ok}`));
    setImmediate(() => order.push('other work'));
    await checked;
    expect(order).toEqual(['other work', 'checked true']);
    expect(await auth.check('gw-1', Buffer.from('wrong'))).toBe(false);
  });
});

describe('ACL', () => {
  it('checks that a granted filter covers a requested one', () => {
    expect(filterCovers('a/+/c', 'a/b/c')).toBe(true);
    expect(filterCovers('a/+/c', 'a/+/c')).toBe(true);
    expect(filterCovers('a/#', 'a/b/#')).toBe(true);
    expect(filterCovers('a/#', 'a')).toBe(true);
    expect(filterCovers('a/+/c', 'a/#')).toBe(false);
    expect(filterCovers('a/b', 'a/+')).toBe(false);
    expect(filterCovers('a/b', 'a/b/c')).toBe(false);
  });

  it('gives a gateway its own topics only, and no wider rights through a wildcard client id', () => {
    const acl = createAcl(parseAcl('role gateway\nuser ingestor\nrole ingestor\n'));
    const gw = { clientId: 'gw-1', username: 'gw-1' };
    expect(acl.canPublish(gw, uplinkTopics.batch('gw-1'))).toBe(true);
    expect(acl.canPublish(gw, uplinkTopics.status('gw-1'))).toBe(true);
    expect(acl.canPublish(gw, uplinkTopics.batch('gw-2'))).toBe(false);
    expect(acl.canPublish(gw, uplinkTopics.ack('gw-1'))).toBe(false);
    expect(acl.canSubscribe(gw, uplinkTopics.ack('gw-1'))).toBe(true);
    expect(acl.canSubscribe(gw, uplinkTopics.ack('+'))).toBe(false);
    expect(acl.canSubscribe({ clientId: '+', username: undefined }, uplinkTopics.ack('+'))).toBe(false);
    const ingestor = { clientId: 'ing-1', username: 'ingestor' };
    expect(acl.canSubscribe(ingestor, uplinkTopics.allBatches)).toBe(true);
    expect(acl.canPublish(ingestor, uplinkTopics.ack('gw-7'))).toBe(true);
    expect(acl.canSubscribe(ingestor, '#')).toBe(false);
  });

  it('lets a gateway publish its own dead-letter reports and hear its own report acks and replay requests, and the ingestor all of them', () => {
    const acl = createAcl(parseAcl('role gateway\nuser ingestor\nrole ingestor\n'));
    const gw = { clientId: 'gw-1', username: 'gw-1' };
    expect(acl.canPublish(gw, uplinkTopics.deadLetters('gw-1'))).toBe(true);
    expect(acl.canPublish(gw, uplinkTopics.deadLetters('gw-2'))).toBe(false);
    expect(acl.canSubscribe(gw, uplinkTopics.deadLetters('gw-1'))).toBe(false);
    expect(acl.canSubscribe(gw, uplinkTopics.deadLetterControl('gw-1'))).toBe(true);
    expect(acl.canSubscribe(gw, uplinkTopics.deadLetterControl('gw-2'))).toBe(false);
    expect(acl.canSubscribe(gw, uplinkTopics.deadLetterControl('+'))).toBe(false);
    // A gateway cannot ack its own reports or ask itself (or another) for a replay.
    expect(acl.canPublish(gw, uplinkTopics.deadLetterControl('gw-1'))).toBe(false);
    expect(acl.canPublish(gw, uplinkTopics.deadLetterControl('gw-2'))).toBe(false);
    expect(acl.canSubscribe({ clientId: 'gw-2', username: 'gw-1' }, uplinkTopics.deadLetterControl('gw-2'))).toBe(false);
    const ingestor = { clientId: 'ing-1', username: 'ingestor' };
    expect(acl.canSubscribe(ingestor, uplinkTopics.allDeadLetters)).toBe(true);
    expect(acl.canPublish(ingestor, uplinkTopics.deadLetterControl('gw-7'))).toBe(true);
    expect(acl.canPublish(ingestor, uplinkTopics.deadLetters('gw-7'))).toBe(false);
  });

  it('binds gateway and device rights to the checked username, not to the client id a client chooses', () => {
    const acl = createAcl(parseAcl('role gateway\nuser dev-1\nrole device\n'));
    const site1AsSite2 = { clientId: 'site-2', username: 'site-1' };
    expect(acl.canPublish(site1AsSite2, uplinkTopics.batch('site-2'))).toBe(false);
    expect(acl.canSubscribe(site1AsSite2, uplinkTopics.ack('site-2'))).toBe(false);
    expect(acl.canPublish(site1AsSite2, uplinkTopics.batch('site-1'))).toBe(true);
    // The gateway's default client id (ferry-gw-<id>) is not its id: the username is.
    expect(acl.canSubscribe({ clientId: 'ferry-gw-site-1', username: 'site-1' }, uplinkTopics.ack('site-1'))).toBe(true);
    expect(acl.canPublish({ clientId: 'site-1', username: undefined }, uplinkTopics.batch('site-1'))).toBe(false);
    expect(acl.canPublish({ clientId: 'dev-2', username: 'dev-1' }, 'devices/dev-1/telemetry')).toBe(true);
    expect(acl.canPublish({ clientId: 'dev-2', username: 'dev-1' }, 'devices/dev-2/telemetry')).toBe(false);
  });

  it('refuses to start with users and no ACL unless acl: off says so, and then warns', async () => {
    const users = { users: [{ username: 'site-1', password: 'pw' }] };
    let caught: unknown;
    try {
      createBroker({ listen: { port: 0 }, http: false, auth: users });
    } catch (err) {
      caught = err;
    }
    expect(isFerryError(caught, 'FERRY_ERR_CONFIG_INVALID')).toBe(true);
    expect((caught as Error).message).toMatch(/aclFile: auth has users but no ACL.*set aclFile.*or acl: off/);
    expect(() => createBroker({ http: false, auth: { passwordFile: join(dir, 'none.passwd') } })).toThrow(/aclFile: auth has users but no ACL/);
    expect(() => createBroker({ http: false, auth: users, acl: 'off', aclFile: join(dir, 'x.acl') })).toThrow(/acl: off contradicts aclFile/);
    // Anonymous on purpose, or no auth (loopback only), needs no ACL.
    expect(() => createBroker({ http: false, auth: { allowAnonymous: true } })).not.toThrow();

    const logFile = join(dir, 'acl-off.log');
    const fd = openSync(logFile, 'a');
    try {
      const broker = createBroker({ listen: { port: 0 }, http: false, auth: users, acl: 'off' }, { logger: createLogger({ level: 'warn', fd }) });
      brokers.push(broker);
      await broker.ready();
      await waitFor(() => readFileSync(logFile, 'utf8').includes('"event":"acl_off"'), { what: 'the acl_off warning' });
      expect(readFileSync(logFile, 'utf8')).toMatch(/"level":40.*"event":"acl_off"/);
      const site = await connect(broker.url!, { username: 'site-1', password: 'pw' });
      expect((await site.subscribeAsync(uplinkTopics.allBatches, { qos: 1 }))[0]?.qos).toBe(1);
    } finally {
      await Promise.all(brokers.splice(0).map((b) => b.close()));
      closeSync(fd);
    }
  });

  it('refuses an ACL file line it does not understand, naming the line', () => {
    expect(() => parseAcl('user a\ntopic read x\nallow everything\n', 'acl.conf')).toThrow(/acl.conf line 3/);
  });

  it('never relays a denied publish, refuses a denied subscribe, and counts both', async () => {
    const aclFile = join(dir, 'roles.acl');
    writeFileSync(aclFile, '# gateways by username\nrole gateway\nuser ingestor\nrole ingestor\n');
    const registry = createRegistry();
    const broker = await startBroker({ aclFile }, registry);
    const ingestor = await connect(broker.url!, { clientId: 'ing-1', username: 'ingestor' });
    const seen = messages(ingestor);
    await ingestor.subscribeAsync(uplinkTopics.allBatches, { qos: 1 });

    const gw = await connect(broker.url!, { clientId: 'gw-1', username: 'gw-1' });
    expect((await gw.subscribeAsync(uplinkTopics.ack('gw-1'), { qos: 1 }))[0]?.qos).toBe(1);
    // MQTT.js reports a SUBACK failure (0x80) as an error; the connection stays up.
    await expect(gw.subscribeAsync(uplinkTopics.ack('gw-2'), { qos: 1 })).rejects.toThrow(/Subscribe error/);
    expect(gw.connected).toBe(true);
    await gw.publishAsync(uplinkTopics.batch('gw-1'), 'own', { qos: 1 });
    await waitFor(() => seen.length === 1, { what: 'the allowed batch' });

    const gone = closed(gw);
    gw.publish(uplinkTopics.batch('gw-2'), 'forged', { qos: 1 });
    await gone;
    // The ingestor gets a later batch but never the forged one.
    const gw3 = await connect(broker.url!, { clientId: 'gw-3', username: 'gw-3' });
    await gw3.publishAsync(uplinkTopics.batch('gw-3'), 'later', { qos: 1 });
    await waitFor(() => seen.length === 2, { what: 'the later batch' });
    expect(seen.map((m) => m.payload)).toEqual(['own', 'later']);
    expect(await metricValue(registry, 'ferry_broker_acl_denied_total', { action: 'publish' })).toBe(1);
    expect(await metricValue(registry, 'ferry_broker_acl_denied_total', { action: 'subscribe' })).toBe(1);
  });
});

describe('listeners', () => {
  it('serves MQTT over TLS beside plain TCP, and TCP can be turned off', async () => {
    const broker = await startBroker({ listen: false, tls: { port: 0, cert: CERT, key: KEY } });
    expect(broker.urls.tcp).toBeUndefined();
    const url = broker.urls.tls!;
    expect(url).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/);
    const sub = await connect(url, { ca: readFileSync(CERT) });
    const seen = messages(sub);
    await sub.subscribeAsync('t/#', { qos: 1 });
    const pub = await connect(url, { ca: readFileSync(CERT) });
    await pub.publishAsync('t/1', 'over tls', { qos: 1 });
    await waitFor(() => seen.length === 1, { what: 'the message over TLS' });
    await expect(mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, rejectUnauthorized: true }, false)).rejects.toThrow();
  });

  it('with requireClientCert admits a client by its certificate and refuses one without', async () => {
    const aclFile = join(dir, 'cert.acl');
    writeFileSync(aclFile, 'user localhost\ntopic readwrite cert/#\n');
    const broker = await startBroker({
      auth: { users: [{ username: 'someone', password: 'pw' }] },
      aclFile,
      tls: { port: 0, cert: CERT, key: KEY, ca: CERT, requireClientCert: true },
    });
    const tlsUrl = broker.urls.tls!;
    const withCert = await connect(tlsUrl, { ca: readFileSync(CERT), cert: readFileSync(CERT), key: readFileSync(KEY) });
    const seen = messages(withCert);
    // The certificate CN (localhost) is the username the ACL sees.
    await withCert.subscribeAsync('cert/#', { qos: 1 });
    await withCert.publishAsync('cert/1', 'mine', { qos: 1 });
    await waitFor(() => seen.length === 1, { what: 'the message of the certificate client' });
    await expect(mqtt.connectAsync(tlsUrl, { protocolVersion: 4, reconnectPeriod: 0, ca: readFileSync(CERT), connectTimeout: 5000 }, false)).rejects.toThrow();
  });

  it('serves MQTT over WebSocket', async () => {
    const broker = await startBroker({ websocket: { port: 0 } });
    expect(broker.urls.ws).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/);
    const sub = await connect(broker.urls.ws!);
    const seen = messages(sub);
    await sub.subscribeAsync('w/#', { qos: 1 });
    const pub = await connect(broker.url!);
    await pub.publishAsync('w/1', 'tcp to ws', { qos: 1 });
    await waitFor(() => seen.length === 1, { what: 'the message over WebSocket' });
  });
});

describe('limits', () => {
  it('disconnects a client that writes garbage bytes and keeps serving others', async () => {
    const registry = createRegistry();
    const broker = await startBroker({}, registry);
    const { port } = new URL(broker.url!);
    for (let i = 0; i < 5; i += 1) {
      const socket = netConnect(Number(port), '127.0.0.1');
      sockets.push(socket);
      const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.on('error', () => undefined);
      socket.write(Buffer.concat([Buffer.from([0x10, 0x05]), randomBytes(512)]));
      await ended;
    }
    const sub = await connect(broker.url!);
    const seen = messages(sub);
    await sub.subscribeAsync('still/#');
    const pub = await connect(broker.url!);
    await pub.publishAsync('still/up', 'yes', { qos: 1 });
    await waitFor(() => seen.length === 1, { what: 'a relay after the garbage' });
    expect(await metricValue(registry, 'ferry_broker_connection_errors_total')).toBeGreaterThanOrEqual(1);
  });

  it('closes connections over maxConnections on accept', async () => {
    const registry = createRegistry();
    const broker = await startBroker({ limits: { maxConnections: 2 } }, registry);
    await connect(broker.url!);
    await connect(broker.url!);
    await expect(mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 }, false)).rejects.toThrow();
    expect(await metricValue(registry, 'ferry_broker_connections_refused_total', { reason: 'max_connections' })).toBeGreaterThanOrEqual(1);
  });

  it('refuses a keepalive above maxKeepaliveSeconds', async () => {
    const broker = await startBroker({ limits: { maxKeepaliveSeconds: 60 } });
    expect((await connect(broker.url!, { keepalive: 30 })).connected).toBe(true);
    await expect(mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0, keepalive: 600, connectTimeout: 5000 }, false)).rejects.toThrow();
  });

  it('disconnects a client over its publish rate', async () => {
    const registry = createRegistry();
    const broker = await startBroker({ limits: { publishRate: { perSecond: 0.001, burst: 3 } } }, registry);
    const pub = await connect(broker.url!);
    for (let i = 0; i < 3; i += 1) await pub.publishAsync('r', String(i), { qos: 1 });
    const gone = closed(pub);
    pub.publish('r', 'over', { qos: 1 });
    await gone;
    expect(await metricValue(registry, 'ferry_broker_publishes_refused_total', { reason: 'rate_limited' })).toBe(1);
  });

  it('refills a token bucket with time (pure, injected clock)', () => {
    const clock = new ManualClock(0);
    const rate = createPublishRate({ perSecond: 2, burst: 2 }, clock);
    expect([rate.take('a'), rate.take('a'), rate.take('a')]).toEqual([true, true, false]);
    expect(rate.take('b')).toBe(true);
    clock.advance(500);
    expect([rate.take('a'), rate.take('a')]).toEqual([true, false]);
    clock.advance(10_000);
    expect([rate.take('a'), rate.take('a'), rate.take('a')]).toEqual([true, true, false]);
  });

  it('keeps relaying to other subscribers while one subscriber stops reading', async () => {
    const broker = await startBroker();
    const { port } = new URL(broker.url!);
    // A raw subscriber: CONNECT + SUBSCRIBE 'slow/#' QoS 0, then it never reads again.
    const slow = netConnect(Number(port), '127.0.0.1');
    sockets.push(slow);
    slow.on('error', () => undefined);
    const connectPacket = Buffer.from([0x10, 0x10, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, 0x73, 0x6c, 0x6f, 0x77]);
    const subscribePacket = Buffer.from([0x82, 0x0b, 0x00, 0x01, 0x00, 0x06, 0x73, 0x6c, 0x6f, 0x77, 0x2f, 0x23, 0x00]);
    await new Promise<void>((resolve) => slow.once('connect', () => resolve()));
    slow.write(Buffer.concat([connectPacket, subscribePacket]));
    await new Promise<void>((resolve) => slow.once('data', () => resolve()));
    slow.pause();

    const fast = await connect(broker.url!);
    let received = 0;
    fast.on('message', () => (received += 1));
    await fast.subscribeAsync('slow/#', { qos: 0 });
    const pub = await connect(broker.url!);
    const payload = Buffer.alloc(64 * 1024, 7);
    const total = 300;
    for (let i = 0; i < total; i += 1) await pub.publishAsync('slow/x', payload, { qos: 1 });
    await waitFor(() => received === total, { timeoutMs: 30_000, what: 'every message at the reading subscriber' });
  });
});
