// Issue #17's hostile suite: malformed JSON, broken encodings, size, key and depth bombs, topic
// tricks, time edge cases, type confusion, line-protocol injection and format-specific breakage,
// each published to a running gateway between good readings. For every input the exact outcome
// is asserted (stored, dead-lettered with its code, or ignored), the invariant holds after each
// (received = stored + dead_lettered + ignored + deferred), and every good reading arrives.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import type { ErrorCode } from '@ferry/protocol';
import { createRegistry, silentLogger } from '@ferry/runtime';
import { encodeSparkplugPayload, SparkplugDataType as SP } from '@ferry/decoders';
import { createGateway } from '../src/index.js';
import type { Gateway } from '../src/index.js';
import { connectDevice, startCloud, startTestBroker, tempDir, waitFor } from './harness.js';
import type { Cloud, TestBroker } from './harness.js';

const NOW = Date.now();
const iso = (ms: number): string => new Date(ms).toISOString();
const json = (v: unknown): string => JSON.stringify(v);
const nested = (depth: number): string => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;

type Outcome = 'stored' | 'dead_lettered' | 'ignored';
interface Case {
  readonly name: string;
  readonly topic: string;
  readonly payload: string | Buffer;
  readonly outcome: Outcome;
  /** Codes of the dead letters it leaves (the whole message's, or each value set aside). */
  readonly letters?: readonly ErrorCode[];
  /** The device ids its readings were stored under, when stored. */
  readonly devices?: readonly string[];
  /** The metrics of its (first) stored reading, where the exact values matter. */
  readonly metrics?: Readonly<Record<string, unknown>>;
}

// Sparkplug B (Eclipse Sparkplug 3.0, 6.4): an NBIRTH names metrics and their aliases; NDATA uses aliases only.
const spBirth = Buffer.from(
  encodeSparkplugPayload({
    timestamp: NOW,
    seq: 0,
    metrics: [
      { name: 'bdSeq', datatype: SP.UInt64, value: 0 },
      { name: 'Temperature', alias: 1, datatype: SP.Float, value: 21.5 },
    ],
  }),
);
const spData = (seq: number, metrics: { alias: number; value: number }[]): Buffer =>
  Buffer.from(encodeSparkplugPayload({ timestamp: NOW, seq, metrics: metrics.map((m) => ({ ...m, datatype: SP.Float })) }));

const ferry = (metrics: unknown, extra: Record<string, unknown> = {}): string => json({ ts: NOW, metrics, ...extra });
const T = 'devices/h1/telemetry';

