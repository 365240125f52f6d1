import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { isFerryError } from '@ferry/protocol';
import { ManualClock, silentLogger } from '@ferry/runtime';
import { startMosquitto, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { createSimulator } from '../src/index.js';
import type { Simulator, SimulatorConfigInput } from '../src/index.js';

let mosquitto: ServerHandle;
const simulators: Simulator[] = [];
const clients: MqttClient[] = [];

beforeAll(async () => {
  mosquitto = await startMosquitto();
});

afterAll(async () => {
  await mosquitto.stop();
});

afterEach(async () => {
  await Promise.all(simulators.splice(0).map((s) => s.close()));
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
});

interface Received {
  topic: string;
  payload: string;
  retain: boolean;
}

async function subscribe(filter: string): Promise<Received[]> {
  const client = await mqtt.connectAsync(mosquitto.url, { protocolVersion: 4, reconnectPeriod: 0 });
  clients.push(client);
  const received: Received[] = [];
  client.on('message', (topic, payload, packet) => received.push({ topic, payload: payload.toString(), retain: packet.retain }));
  await client.subscribeAsync(filter, { qos: 1 });
  return received;
}

function simulate(config: Partial<SimulatorConfigInput>, clock?: ManualClock): Simulator {
  const simulator = createSimulator(
    { url: mosquitto.url, intervalMs: 20, dropoutProbability: 0, ...config },
    { logger: silentLogger(), ...(clock ? { clock } : {}) },
  );
  simulators.push(simulator);
  return simulator;
}

interface Telemetry {
  ts: number;
  seq: number;
  metrics: Record<string, number>;
}

describe('simulator', () => {
  it('publishes native JSON telemetry on each device topic', async () => {
    const received = await subscribe('shape/+/telemetry');
    const simulator = simulate({ devices: 3, readingsPerDevice: 4, topicPattern: 'shape/{deviceId}/telemetry', deviceIdPrefix: 'shape-' });
    await simulator.ready();
    await simulator.done;
    await waitFor(() => received.length >= 12, { what: '12 readings at the subscriber' });

    expect(new Set(received.map((m) => m.topic))).toEqual(new Set(['shape/shape-0/telemetry', 'shape/shape-1/telemetry', 'shape/shape-2/telemetry']));
    for (const message of received) {
      const reading = JSON.parse(message.payload) as Telemetry;
      expect(Object.keys(reading).sort()).toEqual(['metrics', 'seq', 'ts']);
      expect(Object.keys(reading.metrics).sort()).toEqual(['battery', 'humidity', 'rssi', 'temperature']);
      expect(Object.values(reading.metrics).every((v) => typeof v === 'number' && Number.isFinite(v))).toBe(true);
      expect(Math.abs(reading.ts - Date.now())).toBeLessThan(60_000);
    }
    for (const device of ['shape-0', 'shape-1', 'shape-2']) {
      const seqs = received.filter((m) => m.topic.includes(`/${device}/`)).map((m) => (JSON.parse(m.payload) as Telemetry).seq);
      expect(seqs).toEqual([0, 1, 2, 3]);
    }
  });

  it('resolves done once every reading was published and acknowledged, dropouts included', async () => {
    const simulator = simulate({ devices: 5, readingsPerDevice: 6, dropoutProbability: 0.3, deviceIdPrefix: 'done-' });
    await simulator.ready();
    await simulator.done;
    expect(simulator.stats()).toEqual({ devices: 5, published: 30, acknowledged: 30, failed: 0, statuses: 5 });
  });

  it('spreads many devices over a few shared connections, keeping device ids in the topics', async () => {
    const received = await subscribe('devices/+/telemetry');
    const simulator = simulate({ devices: 60, readingsPerDevice: 2, connections: 3, deviceIdPrefix: 'fleet-' });
    await simulator.ready();
    await simulator.done;
    expect(simulator.stats()).toMatchObject({ devices: 60, published: 120, acknowledged: 120 });
    await waitFor(() => received.filter((m) => m.topic.includes('/fleet-')).length >= 120, { what: '120 fleet readings' });
    const ids = new Set(received.map((m) => m.topic.split('/')[1]));
    expect(ids.size).toBe(60);
    expect(ids.has('fleet-59')).toBe(true);
  });

  it('publishes retained online status on connect and offline on close', async () => {
    const simulator = simulate({ devices: 2, deviceIdPrefix: 'status-', intervalMs: 1000 });
    await simulator.ready();
    const online = await subscribe('devices/+/status');
    await waitFor(() => online.filter((m) => m.topic.includes('status-')).length >= 2, { what: 'retained online statuses' });
    const mine = online.filter((m) => m.topic.includes('status-'));
    expect(mine.every((m) => m.retain && (JSON.parse(m.payload) as { state: string }).state === 'online')).toBe(true);

    await simulator.close();
    const after = await subscribe('devices/+/status');
    await waitFor(() => after.filter((m) => m.topic.includes('status-')).length >= 2, { what: 'retained offline statuses' });
    expect(after.filter((m) => m.topic.includes('status-')).map((m) => (JSON.parse(m.payload) as { state: string }).state)).toEqual([
      'offline',
      'offline',
    ]);
  });

  it('sends the same readings for the same seed and clock', async () => {
    const runs: Map<string, string>[] = [];
    for (const run of [1, 2]) {
      const received = await subscribe(`determinism${run}/+/telemetry`);
      const simulator = simulate(
        { devices: 3, readingsPerDevice: 5, seed: 1234, dropoutProbability: 0.2, topicPattern: `determinism${run}/{deviceId}/telemetry` },
        new ManualClock(Date.UTC(2025, 0, 1, 12)),
      );
      await simulator.ready();
      await simulator.done;
      await waitFor(() => received.length >= 15, { what: '15 readings' });
      runs.push(new Map(received.map((m) => [`${m.topic.split('/')[1]}#${(JSON.parse(m.payload) as Telemetry).seq}`, m.payload])));
    }
    expect(runs[0]!.size).toBe(15);
    expect(runs[0]).toEqual(runs[1]);
  });

  it('refuses a bad config value naming the field', () => {
    for (const [config, field] of [
      [{ url: 'mqtt://127.0.0.1:1883', devices: 0 }, 'devices'],
      [{ url: 'http://127.0.0.1', devices: 1 }, 'url'],
      [{ url: 'mqtt://127.0.0.1:1883', topicPattern: 'devices/telemetry' }, 'topicPattern'],
    ] as const) {
      let caught: unknown;
      try {
        createSimulator(config, { logger: silentLogger() });
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'FERRY_ERR_CONFIG_INVALID')).toBe(true);
      expect((caught as Error).message).toContain(field);
    }
  });
});
