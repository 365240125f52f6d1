// Each device format, published by the real mosquitto_pub client to a gateway, reaches the
// database with the expected names, values, tags and timestamps.
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSparkplugPayload, SparkplugDataType as T } from '@ferry/decoders';
import { createSqliteSink } from '@ferry/sinks';
import type { Point } from '@ferry/sinks';
import { findBinary, makeTempDir } from '@ferry/testkit';
import { drained, startStack } from './stack.js';
import type { Stack } from './stack.js';

const run = promisify(execFile);

const PATTERNS = [
  { pattern: 'devices/{deviceId}/telemetry', kind: 'telemetry' },
  { pattern: 'zigbee2mqtt/{deviceId#}', kind: 'telemetry', format: 'flat', coerce: { temperature: 'number' } },
  { pattern: 'tele/{deviceId}/+', kind: 'telemetry', format: 'tasmota' },
  { pattern: 'shellies/{deviceId}/#', kind: 'telemetry', format: 'shelly-gen1' },
  { pattern: '{deviceId}/events/rpc', kind: 'telemetry', format: 'shelly-gen2' },
  { pattern: 'esphome/{deviceId#}', kind: 'telemetry', format: 'esphome' },
  { pattern: 'ha/{deviceId}/state', kind: 'telemetry', format: 'homeassistant' },
  { pattern: 'home/+/BTtoMQTT/{deviceId}', kind: 'telemetry', format: 'omg-ble' },
  { pattern: 'telegraf/{deviceId}/+', kind: 'telemetry', format: 'influx-line' },
  { pattern: 'v3/+/devices/{deviceId}/up', kind: 'telemetry', format: 'ttn-v3' },
  { pattern: 'spBv1.0/{deviceId#}', kind: 'telemetry', format: 'sparkplug-b' },
] as const;

