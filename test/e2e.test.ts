// The whole path for real: devices -> gateway (SQLite outbox) -> Ferry broker -> ingestor -> database,
// checked by querying each database back, value by value.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSqliteSink } from '@ferry/sinks';
import { startInfluxd, startVictoriaMetrics } from '@ferry/testkit';
import type { InfluxdHandle, VictoriaHandle } from '@ferry/testkit';
import { BASE_TS, deviceId, drained, expectedTemperature, publishReadings, startStack } from './stack.js';

const DEVICES = 10;
const READINGS = 100;

/** Every (device, reading index) pair exactly once, with its value. */
function expectedRows(): Map<string, number> {
  const rows = new Map<string, number>();
  for (let d = 0; d < DEVICES; d++) {
    for (let i = 0; i < READINGS; i++) rows.set(`${deviceId(d)}@${BASE_TS + i * 1000}`, expectedTemperature(d, i));
  }
  return rows;
}

function msOf(timestampNs: bigint | number): number {
  return typeof timestampNs === 'bigint' ? Number(timestampNs / 1_000_000n) : Math.floor(timestampNs);
}

describe('end to end: 10 devices x 100 readings', () => {
  let vm: VictoriaHandle;
  let influxd: InfluxdHandle;

  beforeAll(async () => {
    [vm, influxd] = await Promise.all([startVictoriaMetrics(), startInfluxd()]);
    await influxd.createDatabase('ferry');
  });
  afterAll(async () => {
    await Promise.all([vm?.stop(), influxd?.stop()]);
  });

  it('reach VictoriaMetrics through the InfluxDB v2 client, exactly once, and the outbox empties', async () => {
    const stack = await startStack({ sink: { type: 'influxdb2', url: vm.url, token: 'unused', org: 'ferry', bucket: 'ferry' } });
    try {
      expect(await publishReadings(stack.gateway.deviceUrl!, DEVICES, READINGS)).toBe(DEVICES * READINGS);
      await drained(stack.gateway);
      await vm.flush();
      const series = await vm.exportSeries('telemetry_temperature', { start: BASE_TS - 1000, end: BASE_TS + READINGS * 1000 });
      const got = new Map<string, number>();
      let samples = 0;
      for (const s of series) {
        expect(s.metric.gateway).toBe('gw-e2e');
        expect(s.metric.site).toBe('greenhouse');
        s.timestamps.forEach((ts, k) => {
          samples++;
          got.set(`${s.metric.device}@${ts}`, s.values[k]!);
        });
      }
      expect(samples).toBe(DEVICES * READINGS);
      expect(got).toEqual(expectedRows());
      expect(stack.gateway.stats().outboxDepth).toBe(0);
      expect(stack.ingestor.stats()).toMatchObject({ written: DEVICES * READINGS, duplicates: 0, rejected: 0 });
    } finally {
      await stack.close();
    }
  });

  it('reach InfluxDB 1.x through the v1 /write API, exactly once, and the outbox empties', async () => {
    const stack = await startStack({ sink: { type: 'influxdb1', url: influxd.url, database: 'ferry' } });
    try {
      await publishReadings(stack.gateway.deviceUrl!, DEVICES, READINGS);
      await drained(stack.gateway);
      const [series] = await influxd.query('ferry', 'SELECT "temperature", "humidity", "ok", "device" FROM "telemetry"');
      expect(series).toBeDefined();
      const cols = series!.columns;
      const at = (row: unknown[], name: string): unknown => row[cols.indexOf(name)];
      const got = new Map<string, number>();
      for (const row of series!.values) {
        const ms = Date.parse(String(at(row, 'time')));
        got.set(`${String(at(row, 'device'))}@${ms}`, at(row, 'temperature') as number);
        expect(typeof at(row, 'ok')).toBe('boolean');
      }
      expect(series!.values).toHaveLength(DEVICES * READINGS);
      expect(got).toEqual(expectedRows());
      expect(stack.gateway.stats().outboxDepth).toBe(0);
    } finally {
      await stack.close();
    }
  });

  it('reach the embedded SQLite store by default, exactly once, and the outbox empties', async () => {
    const stack = await startStack();
    const pointsPath = join(stack.dataDir, 'ingestor', 'points.db');
    try {
      await publishReadings(stack.gateway.deviceUrl!, DEVICES, READINGS);
      await drained(stack.gateway);
      expect(stack.gateway.stats().outboxDepth).toBe(0);
    } finally {
      await stack.gateway.close();
      await stack.ingestor.close();
    }
    const sink = createSqliteSink({ path: pointsPath });
    try {
      const points = sink.query({ measurement: 'telemetry' });
      expect(points).toHaveLength(DEVICES * READINGS);
      const got = new Map<string, number>();
      for (const p of points) got.set(`${p.tags.device}@${msOf(p.timestampNs)}`, p.fields.temperature as number);
      expect(got).toEqual(expectedRows());
    } finally {
      await sink.close();
      await stack.close();
    }
  });
});
