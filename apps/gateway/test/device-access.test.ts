// The device listener follows the broker's rule: beyond loopback only devices that log in (or an
// explicit allowAnonymous), and with a password file a device publishes only as its own id.
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import { createRegistry, isLoopbackHost, parseConfig, passwordFileLine, recordingLogger, silentLogger } from '@ferry/runtime';
import type { Logger, Registry } from '@ferry/runtime';
import { connect as netConnect } from 'node:net';
import type { IClientOptions, MqttClient } from 'mqtt';
import { createGateway, gatewayConfigSchema } from '../src/index.js';
import type { Gateway, GatewayConfigInput } from '../src/index.js';
import { connectDevice, metricValue, startTestBroker, tempDir } from './harness.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** Low scrypt cost: these tests are about who gets in, not about the hash's strength. */
const FAST = { N: 1024, r: 8, p: 1 };

function configError(input: unknown): string {
  try {
    parseConfig(gatewayConfigSchema, input, 'gateway config');
  } catch (err) {
    if (isFerryError(err, 'FERRY_ERR_CONFIG_INVALID')) return err.message;
    throw err;
  }
  return '';
}

const base = { gatewayId: 'gw-acl', dataDir: '/tmp/unused', uplink: { url: 'mqtt://127.0.0.1:1' } };

function telemetry(value: number): string {
  return JSON.stringify({ ts: Date.now(), metrics: { temperature: value } });
}

interface Started {
  readonly gateway: Gateway;
  readonly registry: Registry;
  readonly dir: string;
}

async function startGateway(listen: Record<string, unknown>, patterns?: GatewayConfigInput['devices'], logger: Logger = silentLogger(), limits?: GatewayConfigInput['limits']): Promise<Started> {
  const uplink = await startTestBroker();
  cleanups.push(() => uplink.close());
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  const registry = createRegistry();
  const gateway = createGateway(
    { gatewayId: 'gw-acl', dataDir: dir.path, devices: { ...patterns, listen: { port: 0, ...listen } }, http: false, uplink: { url: uplink.url }, ...(limits ? { limits } : {}) },
    { logger, registry },
  );
  cleanups.push(() => gateway.close());
  await gateway.ready();
  return { gateway, registry, dir: dir.path };
}

async function device(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const d = await connectDevice(url, `dev-${Math.random().toString(16).slice(2)}`, options);
  cleanups.push(() => d.endAsync(true));
  return d;
}

/** The CONNACK return code a connection attempt got (0 = accepted). */
async function connackCode(url: string, options: IClientOptions = {}): Promise<number> {
  try {
    const d = await device(url, options);
    await d.endAsync();
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

function passwordFile(dir: string, accounts: Record<string, string>): string {
  const path = join(dir, 'devices.passwd');
  writeFileSync(path, Object.entries(accounts).map(([user, pw]) => `${passwordFileLine(user, pw, FAST)}\n`).join(''));
  return path;
}

describe('device listener config', () => {
  it('refuses an anonymous listener beyond loopback, naming devices.listen.host and allowAnonymous', () => {
    for (const host of ['0.0.0.0', '::', '192.168.1.10']) {
      const message = configError({ ...base, devices: { listen: { host } } });
      expect(message).toContain('devices.listen.host');
      expect(message).toContain('devices.listen.allowAnonymous: true');
      expect(message).toContain('devices.listen.passwordFile');
    }
  });

  it('lets loopback stay anonymous, and a LAN listener with credentials or allowAnonymous', () => {
    for (const host of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) expect(configError({ ...base, devices: { listen: { host } } }), host).toBe('');
    expect(configError({ ...base, devices: { listen: { host: '0.0.0.0', allowAnonymous: true } } })).toBe('');
    expect(configError({ ...base, devices: { listen: { host: '0.0.0.0', passwordFile: '/etc/ferry/devices.passwd' } } })).toBe('');
    expect(configError({ ...base, devices: { listen: { host: '0.0.0.0', username: 'dev', password: 'pw' } } })).toBe('');
  });

  it('refuses the per-device rule with one shared account, which cannot tell devices apart', () => {
    expect(configError({ ...base, devices: { listen: { username: 'dev', password: 'pw', deviceMustMatchUser: true } } })).toContain(
      'devices.listen.deviceMustMatchUser',
    );
    expect(configError({ ...base, devices: { listen: { username: 'dev', password: 'pw', passwordFile: '/x' } } })).toContain('devices.listen.passwordFile');
  });

  it('takes 127.0.0.0/8 and ::1 as loopback and nothing else', () => {
    for (const host of ['127.0.0.1', '127.255.0.9', '::1', '[::1]', '::ffff:127.0.0.1', 'localhost']) expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '127.example.com', 'pi.local']) expect(isLoopbackHost(host), host).toBe(false);
  });

  it('does not start when the password file is missing, and says which field', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const gateway = createGateway(
      { gatewayId: 'gw-acl', dataDir: dir.path, devices: { listen: { port: 0, passwordFile: join(dir.path, 'missing.passwd') } }, http: false, uplink: { url: 'mqtt://127.0.0.1:1' } },
      { logger: silentLogger() },
    );
    cleanups.push(() => gateway.close());
    await expect(gateway.ready()).rejects.toThrow(/FERRY_ERR_CONFIG_INVALID: devices\.listen\.passwordFile/);
  });
});