describe('device formats end to end', () => {
  let stack: Stack;
  let points: Point[];
  let deadLetters: { code: string; topic: string | undefined }[];
  let tmp: string;
  // Device times a minute in the past, whole seconds so every unit can express them exactly.
  const t0 = Math.floor((Date.now() - 60_000) / 1000) * 1000;

  async function pub(topic: string, payload: string | Uint8Array): Promise<void> {
    const url = new URL(stack.gateway.deviceUrl!);
    const args = ['-h', url.hostname, '-p', url.port, '-q', '1', '-t', topic];
    if (typeof payload === 'string') args.push('-m', payload);
    else {
      // Binary payloads (Sparkplug B protobuf) go through a file: -m cannot carry NUL bytes.
      const file = join(tmp, `payload-${Math.random().toString(36).slice(2)}.bin`);
      await writeFile(file, payload);
      args.push('-f', file);
    }
    await run(findBinary('mosquitto_pub'), args);
  }

  function device(id: string, measurement = 'telemetry'): Point[] {
    return points.filter((p) => p.measurement === measurement && p.tags.device === id);
  }

  function tsMs(p: Point | undefined): number {
    return Number((p?.timestampNs ?? 0n) / 1_000_000n);
  }

  beforeAll(async () => {
    tmp = await makeTempDir('formats');
    stack = await startStack({ gateway: { devices: { listen: { host: '127.0.0.1', port: 0 }, patterns: [...PATTERNS] } } });
    await pub('zigbee2mqtt/kitchen/sensor', JSON.stringify({ temperature: '21.50', battery: 97, color: '008000', last_seen: null }));
    await pub('zigbee2mqtt/kitchen/sensor/availability', '{"state":"online"}');
    await pub('tele/plug001/SENSOR', JSON.stringify({ Time: new Date(t0).toISOString().replace('.000Z', '+00:00'), ENERGY: { Total: 12.5, Power: 48, ApparentPower: 50 } }));
    await pub('tele/plug001/LWT', 'Offline');
    await pub('shellies/shelly1pm-AB12/relay/0/power', '35.7');
    await pub('shellies/shelly1pm-AB12/relay/0', 'on');
    await pub('shellyplus1pm-c0ffee/events/rpc', JSON.stringify({ src: 'shellyplus1pm-c0ffee', method: 'NotifyFullStatus', params: { ts: t0 / 1000, 'switch:0': { id: 0, output: true, apower: 10, voltage: 230.5 } } }));
    await pub('shellyplus1pm-c0ffee/events/rpc', JSON.stringify({ src: 'shellyplus1pm-c0ffee', method: 'NotifyStatus', params: { ts: t0 / 1000 + 1, 'switch:0': { id: 0, apower: 55.5 } } }));
    await pub('esphome/floor1/hall/sensor/hall_temperature/state', '19.40000');
    await pub('esphome/floor1/hall/sensor/co2/state', 'nan');
    await pub('esphome/floor1/hall/status', 'offline');
    await pub('ha/desk_lamp/state', JSON.stringify({ state: 'ON', brightness: 200, color: { r: 255, g: 0, b: 10 } }));
    await pub('home/omg1/BTtoMQTT/A4C1385A20A1', JSON.stringify({ id: 'A4:C1:38:5A:20:A1', model: 'LYWSD03MMC', rssi: -71, tempc: 22.5, hum: 48, servicedata: '0123456789' }));
    await pub('telegraf/pi4/cpu', `cpu,cpu=cpu-total usage_idle=97.5,uptime=9007199254740993i ${t0}000000\nmem used_percent=21.5 ${t0}000000`);
    await pub('v3/app1@ttn/devices/soil-7/up', JSON.stringify({ end_device_ids: { device_id: 'soil-7', application_ids: { application_id: 'app1' } }, received_at: new Date(t0).toISOString(), uplink_message: { f_port: 2, f_cnt: 41, decoded_payload: { moisture: 31.5 }, rx_metadata: [{ rssi: -99, snr: 7.5 }, { rssi: -110, snr: -2 }] } }));
    await pub('spBv1.0/plant1/NBIRTH/edge1', encodeSparkplugPayload({ timestamp: t0, seq: 0, metrics: [
      { name: 'bdSeq', datatype: T.UInt64, value: 1 },
      { name: 'Line/Speed', alias: 1, datatype: T.Float, value: 1.5 },
      { name: 'Line/Count', alias: 2, datatype: T.UInt64, value: 2n ** 63n + 5n },
    ] }));
    await pub('spBv1.0/plant1/NDATA/edge1', encodeSparkplugPayload({ timestamp: t0 + 2000, seq: 1, metrics: [{ alias: 1, datatype: T.Float, value: 2.25 }, { alias: 2, datatype: T.UInt64, value: 7 }] }));
    await pub('spBv1.0/plant1/NDEATH/edge1', encodeSparkplugPayload({ metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: 1 }] }));
    await drained(stack.gateway);
    deadLetters = stack.gateway.deadLetters.list().map((l) => ({ code: l.code, topic: l.source.topic }));
    await stack.gateway.close();
    await stack.ingestor.close();
    const sink = createSqliteSink({ path: join(stack.dataDir, 'ingestor', 'points.db') });
    try {
      points = sink.query({});
    } finally {
      await sink.close();
    }
  });

  afterAll(async () => {
    await stack?.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('Zigbee2MQTT flat JSON: configured numeric string becomes a number, colour stays text, availability is a status', () => {
    const [p] = device('kitchen/sensor');
    expect(p?.fields).toEqual({ temperature: 21.5, battery: 97, color: '008000' });
    expect(p?.tags).toEqual({ device: 'kitchen/sensor', gateway: 'gw-e2e' });
    expect(device('kitchen/sensor', 'device_status').map((s) => s.fields)).toEqual([{ state: 'online' }]);
  });

  it('Tasmota SENSOR flattened to snake_case with the device time, LWT as offline', () => {
    const [p] = device('plug001');
    expect(p?.fields).toEqual({ energy_total: 12.5, energy_power: 48, energy_apparent_power: 50 });
    expect(tsMs(p)).toBe(t0);
    expect(device('plug001', 'device_status').map((s) => s.fields)).toEqual([{ state: 'offline' }]);
  });

  it('Shelly Gen1 per-value topics', () => {
    const fields = device('shelly1pm-AB12').map((p) => p.fields);
    expect(fields).toEqual(expect.arrayContaining([{ relay_0_power: 35.7 }, { relay_0: true }]));
  });

  it('Shelly Gen2: the partial update keeps the values of the full status', () => {
    const rows = device('shellyplus1pm-c0ffee').sort((a, b) => tsMs(a) - tsMs(b));
    expect(rows.map((p) => [tsMs(p), p.fields])).toEqual([
      [t0, { switch_0_output: true, switch_0_apower: 10, switch_0_voltage: 230.5 }],
      [t0 + 1000, { switch_0_output: true, switch_0_apower: 55.5, switch_0_voltage: 230.5 }],
    ]);
  });

  it('ESPHome: plain-text state as a number for an id with /, nan dropped, status offline', () => {
    expect(device('floor1/hall').map((p) => p.fields)).toEqual([{ hall_temperature: 19.4 }]);
    expect(device('floor1/hall', 'device_status').map((s) => s.fields)).toEqual([{ state: 'offline' }]);
    expect(deadLetters).toContainEqual({ code: 'FERRY_ERR_VALUE_NOT_FINITE', topic: 'esphome/floor1/hall/sensor/co2/state' });
  });

  it('Home Assistant JSON state', () => {
    expect(device('desk_lamp').map((p) => p.fields)).toEqual([{ state: true, brightness: 200, color_r: 255, color_g: 0, color_b: 10 }]);
  });

  it('OpenMQTTGateway BLE: MAC from the topic, model as a tag, rssi kept, service data stays text', () => {
    const [p] = device('A4C1385A20A1');
    expect(p?.tags).toEqual({ device: 'A4C1385A20A1', gateway: 'gw-e2e', model: 'LYWSD03MMC' });
    expect(p?.fields).toEqual({ rssi: -71, tempc: 22.5, hum: 48, servicedata: '0123456789' });
  });

  it('Telegraf line protocol: one point per line, tags kept, ns time, big integer exact', () => {
    const rows = device('pi4');
    expect(rows.map((p) => [p.tags.cpu ?? null, p.fields, tsMs(p)])).toEqual(
      expect.arrayContaining([
        ['cpu-total', { cpu_usage_idle: 97.5, cpu_uptime: '9007199254740993' }, t0],
        [null, { mem_used_percent: 21.5 }, t0],
      ]),
    );
  });

  it('The Things Stack uplink: decoded payload, best rssi/snr, received_at as time, app and port tags', () => {
    const [p] = device('soil-7');
    expect(p?.fields).toEqual({ moisture: 31.5, rssi: -99, snr: 7.5, gateway_count: 2, f_cnt: 41 });
    expect(p?.tags).toEqual({ device: 'soil-7', gateway: 'gw-e2e', application_id: 'app1', f_port: '2' });
    expect(tsMs(p)).toBe(t0);
  });

  it('Sparkplug B: BIRTH values, aliased DATA resolved, UInt64 beyond 2^53 exact, DEATH offline', () => {
    const rows = device('plant1/edge1').sort((a, b) => tsMs(a) - tsMs(b));
    expect(rows.map((p) => [tsMs(p), p.fields])).toEqual([
      [t0, { 'Line/Speed': 1.5, 'Line/Count': (2n ** 63n + 5n).toString() }],
      [t0 + 2000, { 'Line/Speed': 2.25, 'Line/Count': 7 }],
    ]);
    expect(device('plant1/edge1', 'device_status').map((s) => s.fields.state).sort()).toEqual(['offline', 'online']);
  });
});
