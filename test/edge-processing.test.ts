// Edge processing through the whole stack: devices -> gateway (pipelines) -> broker -> ingestor ->
// embedded SQLite. Deadband at the gateway sends fewer readings, and the series rebuilt from what
// reached the database stays within the band of what the device sent; operator state survives a
// gateway restart, so the restarted gateway continues the series exactly where it stopped.
import { join } from 'node:path';
import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import { createGateway } from '@ferry/gateway';
import type { GatewayConfigInput } from '@ferry/gateway';
import { silentLogger } from '@ferry/runtime';
import { createSqliteSink } from '@ferry/sinks';
import type { Point } from '@ferry/sinks';
import { BASE_TS, drained, startStack } from './stack.js';

const BAND = 0.5;
const HEARTBEAT_MS = 30_000;
const READINGS = 240;
const WINDOW_MS = 10_000;

/** A slow wave with a step and some jitter: a deadband suppresses most of it, not all. */
function temperature(i: number): number {
  const wave = 20 + 2 * Math.sin(i / 15) + (i >= 120 && i < 150 ? 3 : 0);
  return Math.round((wave + ((i * 7919) % 13) / 100) * 1000) / 1000;
}

function power(i: number): number {
  return 100 + ((i * 37) % 50);
}

const processing: NonNullable<GatewayConfigInput['processing']> = {
  before: 'outbox',
  pipelines: [
    { match: { metric: 'temperature' }, steps: [{ op: 'deadband', abs: BAND, heartbeatMs: HEARTBEAT_MS }] },
    { match: { metric: 'power' }, steps: [{ op: 'rollup', window: WINDOW_MS, aggregates: ['count', 'mean', 'max'], keepRaw: false }] },
  ],
};

async function publish(url: string, from: number, to: number, metrics: (i: number) => Record<string, number>): Promise<void> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `edge-${from}`, reconnectPeriod: 0 });
  try {
    for (let i = from; i < to; i++) {
      await client.publishAsync('devices/dev-01/telemetry', JSON.stringify({ ts: BASE_TS + i * 1000, seq: i, metrics: metrics(i) }), { qos: 1 });
    }
  } finally {
    await client.endAsync();
  }
}

function msOf(timestampNs: bigint): number {
  return Number(timestampNs / 1_000_000n);
}

/** The reference deadband: what a gateway that never restarted sends. */
function deadbandTimes(): number[] {
  const sent: number[] = [];
  let last: { ts: number; value: number } | undefined;
  for (let i = 0; i < READINGS; i++) {
    const ts = BASE_TS + i * 1000;
    const value = temperature(i);
    if (!last || Math.abs(value - last.value) > BAND || ts - last.ts >= HEARTBEAT_MS) {
      sent.push(ts);
      last = { ts, value };
    }
  }
  return sent;
}

function readPoints(path: string): Point[] {
  const sink = createSqliteSink({ path });
  try {
    return sink.query();
  } finally {
    void sink.close();
  }
}