/** The MQTT remaining-length varint. */
function varint(n: number): Buffer {
  const bytes: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    bytes.push(byte);
  } while (n > 0);
  return Buffer.from(bytes);
}

describe('connection-level refusals', () => {
  it('closes a connection announcing a packet over the read limit at its fixed header, counted and logged at warn', async () => {
    const { logger, lines } = recordingLogger();
    const { gateway, registry } = await startGateway({ host: '127.0.0.1' }, undefined, logger, { maxPayloadBytes: 1024 });
    const { port } = new URL(gateway.deviceUrl ?? '');
    // A PUBLISH announcing 64 MiB, then a trickle: the gateway must not wait for (or hold) the body.
    const socket = netConnect(Number(port), '127.0.0.1');
    cleanups.push(() => void socket.destroy());
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(Buffer.concat([Buffer.from([0x30]), varint(64 * 1024 * 1024), Buffer.alloc(100)]));
    await closed;
    expect(await metricValue(registry, 'ferry_gateway_device_connects_refused_total', { reason: 'packet_too_large' })).toBe(1);
    const line = lines.find((l) => l['event'] === 'device_refused');
    expect(line).toMatchObject({ level: 40, reason: 'packet_too_large', announcedBytes: 64 * 1024 * 1024 });

    // A payload over the decoder's limit but within the read limit is read, and dead-lettered.
    const d = await device(gateway.deviceUrl ?? '');
    await d.publishAsync('devices/big-1/telemetry', Buffer.alloc(4096, 0x7b), { qos: 1 });
    expect(gateway.deadLetters.list({ code: 'FERRY_ERR_PAYLOAD_TOO_LARGE' }).map((l) => l.source.deviceId)).toEqual(['big-1']);
  });

  it('logs refused logins at warn with the client id, at most one line per interval, counting the rest', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const file = passwordFile(dir.path, { 'sensor-1': 'pw-1' });
    const { logger, lines } = recordingLogger();
    const { gateway, registry } = await startGateway({ host: '127.0.0.1', passwordFile: file }, undefined, logger);
    const url = gateway.deviceUrl ?? '';
    for (let i = 0; i < 5; i++) expect(await connackCode(url, { clientId: `bad-${i}`, username: 'sensor-1', password: 'wrong' })).toBe(4);
    expect(await metricValue(registry, 'ferry_gateway_device_connects_refused_total', { reason: 'credentials' })).toBe(5);
    const refused = lines.filter((l) => l['event'] === 'device_refused');
    // Five refusals within the interval: the first is logged with its client id, the others wait to be counted.
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ level: 40, reason: 'credentials', clientId: 'bad-0', username: 'sensor-1', suppressed: 0 });
  });
});

