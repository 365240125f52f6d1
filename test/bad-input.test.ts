// Bad input is refused with a reason, counted and kept for an operator; nothing crashes and the
// good readings around it still arrive. Bad config stops a start naming the field.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { createBroker } from '@ferry/broker';
import { createGateway } from '@ferry/gateway';
import { createIngestor } from '@ferry/ingestor';
import { isFerryError } from '@ferry/protocol';
import type { ErrorCode } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { createSqliteSink } from '@ferry/sinks';
import { waitFor } from '@ferry/testkit';
import { drained, startStack } from './stack.js';
import type { Stack } from './stack.js';

describe('bad device input', () => {
  let stack: Stack;
  let device: MqttClient;
  beforeAll(async () => {
    stack = await startStack();
    device = await mqtt.connectAsync(stack.gateway.deviceUrl!, { protocolVersion: 4, clientId: 'bad-device', reconnectPeriod: 0 });
  });
  afterAll(async () => {
    await device?.endAsync();
    await stack?.close();
  });

  const cases: Array<{ name: string; topic: string; payload: string | Buffer; code: ErrorCode }> = [
    { name: 'malformed JSON', topic: 'devices/d1/telemetry', payload: '{"metrics": {"t": 21.5', code: 'FERRY_ERR_PAYLOAD_JSON' },
    { name: 'wrong types', topic: 'devices/d1/telemetry', payload: '{"metrics":{"t":[1,2]},"seq":"x"}', code: 'FERRY_ERR_PAYLOAD_SCHEMA' },
    { name: 'NaN', topic: 'devices/d1/telemetry', payload: '{"metrics":{"t":NaN}}', code: 'FERRY_ERR_VALUE_NOT_FINITE' },
    { name: 'an oversize payload', topic: 'devices/d1/telemetry', payload: JSON.stringify({ metrics: { s: 'x'.repeat(70_000) } }), code: 'FERRY_ERR_PAYLOAD_TOO_LARGE' },
    { name: 'an unknown topic', topic: 'factory/line-3/speed', payload: '{"metrics":{"rpm":1200}}', code: 'FERRY_ERR_TOPIC_UNKNOWN' },
    { name: 'bytes that are not UTF-8', topic: 'devices/d1/telemetry', payload: Buffer.from('{"metrics":{"K\u00fcche":1}}', 'latin1'), code: 'FERRY_ERR_PAYLOAD_ENCODING' },
    { name: 'a device id that climbs levels', topic: 'devices/../telemetry', payload: '{"metrics":{"t":1}}', code: 'FERRY_ERR_DEVICE_ID_INVALID' },
  ];

  it.each(cases)('refuses $name with $code, keeps the raw payload (the first 64 KiB of an oversized one), and good readings around it still arrive', async ({ topic, payload, code }) => {
    const before = stack.ingestor.stats().written;
    const rejectedBefore = stack.gateway.stats().rejected;
    await device.publishAsync('devices/good/telemetry', '{"metrics":{"t":1}}', { qos: 1 });
    await device.publishAsync(topic, payload, { qos: 1 });
    await device.publishAsync('devices/good/telemetry', '{"metrics":{"t":2}}', { qos: 1 });
    await drained(stack.gateway);
    await waitFor(() => stack.ingestor.stats().written === before + 2, { timeoutMs: 10_000, what: 'the two good readings to be written' });
    expect(stack.gateway.stats().rejected).toBe(rejectedBefore + 1);
    const [entry] = stack.gateway.deadLetters.list({ code });
    expect(entry).toBeDefined();
    expect(entry!.reason.length).toBeGreaterThan(5);
    expect(entry!.source.topic).toBe(topic);
    const sent = Buffer.from(payload);
    // An oversized payload keeps its first 64 KiB (and its size); any other is kept whole, to be replayed.
    const kept = code === 'FERRY_ERR_PAYLOAD_TOO_LARGE' ? sent.subarray(0, 64 * 1024) : sent;
    expect(Buffer.compare(entry!.payload, kept)).toBe(0);
    if (code === 'FERRY_ERR_PAYLOAD_TOO_LARGE') expect(entry!.payloadBytes).toBe(sent.byteLength);
    expect(stack.gateway.deadLetters.counts().byCode[code]).toBe(1);
  });

  it('counts rejections by code in Prometheus metrics', async () => {
    const text = await (await fetch(`${stack.gateway.httpUrl!}/metrics`)).text();
    for (const { code } of cases) expect(text).toMatch(new RegExp(`ferry_gateway_\\w*rejected\\w*\\{[^}]*code="${code}"[^}]*\\} 1`));
  });

  it('keeps the gateway healthy after all of it', async () => {
    const res = await fetch(`${stack.gateway.httpUrl!}/healthz`);
    expect(res.status).toBe(200);
  });
});

