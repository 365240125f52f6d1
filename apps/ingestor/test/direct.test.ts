// Devices that publish straight to the cloud broker (real Mosquitto): their QoS 1 publishes are
// PUBACKed once journaled, written from the journal, deduped by the device's own identity, and
// what was journaled while the database was down survives a restart.
import { describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { createSqliteSink } from '@ferry/sinks';
import { freePort, waitFor } from '@ferry/testkit';
import { DIRECT_SOURCE } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { T0 } from './fixtures.js';
import { useMosquitto } from './mosquitto-env.js';

const mosquitto = useMosquitto();
const { cleanups } = mosquitto;

let n = 0;


const dataDir = (): Promise<string> => mosquitto.dataDir('ingestor-direct');

function config(dir: string, extra: Partial<IngestorConfigInput> = {}): IngestorConfigInput {
  return {
    ingestorId: `direct-${process.pid}-${n}`,
    dataDir: dir,
    broker: { url: mosquitto.url },
    direct: {},
    write: { lingerMs: 5, closeTimeoutMs: 200, retry: { initialMs: 50, maxMs: 200 } },
    http: false,
    logLevel: 'silent',
    ...extra,
  };
}

const start = (cfg: IngestorConfigInput): Promise<Ingestor> => mosquitto.startIngestor(cfg);

async function device(): Promise<MqttClient> {
  const client = await mqtt.connectAsync(mosquitto.url, { protocolVersion: 4, clientId: `dev-${process.pid}-${++n}`, clean: true });
  cleanups.push(() => client.endAsync());
  return client;
}

function countRows(path: string): number {
  const sink = createSqliteSink({ path });
  try {
    return sink.query({ measurement: 'telemetry' }).length;
  } finally {
    void sink.close();
  }
}

describe('devices publishing directly to the broker', () => {
  it('writes each reading once, taking a republish as a duplicate, and empties the journal', async () => {
    n++;
    const dir = await dataDir();
    const ingestor = await start(config(dir));
    const dev = await device();
    for (let i = 0; i < 20; i++) {
      await dev.publishAsync('devices/sensor-1/telemetry', JSON.stringify({ ts: T0 + i * 1000, seq: i, metrics: { t: 20 + i } }), { qos: 1 });
    }
    // The same reading again, as after a lost PUBACK.
    await dev.publishAsync('devices/sensor-1/telemetry', JSON.stringify({ ts: T0 + 3000, seq: 3, metrics: { t: 23 } }), { qos: 1 });
    await dev.publishAsync('devices/sensor-1/status', 'online', { qos: 1 });
    await waitFor(() => ingestor.stats().byGateway[DIRECT_SOURCE]?.inFlight === 0 && ingestor.stats().byGateway[DIRECT_SOURCE]?.received === 22, {
      timeoutMs: 20_000,
      what: 'every direct reading settled',
    });
    const s = ingestor.stats();
    expect(s.byGateway[DIRECT_SOURCE]).toMatchObject({ received: 22, written: 21, duplicates: 1, rejected: 0 });
    expect(s.deviceDuplicates).toBe(1);
    await waitFor(() => ingestor.stats().journalRows === 0, { timeoutMs: 10_000, what: 'the journal emptied' });
    await ingestor.close();
    expect(countRows(`${dir}/points.db`)).toBe(20);
  });

  it('journals while the database is down, keeps the readings in the journal across a restart, then writes them', async () => {
    n++;
    const dir = await dataDir();
    const deadPort = await freePort();
    const down = await start(config(dir, { sink: { type: 'influxdb1', url: `http://127.0.0.1:${deadPort}`, database: 'none' } }));
    const dev = await device();
    for (let i = 0; i < 10; i++) {
      await dev.publishAsync(`devices/d-${i % 2}/telemetry`, JSON.stringify({ ts: T0 + i * 1000, metrics: { t: i } }), { qos: 1 });
    }
    // The broker PUBACKs the device at once; the ingestor PUBACKs the broker after the journal commit.
    await waitFor(() => down.stats().journalRows === 10, { timeoutMs: 10_000, what: 'ten journaled messages' });
    expect(down.stats().written).toBe(0);
    await down.close();
    const up = await start(config(dir));
    await waitFor(() => up.stats().journalRows === 0, { timeoutMs: 20_000, what: 'the journal drained after the restart' });
    expect(up.stats().byGateway[DIRECT_SOURCE]).toMatchObject({ received: 10, written: 10, inFlight: 0 });
    await up.close();
    expect(countRows(`${dir}/points.db`)).toBe(10);
  });

  it('dead-letters what is not a reading and still acknowledges it', async () => {
    n++;
    const dir = await dataDir();
    const ingestor = await start(config(dir));
    const dev = await device();
    await dev.publishAsync('devices/bad/telemetry', 'not json', { qos: 1 });
    await waitFor(() => ingestor.stats().byGateway[DIRECT_SOURCE]?.rejected === 1, { timeoutMs: 10_000, what: 'the refusal' });
    const [letter] = ingestor.deadLetters.list({});
    expect(letter).toMatchObject({ code: 'FERRY_ERR_PAYLOAD_JSON', source: { deviceId: 'bad', topic: 'devices/bad/telemetry' } });
  });
});