describe('device logins and per-device publishing', () => {
  // On loopback: a password file asks for a login wherever the listener is; the address rule itself
  // is checked at config time above (tests send traffic to loopback only).
  it('refuses and counts an anonymous device and wrong credentials', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const file = passwordFile(dir.path, { 'sensor-1': 'pw-1' });
    const { gateway, registry } = await startGateway({ host: '127.0.0.1', passwordFile: file });
    const url = gateway.deviceUrl ?? '';
    expect(await connackCode(url)).toBe(5);
    expect(await connackCode(url, { username: 'sensor-1', password: 'wrong' })).toBe(4);
    expect(await connackCode(url, { username: 'nobody', password: 'pw-1' })).toBe(4);
    expect(await metricValue(registry, 'ferry_gateway_device_connects_refused_total', { reason: 'anonymous' })).toBe(1);
    expect(await metricValue(registry, 'ferry_gateway_device_connects_refused_total', { reason: 'credentials' })).toBe(2);

    const sensor = await device(url, { username: 'sensor-1', password: 'pw-1' });
    await sensor.publishAsync('devices/sensor-1/telemetry', telemetry(21), { qos: 1 });
    expect(gateway.stats().committed).toBe(1);
  });

  it('refuses, dead-letters and counts a publish under another device id, and keeps the device connected', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const file = passwordFile(dir.path, { 'sensor-1': 'pw-1', 'sensor-2': 'pw-2' });
    const { gateway, registry } = await startGateway({ host: '127.0.0.1', passwordFile: file });
    const sensor = await device(gateway.deviceUrl ?? '', { username: 'sensor-1', password: 'pw-1' });

    // PUBACKed (the refusal is final, a resend would be refused again), but nothing is stored.
    await sensor.publishAsync('devices/sensor-2/telemetry', telemetry(99), { qos: 1 });
    expect(gateway.stats().committed).toBe(0);
    expect(await metricValue(registry, 'ferry_gateway_rejected_total', { code: 'FERRY_ERR_DEVICE_NOT_AUTHORIZED' })).toBe(1);
    const [letter] = gateway.deadLetters.list({ limit: 10 });
    expect(letter).toMatchObject({ code: 'FERRY_ERR_DEVICE_NOT_AUTHORIZED', source: { topic: 'devices/sensor-2/telemetry', deviceId: 'sensor-2' } });
    expect(letter?.reason).toContain('user "sensor-1" published as device "sensor-2"');

    await sensor.publishAsync('devices/sensor-1/telemetry', telemetry(21), { qos: 1 });
    expect(gateway.stats().committed).toBe(1);
  });

  it('checks a device id taken from the payload too (deviceIdField)', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const file = passwordFile(dir.path, { 'sensor-1': 'pw-1' });
    const { gateway, registry } = await startGateway(
      { host: '127.0.0.1', passwordFile: file },
      { patterns: [{ pattern: 'site/{deviceId}/json', kind: 'telemetry', format: 'flat', deviceIdField: 'id' }] },
    );
    const sensor = await device(gateway.deviceUrl ?? '', { username: 'sensor-1', password: 'pw-1' });
    await sensor.publishAsync('site/sensor-1/json', JSON.stringify({ id: 'sensor-9', temperature: 20 }), { qos: 1 });
    expect(gateway.stats().committed).toBe(0);
    expect(await metricValue(registry, 'ferry_gateway_rejected_total', { code: 'FERRY_ERR_DEVICE_NOT_AUTHORIZED' })).toBe(1);
    await sensor.publishAsync('site/sensor-1/json', JSON.stringify({ id: 'sensor-1', temperature: 20 }), { qos: 1 });
    expect(gateway.stats().committed).toBe(1);
  });

  it('lets a bridge user publish for any device, and the rule be turned off', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const file = passwordFile(dir.path, { zigbee2mqtt: 'pw-z', 'sensor-1': 'pw-1' });
    const bridged = await startGateway({ host: '127.0.0.1', passwordFile: file, bridgeUsers: ['zigbee2mqtt'] });
    const bridge = await device(bridged.gateway.deviceUrl ?? '', { username: 'zigbee2mqtt', password: 'pw-z' });
    await bridge.publishAsync('devices/kitchen-plug/telemetry', telemetry(1), { qos: 1 });
    expect(bridged.gateway.stats().committed).toBe(1);

    const open = await startGateway({ host: '127.0.0.1', passwordFile: file, deviceMustMatchUser: false });
    const sensor = await device(open.gateway.deviceUrl ?? '', { username: 'sensor-1', password: 'pw-1' });
    await sensor.publishAsync('devices/sensor-2/telemetry', telemetry(1), { qos: 1 });
    expect(open.gateway.stats().committed).toBe(1);
  });

  it('takes an account added to the password file at the next connection, without a restart', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const file = passwordFile(dir.path, { 'sensor-1': 'pw-1' });
    const { gateway } = await startGateway({ host: '127.0.0.1', passwordFile: file });
    const url = gateway.deviceUrl ?? '';
    expect(await connackCode(url, { username: 'sensor-3', password: 'pw-3' })).toBe(4);
    appendFileSync(file, `${passwordFileLine('sensor-3', 'pw-3', FAST)}\n`);
    expect(await connackCode(url, { username: 'sensor-3', password: 'pw-3' })).toBe(0);
  });
});