const CASES: readonly Case[] = [
  // --- malformed JSON ---
  { name: 'cut-off JSON', topic: T, payload: '{"ts":', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_JSON'] },
  { name: 'missing brace', topic: T, payload: '{"metrics":{"t":1}', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_JSON'] },
  { name: 'empty payload', topic: T, payload: '', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_JSON'] },
  { name: 'JSON null', topic: T, payload: 'null', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'JSON array', topic: T, payload: '[]', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'JSON string', topic: T, payload: '"21.5"', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'no metrics', topic: T, payload: ferry({}), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'trailing garbage', topic: T, payload: `${ferry({ t: 1 })}xyz`, outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_JSON'] },
  { name: 'bare NaN only', topic: T, payload: '{"metrics":{"t":NaN}}', outcome: 'dead_lettered', letters: ['FERRY_ERR_VALUE_NOT_FINITE'] },
  { name: '1e999 only', topic: T, payload: '{"metrics":{"t":1e999}}', outcome: 'dead_lettered', letters: ['FERRY_ERR_VALUE_NOT_FINITE'] },
  { name: 'NaN beside a good value', topic: T, payload: '{"metrics":{"t":1,"u":NaN}}', outcome: 'stored', letters: ['FERRY_ERR_VALUE_NOT_FINITE'], devices: ['h1'] },
  // --- encodings ---
  { name: 'raw Latin-1 byte in a name', topic: T, payload: Buffer.from('{"metrics":{"K\u00fcche":1}}', 'latin1'), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_ENCODING'] },
  { name: 'overlong encoding of /', topic: T, payload: Buffer.concat([Buffer.from('{"metrics":{"a'), Buffer.from([0xc0, 0xaf]), Buffer.from('":1}}')]), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_ENCODING'] },
  { name: 'truncated 3-byte sequence', topic: T, payload: Buffer.concat([Buffer.from('{"metrics":{"t":1},"x":"'), Buffer.from([0xe2, 0x82]), Buffer.from('"}')]), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_ENCODING'] },
  { name: 'lone surrogate encoded as UTF-8', topic: T, payload: Buffer.concat([Buffer.from('{"metrics":{"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('":1}}')]), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_ENCODING'] },
  { name: 'escaped unpaired surrogate in a name', topic: T, payload: '{"metrics":{"a\\ud800":1,"t":2}}', outcome: 'stored', letters: ['FERRY_ERR_NAME_INVALID'], devices: ['h1'] },
  { name: 'UTF-8 byte-order mark', topic: T, payload: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(ferry({ t: 1 }))]), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_JSON'] },
  // --- size ---
  { name: 'payload over 64 KiB', topic: T, payload: ferry({ s: 'x'.repeat(70 * 1024) }), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_TOO_LARGE'] },
  { name: 'too many metrics', topic: T, payload: ferry(Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`m${i}`, i]))), outcome: 'dead_lettered', letters: ['FERRY_ERR_LIMIT_EXCEEDED'] },
  { name: 'metric name too long beside a good one', topic: T, payload: ferry({ ['n'.repeat(300)]: 1, t: 2 }), outcome: 'stored', letters: ['FERRY_ERR_LIMIT_EXCEEDED'], devices: ['h1'] },
  { name: 'string value too long beside a good one', topic: T, payload: ferry({ s: 'v'.repeat(5000), t: 2 }), outcome: 'stored', letters: ['FERRY_ERR_LIMIT_EXCEEDED'], devices: ['h1'] },
  // --- key and depth bombs ---
  { name: 'nesting 5000 deep', topic: 'z2m/h1', payload: nested(5000), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: '__proto__ beside a good value', topic: T, payload: '{"metrics":{"__proto__":1,"t":2}}', outcome: 'stored', letters: ['FERRY_ERR_NAME_INVALID'], devices: ['h1'], metrics: { t: 2 } },
  { name: 'constructor alone', topic: T, payload: '{"metrics":{"constructor":1}}', outcome: 'dead_lettered', letters: ['FERRY_ERR_NAME_INVALID'] },
  { name: 'nested prototype key in flat JSON', topic: 'z2m/h1', payload: '{"a":{"prototype":{"x":1}},"t":2}', outcome: 'stored', letters: ['FERRY_ERR_NAME_INVALID'], devices: ['h1'] },
  { name: 'duplicate key', topic: T, payload: '{"ts":' + String(NOW) + ',"metrics":{"t":1,"t":2}}', outcome: 'stored', devices: ['h1'], metrics: { t: 2 } },
  // --- topic tricks ---
  { name: 'device id ..', topic: 'devices/../telemetry', payload: ferry({ t: 1 }), outcome: 'dead_lettered', letters: ['FERRY_ERR_DEVICE_ID_INVALID'] },
  { name: 'device id climbing levels', topic: 'z2m/../../admin', payload: '{"t":1}', outcome: 'dead_lettered', letters: ['FERRY_ERR_DEVICE_ID_INVALID'] },
  { name: 'right-to-left override in an id', topic: 'devices/a\u202Eb/telemetry', payload: ferry({ t: 1 }), outcome: 'dead_lettered', letters: ['FERRY_ERR_DEVICE_ID_INVALID'] },
  { name: 'zero-width space in an id', topic: 'devices/a\u200Bb/telemetry', payload: ferry({ t: 1 }), outcome: 'dead_lettered', letters: ['FERRY_ERR_DEVICE_ID_INVALID'] },
  { name: 'decomposed id (NFD)', topic: 'devices/Ku\u0308che/telemetry', payload: ferry({ t: 1 }), outcome: 'stored', devices: ['K\u00fcche'] },
  { name: 'composed id (NFC)', topic: 'devices/K\u00fcche/telemetry', payload: ferry({ t: 2 }), outcome: 'stored', devices: ['K\u00fcche'] },
  { name: 'trailing backslash in an id', topic: 'z2m/end\\', payload: '{"t":1}', outcome: 'dead_lettered', letters: ['FERRY_ERR_DEVICE_ID_INVALID'] },
  { name: 'topic no pattern matches', topic: 'unknown/topic', payload: '{}', outcome: 'dead_lettered', letters: ['FERRY_ERR_TOPIC_UNKNOWN'] },
  { name: 'one level too many', topic: 'devices/h1/telemetry/extra', payload: ferry({ t: 1 }), outcome: 'dead_lettered', letters: ['FERRY_ERR_TOPIC_UNKNOWN'] },
  { name: 'empty device level', topic: 'devices//telemetry', payload: ferry({ t: 1 }), outcome: 'dead_lettered', letters: ['FERRY_ERR_TOPIC_UNKNOWN'] },
  // --- time edge cases ---
  { name: 'ts 0 (clock never set)', topic: T, payload: json({ ts: 0, metrics: { t: 1 } }), outcome: 'stored', devices: ['h1'] },
  { name: 'impossible date Feb 30', topic: T, payload: json({ ts: '2023-02-30T00:00:00Z', metrics: { t: 1 } }), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'month 13', topic: T, payload: json({ ts: '2023-13-01T00:00:00Z', metrics: { t: 1 } }), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'hour 24', topic: T, payload: json({ ts: '2023-01-01T24:00:01Z', metrics: { t: 1 } }), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'ISO time with offset', topic: T, payload: json({ ts: iso(NOW).replace('Z', '+00:00'), metrics: { t: 1 } }), outcome: 'stored', devices: ['h1'] },
  { name: 'nanosecond timestamp', topic: T, payload: `{"ts":${NOW}000000,"metrics":{"t":1}}`, outcome: 'stored', devices: ['h1'] },
  { name: 'a year ahead', topic: T, payload: json({ ts: NOW + 366 * 86_400_000, metrics: { t: 1 } }), outcome: 'dead_lettered', letters: ['FERRY_ERR_TIMESTAMP_SKEW'] },
  { name: 'ts as a word', topic: T, payload: json({ ts: 'yesterday', metrics: { t: 1 } }), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  // --- type confusion ---
  { name: 'boolean metric', topic: T, payload: ferry({ on: true }), outcome: 'stored', devices: ['h1'] },
  { name: 'numeric string stays a string', topic: T, payload: ferry({ s: '37.5' }), outcome: 'stored', devices: ['h1'] },
  { name: 'seq a word', topic: T, payload: ferry({ t: 1 }, { seq: 'abc' }), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'seq negative', topic: T, payload: ferry({ t: 1 }, { seq: -1 }), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'true under a number rule', topic: 'z2m/h1', payload: '{"temperature":true,"humidity":40}', outcome: 'stored', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'], devices: ['h1'] },
  { name: 'integer beyond uint64', topic: T, payload: '{"metrics":{"big":99999999999999999999999,"t":1}}', outcome: 'stored', letters: ['FERRY_ERR_VALUE_OUT_OF_RANGE'], devices: ['h1'], metrics: { t: 1 } },
  { name: 'integer beyond 2^53 within int64', topic: T, payload: '{"metrics":{"big":9007199254740993}}', outcome: 'stored', devices: ['h1'], metrics: { big: '9007199254740993' } },
  // --- names and line-protocol injection ---
  { name: 'line break in a metric name', topic: T, payload: ferry({ 'a\nb': 1, t: 2 }), outcome: 'stored', letters: ['FERRY_ERR_NAME_INVALID'], devices: ['h1'] },
  { name: 'quote in a metric name', topic: T, payload: ferry({ 'a"b': 1, t: 2 }), outcome: 'stored', letters: ['FERRY_ERR_NAME_INVALID'], devices: ['h1'] },
  { name: 'NUL in a metric name', topic: T, payload: ferry({ 'a\u0000b': 1, t: 2 }), outcome: 'stored', letters: ['FERRY_ERR_NAME_INVALID'], devices: ['h1'] },
  { name: 'line-protocol tail in a tag value', topic: T, payload: ferry({ t: 1 }, { tags: { room: 'x,gateway=evil value=1' } }), outcome: 'stored', devices: ['h1'] },
  { name: 'influx line: one bad line of two', topic: 'telegraf/h1', payload: `cpu idle=1 ${NOW}000000\ncpu idle= ${NOW}000000`, outcome: 'stored', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'], devices: ['h1'] },
  { name: 'influx line: every line bad', topic: 'telegraf/h1', payload: 'cpu\nmem used=', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  // --- formats ---
  { name: 'Tasmota RESULT power', topic: 'stat/plug1/RESULT', payload: '{"POWER":"ON"}', outcome: 'stored', devices: ['plug1'] },
  { name: 'Tasmota POWER1 plain', topic: 'stat/plug1/POWER1', payload: 'ON', outcome: 'stored', devices: ['plug1'] },
  { name: 'Tasmota STATUS cut off', topic: 'stat/plug1/STATUS10', payload: '{"StatusSNS":{"Time":"2026-01-01T10:00:00","ENERGY":{"Power":', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_JSON'] },
  { name: 'Tasmota command request', topic: 'cmnd/plug1/POWER', payload: 'TOGGLE', outcome: 'ignored' },
  { name: 'Home Assistant discovery', topic: 'homeassistant/sensor/h1/t/config', payload: '{"state_topic":"z2m/h1"}', outcome: 'ignored' },
  { name: 'Shelly announce', topic: 'shellies/announce', payload: '{"id":"shellyplug-s-7A1B2C"}', outcome: 'ignored' },
  { name: 'ThingsBoard array, one bad sample', topic: 'tb/h1/telemetry', payload: json([{ ts: NOW, values: { t: 1 } }, { ts: 'bad', values: { t: 2 } }]), outcome: 'stored', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'], devices: ['h1'] },
  { name: 'Sparkplug NBIRTH', topic: 'spBv1.0/plant/NBIRTH/edge1', payload: spBirth, outcome: 'stored', devices: ['plant/edge1'] },
  { name: 'Sparkplug NDATA with an alias no BIRTH defined', topic: 'spBv1.0/plant/NDATA/edge1', payload: spData(1, [{ alias: 1, value: 22 }, { alias: 99, value: 1 }]), outcome: 'stored', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'], devices: ['plant/edge1'], metrics: { Temperature: 22 } },
  { name: 'Sparkplug NDATA of unknown aliases only', topic: 'spBv1.0/plant/NDATA/edge1', payload: spData(2, [{ alias: 98, value: 1 }]), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'Sparkplug NDATA before any BIRTH', topic: 'spBv1.0/plant/NDATA/edge9', payload: spData(1, [{ alias: 1, value: 1 }]), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'Sparkplug bytes that are not protobuf', topic: 'spBv1.0/plant/NDATA/edge1', payload: Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'scalar number', topic: 'ha/h1/temperature', payload: '21.5', outcome: 'stored', devices: ['h1'] },
  { name: 'scalar not a number', topic: 'ha/h1/temperature', payload: 'warm', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
  { name: 'scalar empty', topic: 'ha/h1/temperature', payload: '', outcome: 'dead_lettered', letters: ['FERRY_ERR_PAYLOAD_SCHEMA'] },
];

const PATTERNS = [
  { pattern: 'homeassistant/#', action: 'ignore' as const, reason: 'home assistant discovery' },
  { pattern: 'shellies/announce', action: 'ignore' as const, reason: 'shelly announce' },
  { pattern: 'cmnd/#', action: 'ignore' as const, reason: 'command requests' },
  { pattern: 'devices/{deviceId}/telemetry' },
  { pattern: 'z2m/{deviceId#}', format: 'flat' as const, coerce: { temperature: 'number' as const } },
  { pattern: 'telegraf/{deviceId}', format: 'influx-line' as const },
  { pattern: 'stat/{deviceId}/+', format: 'tasmota' as const },
  { pattern: 'tb/{deviceId}/telemetry', format: 'thingsboard' as const },
  { pattern: 'spBv1.0/{deviceId#}', format: 'sparkplug-b' as const },
  { pattern: 'ha/{deviceId}/+', format: 'scalar' as const, scalar: { metric: '{-1}', type: 'number' as const } },
];

let uplink: TestBroker;
let cloud: Cloud;
let dir: { path: string; remove(): void };
let gateway: Gateway;
let device: MqttClient;

beforeAll(async () => {
  uplink = await startTestBroker();
  cloud = await startCloud(uplink.url, 'gw-hostile', { autoAck: true });
  dir = tempDir();
  gateway = createGateway(
    { gatewayId: 'gw-hostile', dataDir: dir.path, devices: { listen: { port: 0 }, patterns: PATTERNS }, http: false, uplink: { url: uplink.url, reconnectMinMs: 50, reconnectMaxMs: 200 } },
    { logger: silentLogger(), registry: createRegistry() },
  );
  await gateway.ready();
  device = await connectDevice(gateway.deviceUrl!, 'hostile-device');
}, 60_000);

afterAll(async () => {
  await device?.endAsync(true);
  await gateway?.close();
  await cloud?.close();
  await uplink?.close();
  dir?.remove();
});

describe('hostile device input at a running gateway', () => {
  it(`has at least 60 inputs (${CASES.length})`, () => {
    expect(CASES.length).toBeGreaterThanOrEqual(60);
  });

  it('gives each input its exact outcome, keeps the invariant after each, and stores every good reading around them', async () => {
    const results: { name: string; outcome: Outcome | 'none'; letters: string[]; devices: string[]; metrics: unknown }[] = [];
    let lastLetterId = 0;
    let goodSeq = 0;
    for (const c of CASES) {
      const before = gateway.stats().messages;
      const writtenBefore = new Set(cloud.written.keys());
      await device.publishAsync(c.topic, c.payload, { qos: 1 });
      const after = gateway.stats().messages;
      const outcome = (['stored', 'dead_lettered', 'ignored'] as const).find((o) => after[o] === before[o] + 1) ?? 'none';
      const letters = gateway.deadLetters.list({ afterId: lastLetterId, includeReplayed: true });
      lastLetterId = letters.at(-1)?.id ?? lastLetterId;
      // Every acknowledged message is one of the three, once, and nothing is deferred here.
      expect(after.received - before.received, c.name).toBe(1);
      expect(after.received, c.name).toBe(after.stored + after.dead_lettered + after.ignored + after.deferred);
      // A good reading between every two hostile inputs.
      goodSeq += 1;
      await device.publishAsync('devices/good/telemetry', json({ ts: NOW, seq: goodSeq, metrics: { n: goodSeq } }), { qos: 1 });
      const fresh = () => [...cloud.written].filter(([key, r]) => !writtenBefore.has(key) && r.deviceId !== 'good');
      if (outcome === 'stored') await waitFor(() => fresh().length > 0, { what: `the readings of "${c.name}"` });
      const devices = fresh().map(([, r]) => r.deviceId);
      results.push({ name: c.name, outcome, letters: letters.map((l) => l.code), devices: [...new Set(devices)], metrics: fresh()[0]?.[1].metrics });
    }
    const expected = CASES.map((c) => ({ name: c.name, outcome: c.outcome, letters: [...(c.letters ?? [])], devices: [...(c.devices ?? [])] }));
    // All inputs compared at once (a failure lists each input that differs, by name); devices where given.
    expect(results.map((r) => ({ name: r.name, outcome: r.outcome, letters: r.letters }))).toEqual(expected.map((e) => ({ name: e.name, outcome: e.outcome, letters: e.letters })));
    for (const [i, r] of results.entries()) {
      const e = expected[i]!;
      if (e.outcome === 'stored') expect(r.devices, e.name).toEqual(expect.arrayContaining(e.devices));
      const metrics = CASES[i]?.metrics;
      if (metrics) expect(r.metrics, e.name).toEqual(metrics);
    }
    await waitFor(() => [...cloud.written.values()].filter((r) => r.deviceId === 'good').length === goodSeq, { what: 'every good reading at the cloud', timeoutMs: 30_000 });
    const totals = gateway.stats().messages;
    expect(totals.received).toBe(CASES.length + goodSeq);
    expect(totals.stored).toBe(CASES.filter((c) => c.outcome === 'stored').length + goodSeq);
  }, 120_000);
});
