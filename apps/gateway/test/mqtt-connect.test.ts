// How the gateway opens MQTT connections (mqtt-connect.ts): plain mqtt:// and mqtts:// URLs on a
// socket of its own, as MQTT.js's connect() would open them; anything else through connect().
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { connectMqtt, plainTarget } from '../src/mqtt-connect.js';
import { startTestBroker, waitFor } from './harness.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const fixtures = join(import.meta.dirname, 'fixtures');
const cert = readFileSync(join(fixtures, 'uplink-cert.pem'), 'utf8');
const key = readFileSync(join(fixtures, 'uplink-key.pem'), 'utf8');

function client(url: string, options: Parameters<typeof connectMqtt>[1] = {}): MqttClient {
  const c = connectMqtt(url, { reconnectPeriod: 50, connectTimeout: 5_000, ...options });
  cleanups.push(() => c.endAsync(true));
  return c;
}

describe('plainTarget', () => {
  it('reads host and port of mqtt://, tcp://, mqtts://, ssl:// and tls:// URLs, with the MQTT default ports', () => {
    expect(plainTarget('mqtt://broker.example:1884', {}, {})).toEqual({ tls: false, host: 'broker.example', port: 1884 });
    expect(plainTarget('tcp://10.0.0.5', {}, {})).toEqual({ tls: false, host: '10.0.0.5', port: 1883 });
    expect(plainTarget('mqtts://broker.example', {}, {})).toEqual({ tls: true, host: 'broker.example', port: 8883 });
    expect(plainTarget('ssl://[::1]:8884/', {}, {})).toEqual({ tls: true, host: '::1', port: 8884 });
    expect(plainTarget('tls://broker.example:8885', {}, {})).toEqual({ tls: true, host: 'broker.example', port: 8885 });
  });

  it("leaves to MQTT.js's connect() what only it reads: WebSocket, URL credentials or query, a SOCKS proxy, a client certificate", () => {
    expect(plainTarget('ws://broker.example:8080/mqtt', {}, {})).toBeUndefined();
    expect(plainTarget('wss://broker.example', {}, {})).toBeUndefined();
    expect(plainTarget('mqtt://user:pass@broker.example', {}, {})).toBeUndefined();
    expect(plainTarget('mqtt://broker.example?clientId=x', {}, {})).toBeUndefined();
    expect(plainTarget('mqtt://broker.example', {}, { MQTTJS_SOCKS_PROXY: 'socks5://proxy:1080' })).toBeUndefined();
    expect(plainTarget('mqtt://broker.example', { socksProxy: 'socks5://proxy:1080' }, {})).toBeUndefined();
    expect(plainTarget('mqtt://broker.example', { cert, key }, {})).toBeUndefined();
    expect(plainTarget('not a url', {}, {})).toBeUndefined();
  });
});

describe('connectMqtt', () => {
  it('connects over TCP and reconnects after the broker comes back', async () => {
    const broker = await startTestBroker();
    cleanups.push(() => broker.close());
    const c = client(broker.url, { clientId: 'tcp-test' });
    await waitFor(() => c.connected, { what: 'the connection' });
    await broker.stop();
    await waitFor(() => !c.connected, { what: 'the outage' });
    await broker.start();
    await waitFor(() => c.connected, { what: 'the reconnection' });
  });

  it('connects over TLS to a broker the given CA vouches for, and refuses one it does not', async () => {
    const broker = await startTestBroker({ tls: { key, cert } });
    cleanups.push(() => broker.close());
    const trusted = client(broker.url, { clientId: 'tls-trusted', ca: cert });
    await waitFor(() => trusted.connected, { what: 'the TLS connection' });

    const errors: Error[] = [];
    const untrusted = client(broker.url, { clientId: 'tls-untrusted' });
    untrusted.on('error', (err) => errors.push(err));
    await waitFor(() => errors.length > 0, { what: 'the refused certificate' });
    expect(untrusted.connected).toBe(false);
    expect(errors[0]?.message).toMatch(/self[- ]signed|certificate/i);
  });

  it("takes a ws:// URL through MQTT.js's own connect()", () => {
    const c = client('ws://127.0.0.1:9/mqtt', { reconnectPeriod: 0 });
    expect(c.options.protocol).toBe('ws');
  });
});
