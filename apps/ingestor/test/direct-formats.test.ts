// Devices in their own formats publishing straight to the cloud broker (real Mosquitto, the real
// mosquitto_pub client): the ingestor reads them with the gateway's decoders and pattern entries,
// takes their availability messages into device health, and replays their dead letters after a
// config fix, through the ops API and `ferry deadletter replay`.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSparkplugPayload, SparkplugDataType as T } from '@ferry/decoders';
import type { FormatConfigInput } from '@ferry/decoders';
import { createSqliteSink } from '@ferry/sinks';
import type { Point } from '@ferry/sinks';
import { findBinary, makeTempDir, waitFor } from '@ferry/testkit';
import { DIRECT_SOURCE, parseIngestorConfig } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { useMosquitto } from './mosquitto-env.js';

const mosquitto = useMosquitto();

const run = promisify(execFile);
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'ferry', 'dist', 'main.js');

let tmp: string;
let n = 0;
// Device times a minute in the past, whole seconds so every unit can express them exactly.
const t0 = Math.floor((Date.now() - 60_000) / 1000) * 1000;

beforeAll(async () => {
  tmp = await makeTempDir('direct-formats');
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

async function pub(topic: string, payload: string | Uint8Array): Promise<void> {
  const url = new URL(mosquitto.url);
  const args = ['-h', url.hostname, '-p', url.port, '-q', '1', '-t', topic];
  if (typeof payload === 'string') args.push('-m', payload);
  else {
    // Binary payloads (Sparkplug B protobuf) go through a file: -m cannot carry NUL bytes.
    const file = join(tmp, `payload-${++n}.bin`);
    await writeFile(file, payload);
    args.push('-f', file);
  }
  await run(findBinary('mosquitto_pub'), args);
}

function config(dir: string, patterns: FormatConfigInput[], extra: Partial<IngestorConfigInput> = {}): IngestorConfigInput {
  return {
    // One id per data dir: the broker session (and what it queued) belongs to it.
    ingestorId: `direct-formats-${process.pid}-${dir.slice(-6).replace(/[^a-zA-Z0-9]/g, '')}`,
    dataDir: dir,
    broker: { url: mosquitto.url },
    direct: { patterns },
    write: { lingerMs: 5, closeTimeoutMs: 200, retry: { initialMs: 50, maxMs: 200 } },
    http: false,
    logLevel: 'silent',
    ...extra,
  };
}

const start = (cfg: IngestorConfigInput): Promise<Ingestor> => mosquitto.startIngestor(cfg);

const dataDir = (): Promise<string> => mosquitto.dataDir('ingestor-direct-formats');

function settled(ingestor: Ingestor, received: number): Promise<unknown> {
  return waitFor(
    () => {
      const s = ingestor.stats();
      const direct = s.byGateway[DIRECT_SOURCE];
      return direct !== undefined && direct.received >= received && direct.inFlight === 0 && s.journalRows === 0;
    },
    { timeoutMs: 30_000, what: `${received} direct readings settled and the journal empty` },
  );
}

async function pointsIn(dir: string): Promise<Point[]> {
  const sink = createSqliteSink({ path: join(dir, 'points.db') });
  try {
    return sink.query({});
  } finally {
    await sink.close();
  }
}

const of = (points: readonly Point[], device: string, measurement = 'telemetry'): Point[] =>
  points.filter((p) => p.measurement === measurement && p.tags.device === device);
const tsMs = (p: Point | undefined): number => Number((p?.timestampNs ?? 0n) / 1_000_000n);

describe('direct devices in their own formats', () => {
  it('takes the gateway\'s pattern entries, defaults to Ferry\'s own topics, and names a bad entry', () => {
    const base = { dataDir: '/tmp/unused', broker: { url: 'mqtt://127.0.0.1:1883' } };
    expect(parseIngestorConfig({ ...base, direct: {} }).direct?.patterns).toEqual([
      { pattern: 'devices/{deviceId}/telemetry', kind: 'telemetry', format: 'ferry' },
      { pattern: 'devices/{deviceId}/status', kind: 'status', format: 'ferry' },
    ]);
    const bad = (() => {
      try {
        parseIngestorConfig({ ...base, direct: { patterns: [{ pattern: 'tele/+/SENSOR', format: 'tasmota' }, { pattern: 'x/{deviceId}', format: 'nope' }] } });
      } catch (err) {
        return err as { code?: string; details?: { fields?: string[] } };
      }
      return undefined;
    })();
    expect(bad?.code).toBe('FERRY_ERR_CONFIG_INVALID');
    expect(bad?.details?.fields).toEqual(expect.arrayContaining(['direct.patterns.0.pattern', 'direct.patterns.1.format']));
  });

  it('writes Zigbee2MQTT, Tasmota, line protocol and Sparkplug B from mosquitto_pub, and takes their availability into device health', async () => {
    const dir = await dataDir();
    const ingestor = await start(
      config(dir, [
        { pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat', coerce: { temperature: 'number' } },
        { pattern: 'tele/{deviceId}/+', format: 'tasmota' },
        { pattern: 'telegraf/{deviceId}/+', format: 'influx-line' },
        { pattern: 'spBv1.0/{deviceId#}', format: 'sparkplug-b' },
        { pattern: 'esphome/{deviceId#}', format: 'esphome' },
      ]),
    );
    const health = ingestor.health;
    if (!health) throw new Error('health is on by default');

    await pub('zigbee2mqtt/kitchen/sensor', JSON.stringify({ temperature: '21.50', battery: 97, color: '008000', last_seen: null }));
    await pub('zigbee2mqtt/kitchen/sensor/availability', '{"state":"online"}');
    await pub('zigbee2mqtt/garage/door/availability', 'offline');
    // A bare NaN is set aside alone; the rest of the reading is written.
    await pub('zigbee2mqtt/attic/sensor', '{"temperature": 19.5, "voc": NaN}');
    // Zigbee2MQTT's own bridge topics hold no reading: their journal rows settle all the same.
    await pub('zigbee2mqtt/bridge/state', 'online');
    await pub('tele/plug001/SENSOR', JSON.stringify({ Time: new Date(t0).toISOString().replace('.000Z', '+00:00'), ENERGY: { Total: 12.5, Power: 48 } }));
    await pub('tele/plug001/LWT', 'Offline');
    await pub('telegraf/pi4/cpu', `cpu,cpu=cpu-total usage_idle=97.5,uptime=9007199254740993i ${t0}000000\nmem used_percent=21.5 ${t0}000000`);
    await pub('spBv1.0/plant1/NBIRTH/edge1', encodeSparkplugPayload({ timestamp: t0, seq: 0, metrics: [
      { name: 'bdSeq', datatype: T.UInt64, value: 1 },
      { name: 'Line/Speed', alias: 1, datatype: T.Float, value: 1.5 },
    ] }));
    await pub('spBv1.0/plant1/NDATA/edge1', encodeSparkplugPayload({ timestamp: t0 + 2000, seq: 1, metrics: [{ alias: 1, datatype: T.Float, value: 2.25 }] }));
    await pub('spBv1.0/plant1/NDEATH/edge1', encodeSparkplugPayload({ metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: 1 }] }));
    await pub('esphome/hall/sensor/co2/state', 'nan');

    // Availability reaches health once its status reading is written, as through a gateway.
    await waitFor(() => health.fleet.device('plug001')?.liveness === 'offline', { timeoutMs: 30_000, what: 'the Tasmota LWT turning plug001 offline' });
    await waitFor(() => health.fleet.device('plant1/edge1')?.liveness === 'offline', { timeoutMs: 30_000, what: 'the Sparkplug NDEATH turning plant1/edge1 offline' });
    await waitFor(() => health.fleet.device('garage/door')?.liveness === 'offline', { timeoutMs: 30_000, what: 'the Zigbee2MQTT availability turning garage/door offline' });
    expect(health.fleet.device('kitchen/sensor')?.liveness).toBe('online');

    // 4 (z2m) + 2 (Tasmota) + 2 (line protocol) + NBIRTH, its status, NDATA, NDEATH + the ESPHome refusal.
    await settled(ingestor, 13);
    expect(ingestor.stats().byGateway[DIRECT_SOURCE]).toMatchObject({ received: 13, written: 12, rejected: 1, duplicates: 0 });
    const letters = ingestor.deadLetters.list({}).map((l) => ({ code: l.code, source: l.source, kept: l.reason.includes('the rest of the reading was kept') }));
    expect(letters).toEqual(
      expect.arrayContaining([
        { code: 'FERRY_ERR_VALUE_NOT_FINITE', source: { topic: 'zigbee2mqtt/attic/sensor', deviceId: 'attic/sensor' }, kept: true },
        { code: 'FERRY_ERR_VALUE_NOT_FINITE', source: { topic: 'esphome/hall/sensor/co2/state', deviceId: 'hall' }, kept: false },
      ]),
    );
    expect(letters).toHaveLength(2);
    await ingestor.close();

    const points = await pointsIn(dir);
    const [z2m] = of(points, 'kitchen/sensor');
    expect(z2m?.fields).toEqual({ temperature: 21.5, battery: 97, color: '008000' });
    expect(z2m?.tags).toEqual({ device: 'kitchen/sensor', gateway: 'direct' });
    expect(of(points, 'kitchen/sensor', 'device_status').map((p) => p.fields)).toEqual([{ state: 'online' }]);
    expect(of(points, 'attic/sensor').map((p) => p.fields)).toEqual([{ temperature: 19.5 }]);

    const [plug] = of(points, 'plug001');
    expect(plug?.fields).toEqual({ energy_total: 12.5, energy_power: 48 });
    expect(tsMs(plug)).toBe(t0);
    expect(of(points, 'plug001', 'device_status').map((p) => p.fields)).toEqual([{ state: 'offline' }]);

    expect(of(points, 'pi4').map((p) => [p.tags.cpu ?? null, p.fields, tsMs(p)])).toEqual(
      expect.arrayContaining([
        ['cpu-total', { cpu_usage_idle: 97.5, cpu_uptime: '9007199254740993' }, t0],
        [null, { mem_used_percent: 21.5 }, t0],
      ]),
    );

    const plant = of(points, 'plant1/edge1').sort((a, b) => tsMs(a) - tsMs(b));
    expect(plant.map((p) => [tsMs(p), p.fields])).toEqual([
      [t0, { 'Line/Speed': 1.5 }],
      [t0 + 2000, { 'Line/Speed': 2.25 }],
    ]);
    expect(of(points, 'plant1/edge1', 'device_status').map((p) => p.fields.state).sort()).toEqual(['offline', 'online']);
  });

  it('replays a dead letter after the config fix, through `ferry deadletter replay` and the ops API, keeping its topic', async () => {
    const dir = await dataDir();
    const sensor = JSON.stringify({ Time: new Date(t0).toISOString().replace('.000Z', '+00:00'), ENERGY: { Total: 3.25, Power: 7 } });
    // Misconfigured: Tasmota's topics read as Ferry's own JSON, which has no nested objects.
    const wrong = await start(config(dir, [{ pattern: 'tele/{deviceId}/+' }]));
    await pub('tele/plug9/SENSOR', sensor);
    await settled(wrong, 1);
    const [letter] = wrong.deadLetters.list({});
    expect(letter).toMatchObject({ source: { topic: 'tele/plug9/SENSOR', deviceId: 'plug9' }, replayedAt: null });
    expect(letter?.payload.toString()).toBe(sensor);
    const unfixed = await wrong.replay(letter!.id);
    expect(unfixed).toMatchObject({ outcome: 'rejected', code: letter?.code });
    await wrong.close();

    const fixed = await start(config(dir, [{ pattern: 'tele/{deviceId}/+', format: 'tasmota' }], { http: { host: '127.0.0.1', port: 0 } }));
    const ops = fixed.httpUrl!;
    const cli = await run(process.execPath, [CLI, 'deadletter', 'replay', String(letter!.id), '--ingestor', ops]);
    expect(JSON.parse(cli.stdout.trim())).toMatchObject({ id: letter!.id, status: 200, outcome: 'written' });
    expect(fixed.deadLetters.get(letter!.id)?.replayedAt).not.toBeNull();

    // Once more through the ops API: the same reading, recognised by the device's own identity.
    const again = await fetch(`${ops}/api/deadletters/${letter!.id}/replay`, { method: 'POST' });
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ outcome: 'duplicate' });
    await fixed.close();

    const [p] = of(await pointsIn(dir), 'plug9');
    expect(p?.fields).toEqual({ energy_total: 3.25, energy_power: 7 });
    expect(p?.tags).toEqual({ device: 'plug9', gateway: 'direct' });
    expect(tsMs(p)).toBe(t0);
  });
});