describe('one bad field', () => {
  let stack: Stack | undefined;
  afterAll(async () => {
    await stack?.close();
  });

  it('is dead-lettered alone at the gateway while the good fields of its reading reach the database', async () => {
    stack = await startStack();
    const device = await mqtt.connectAsync(stack.gateway.deviceUrl!, { protocolVersion: 4, clientId: 'one-bad-field', reconnectPeriod: 0 });
    // Device time from the clock at run time (the skew window is checked against it).
    const ts = Math.floor(Date.now() / 1000) * 1000 - 60_000;
    try {
      await device.publishAsync('devices/mixed/telemetry', JSON.stringify({ ts, seq: 1, metrics: { temperature: 21.5, 'bad"name': 1, 'trail\\': 2, humidity: 40 } }), { qos: 1 });
      // An unset device clock: written at the receive time, and marked so in the point.
      await device.publishAsync('devices/unsynced/telemetry', JSON.stringify({ ts: 0, metrics: { temperature: 19 } }), { qos: 1 });
    } finally {
      await device.endAsync();
    }
    await drained(stack.gateway);
    await waitFor(() => stack!.ingestor.stats().written === 2, { timeoutMs: 10_000, what: 'both readings to be written' });
    expect(stack.ingestor.stats().rejected).toBe(0);
    const letters = stack.gateway.deadLetters.list({ code: 'FERRY_ERR_NAME_INVALID' });
    expect(letters).toHaveLength(2);
    expect(letters.every((l) => l.reason.includes('the rest of the reading was kept'))).toBe(true);
    await stack.gateway.close();
    await stack.ingestor.close();
    const sink = createSqliteSink({ path: join(stack.dataDir, 'ingestor', 'points.db') });
    try {
      const [mixed] = sink.query({ measurement: 'telemetry', tags: { device: 'mixed' } });
      expect(mixed?.fields).toEqual({ temperature: 21.5, humidity: 40 });
      const [unsynced] = sink.query({ measurement: 'telemetry', tags: { device: 'unsynced' } });
      expect(unsynced?.fields).toEqual({ temperature: 19, ferry_clock_unsynced: true });
    } finally {
      await sink.close();
    }
  });
});

describe('bad config', () => {
  function configError(fn: () => unknown): string {
    try {
      fn();
    } catch (err) {
      if (isFerryError(err, 'FERRY_ERR_CONFIG_INVALID')) return err.message;
      throw err;
    }
    throw new Error('expected FERRY_ERR_CONFIG_INVALID');
  }
  const logger = silentLogger();

  it('names a gateway id with a topic wildcard in it', () => {
    expect(configError(() => createGateway({ gatewayId: 'gw/+', dataDir: '/tmp/x', uplink: { url: 'mqtt://127.0.0.1:1' } }, { logger }))).toContain('gatewayId');
  });

  it('names a missing uplink url and a negative batch size', () => {
    const message = configError(() => createGateway({ gatewayId: 'gw', dataDir: '/tmp/x', batch: { maxReadings: -1 } } as never, { logger }));
    expect(message).toContain('uplink');
    expect(message).toContain('batch.maxReadings');
  });

  it('names an unknown sink type and a bad broker url on the ingestor', () => {
    const message = configError(() => createIngestor({ dataDir: '/tmp/x', broker: { url: 'not a url' }, sink: { type: 'mongodb' } } as never, { logger }));
    expect(message).toContain('broker.url');
    expect(message).toContain('sink');
  });

  it('names a port out of range on the broker', () => {
    expect(configError(() => createBroker({ listen: { host: '127.0.0.1', port: 70000 } }, { logger }))).toContain('listen.port');
  });
});