describe.each(['outbox', 'uplink'] as const)('edge processing before the %s, through the whole stack', (before) => {
  it('deadband: fewer readings cross the uplink, the stored series stays within the band, heartbeats arrive', async () => {
    const stack = await startStack({ gateway: { processing: { before, pipelines: [processing.pipelines![0]!] } } });
    const pointsPath = join(stack.dataDir, 'ingestor', 'points.db');
    let metricsText = '';
    let health: { processing?: { readingsIn: number; readingsOut: number } } = {};
    try {
      await publish(stack.gateway.deviceUrl!, 0, READINGS, (i) => ({ temperature: temperature(i) }));
      await drained(stack.gateway);
      metricsText = await (await fetch(`${stack.gateway.httpUrl}/metrics`)).text();
      health = (await (await fetch(`${stack.gateway.httpUrl}/healthz`)).json()) as typeof health;
    } finally {
      await stack.gateway.close();
      await stack.ingestor.close();
    }
    try {
      const stats = stack.gateway.stats();
      const points = readPoints(pointsPath).filter((p) => p.fields.temperature !== undefined);
      const stored = points.map((p) => ({ ts: msOf(p.timestampNs), value: p.fields.temperature as number })).sort((a, b) => a.ts - b.ts);

      // Fewer readings crossed the uplink, and the savings are counted.
      expect(stored.length).toBeGreaterThan(5);
      expect(stored.length).toBeLessThan(READINGS / 2);
      expect(stats.sentReadings).toBe(stored.length);
      expect(stats.processing).toMatchObject({ before, readingsIn: READINGS, readingsOut: stored.length });
      expect(stats.processing!.bytesOut).toBeLessThan(stats.processing!.bytesIn);
      expect(stats.processing!.ops.deadband).toMatchObject({ in: READINGS, suppressed: READINGS - stored.length });
      expect(health.processing).toMatchObject({ readingsIn: READINGS, readingsOut: stored.length });
      expect(metricsText).toContain(`ferry_gateway_processing_readings_total{direction="in"} ${READINGS}`);
      expect(metricsText).toContain(`ferry_gateway_processing_readings_total{direction="out"} ${stored.length}`);
      expect(metricsText).toMatch(/ferry_gateway_processing_values_total\{op="deadband",reason="suppressed"\} \d+/);

      // Holding the last stored value rebuilds every reading the device sent within the band.
      let k = -1;
      for (let i = 0; i < READINGS; i++) {
        const ts = BASE_TS + i * 1000;
        while (k + 1 < stored.length && stored[k + 1]!.ts <= ts) k++;
        expect(k).toBeGreaterThanOrEqual(0);
        expect(Math.abs(temperature(i) - stored[k]!.value)).toBeLessThanOrEqual(BAND + 1e-9);
      }
      // Heartbeats: never longer than the heartbeat (plus one reading interval) without a value.
      for (let j = 1; j < stored.length; j++) expect(stored[j]!.ts - stored[j - 1]!.ts).toBeLessThanOrEqual(HEARTBEAT_MS);
      expect(stored.map((s) => s.ts)).toEqual(deadbandTimes());
    } finally {
      await stack.close();
    }
  });

  it('a restarted gateway continues the series from the state saved in its outbox', async () => {
    // Rollups make readings of their own, so they run before the outbox only.
    const config = before === 'outbox' ? processing : { before, pipelines: [processing.pipelines![0]!] };
    const stack = await startStack({ gateway: { processing: config } });
    const pointsPath = join(stack.dataDir, 'ingestor', 'points.db');
    const gatewayConfig: GatewayConfigInput = {
      gatewayId: 'gw-e2e',
      dataDir: join(stack.dataDir, 'gateway'),
      devices: { listen: { host: '127.0.0.1', port: 0 } },
      uplink: { url: stack.broker!.url! },
      http: false,
      processing: config,
    };
    const metrics = (i: number): Record<string, number> => ({ temperature: temperature(i), power: power(i) });
    // Stops in the middle of a rollup window and of a suppressed run.
    const cut = 125;
    let second: ReturnType<typeof createGateway> | undefined;
    try {
      await publish(stack.gateway.deviceUrl!, 0, cut, metrics);
      await drained(stack.gateway);
      await stack.gateway.close();
      second = createGateway(gatewayConfig, { logger: silentLogger() });
      await second.ready();
      expect(second.stats().processing).toMatchObject({ restoredSeries: before === 'outbox' ? 2 : 1, discardedSeries: 0 });
      await publish(second.deviceUrl!, cut, READINGS, metrics);
      await drained(second);
    } finally {
      await second?.close();
      await stack.ingestor.close();
    }
    try {
      const points = readPoints(pointsPath);
      const temperatures = points.filter((p) => p.fields.temperature !== undefined).map((p) => msOf(p.timestampNs));
      // Exactly what one gateway that never restarted sends: the first reading after the restart
      // was judged against the value sent before it.
      expect(temperatures.sort((a, b) => a - b)).toEqual(deadbandTimes());
      if (before === 'uplink') return;
      expect(points.some((p) => p.fields.power !== undefined)).toBe(false);

      // Every complete window, the one the restart cut included, holds all its readings.
      const windows = points.filter((p) => p.fields.power_count !== undefined).sort((a, b) => msOf(a.timestampNs) - msOf(b.timestampNs));
      const complete = Math.floor((READINGS * 1000) / WINDOW_MS) - 1;
      expect(windows).toHaveLength(complete);
      windows.forEach((w, n) => {
        const start = BASE_TS + n * WINDOW_MS;
        expect(msOf(w.timestampNs)).toBe(start);
        const values = Array.from({ length: WINDOW_MS / 1000 }, (_, j) => power(n * (WINDOW_MS / 1000) + j));
        expect(w.fields.power_count).toBe(values.length);
        expect(w.fields.power_max).toBe(Math.max(...values));
        expect(w.fields.power_mean as number).toBeCloseTo(values.reduce((a, b) => a + b, 0) / values.length, 9);
      });
    } finally {
      await stack.close();
    }
  });
});
