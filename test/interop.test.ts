// Interop with real Mosquitto: its command-line client as a device, and its broker as the uplink.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSqliteSink } from '@ferry/sinks';
import { findBinary, startMosquitto } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { BASE_TS, drained, publishReadings, startStack } from './stack.js';

const run = promisify(execFile);

describe('interop with Mosquitto', () => {
  let mosquitto: ServerHandle;
  beforeAll(async () => {
    mosquitto = await startMosquitto();
  });
  afterAll(async () => {
    await mosquitto?.stop();
  });

  it('takes readings published by the real mosquitto_pub client to the database', async () => {
    const stack = await startStack();
    const url = new URL(stack.gateway.deviceUrl!);
    const pub = findBinary('mosquitto_pub');
    try {
      for (let i = 0; i < 5; i++) {
        const payload = JSON.stringify({ ts: BASE_TS + i, metrics: { level: i * 1.5 } });
        await run(pub, ['-h', url.hostname, '-p', url.port, '-q', '1', '-i', `pub-${i}`, '-t', 'devices/tank-7/telemetry', '-m', payload]);
      }
      // A flat payload as Tasmota or Zigbee2MQTT devices send it.
      await run(pub, ['-h', url.hostname, '-p', url.port, '-q', '1', '-t', 'devices/plug-1/telemetry', '-m', '{"power":12.5,"on":true}']);
      await drained(stack.gateway);
      await stack.gateway.close();
      await stack.ingestor.close();
      const sink = createSqliteSink({ path: join(stack.dataDir, 'ingestor', 'points.db') });
      try {
        const tank = sink.query({ measurement: 'telemetry', tags: { device: 'tank-7' } });
        expect(tank.map((p) => p.fields.level).sort()).toEqual([0, 1.5, 3, 4.5, 6]);
        const plug = sink.query({ measurement: 'telemetry', tags: { device: 'plug-1' } });
        expect(plug).toHaveLength(1);
        expect(plug[0]!.fields).toEqual({ power: 12.5, on: true });
      } finally {
        await sink.close();
      }
    } finally {
      await stack.close();
    }
  });

  it("forwards through a real Mosquitto broker in place of Ferry's broker", async () => {
    const stack = await startStack({ brokerUrl: mosquitto.url, gatewayId: 'gw-mosq' });
    try {
      expect(await publishReadings(stack.gateway.deviceUrl!, 4, 50)).toBe(200);
      await drained(stack.gateway);
      expect(stack.ingestor.stats()).toMatchObject({ written: 200, duplicates: 0, rejected: 0 });
      expect(stack.gateway.stats()).toMatchObject({ outboxDepth: 0, ackedReadings: 200 });
    } finally {
      await stack.close();
    }
  });
});
