// whenFull: 'compact' end to end: the uplink is down while devices publish past the outbox bound,
// then the broker and ingestor come up. The database must hold raw readings for the newest span
// and summaries for the oldest, each reading accounted for exactly once (raw, or inside one
// summary's count), with the summaries' count/min/max/mean matching the readings they replaced.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { createBroker } from '@ferry/broker';
import type { Broker } from '@ferry/broker';
import { COMPACTED_COUNT_METRIC, createGateway } from '@ferry/gateway';
import type { Gateway } from '@ferry/gateway';
import { createIngestor } from '@ferry/ingestor';
import type { Ingestor } from '@ferry/ingestor';
import { decodeGatewayStatus, uplinkTopics } from '@ferry/protocol';
import { createRegistry, silentLogger } from '@ferry/runtime';
import { createSqliteSink } from '@ferry/sinks';
import { stablePort, waitFor } from '@ferry/testkit';
import { BASE_TS, deviceId, drained, expectedTemperature, publishReadings } from './stack.js';

const DEVICES = 4;
const READINGS = 1_000;
const MAX_ROWS = 2_000;
const MINUTE = 60_000;
const GATEWAY_ID = 'gw-compact';

function msOf(timestampNs: bigint | number): number {
  return typeof timestampNs === 'bigint' ? Number(timestampNs / 1_000_000n) : Math.floor(timestampNs);
}

describe('outbox compaction end to end', { timeout: 240_000 }, () => {
  let dataDir: string | undefined;
  let gateway: Gateway | undefined;
  let ingestor: Ingestor | undefined;
  let broker: Broker | undefined;

  afterAll(async () => {
    await gateway?.close();
    await ingestor?.close();
    await broker?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('summarises the oldest backlog while the uplink is down, and the database accounts for every reading once', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'ferry-compact-'));
    const logger = silentLogger();
    const registry = createRegistry();
    const port = await stablePort();
    const brokerUrl = `mqtt://127.0.0.1:${port}`;
    // Nothing listens on the uplink port yet: the gateway keeps everything in its outbox.
    gateway = createGateway(
      {
        gatewayId: GATEWAY_ID,
        dataDir: join(dataDir, 'gateway'),
        devices: { listen: { host: '127.0.0.1', port: 0 } },
        uplink: { url: brokerUrl, reconnectMinMs: 100, reconnectMaxMs: 500 },
        outbox: { maxRows: MAX_ROWS, whenFull: 'compact', compaction: { interval: '1m' } },
        http: false,
      },
      { logger, registry },
    );
    await gateway.ready();

    expect(await publishReadings(gateway.deviceUrl!, DEVICES, READINGS)).toBe(DEVICES * READINGS);
    const held = gateway.stats();
    expect(held.outboxDepth).toBeLessThanOrEqual(MAX_ROWS);
    expect(held.dropped).toEqual({});
    expect(held.compacted?.readings).toBeGreaterThan(0);
    const compactedMetric = (await registry.getSingleMetric('ferry_gateway_compacted_readings_total')?.get())?.values[0]?.value;
    expect(compactedMetric).toBe(held.compacted?.readings);
    const summariesMetric = (await registry.getSingleMetric('ferry_gateway_compaction_summaries_total')?.get())?.values[0]?.value;
    expect(summariesMetric).toBe(held.compacted?.summaries);

    // The uplink returns: broker on the port the gateway dials, and the ingestor behind it.
    broker = createBroker({ listen: { host: '127.0.0.1', port }, http: false }, { logger });
    await broker.ready();
    ingestor = createIngestor({ dataDir: join(dataDir, 'ingestor'), broker: { url: brokerUrl }, http: false }, { logger });
    await ingestor.ready();

    // The gateway's retained status tells the cloud that spans were summarised.
    const client = await mqtt.connectAsync(brokerUrl, { protocolVersion: 4, clientId: `compact-status-${process.pid}`, clean: true });
    try {
      const statusTopic = uplinkTopics.status(GATEWAY_ID);
      let compactedInStatus: { readings: number; devices: { deviceId: string; readings: number }[] } | undefined;
      client.on('message', (topic, payload) => {
        const status = topic === statusTopic ? decodeGatewayStatus(payload) : undefined;
        if (status?.state === 'online' && status.compacted) compactedInStatus = status.compacted as typeof compactedInStatus;
      });
      await client.subscribeAsync(statusTopic, { qos: 1 });
      const reported = await waitFor(() => compactedInStatus, { timeoutMs: 60_000, what: 'a gateway status with compaction counts' });
      expect(reported.readings).toBe(held.compacted?.readings);
      expect(reported.devices.reduce((n, d) => n + d.readings, 0)).toBe(held.compacted?.readings);
    } finally {
      await client.endAsync();
    }

    await drained(gateway, 120_000);
    const compacted = gateway.stats().compacted;
    // No summary was refused by the ingestor (limits, schema, a seq conflict).
    expect(ingestor.stats()).toMatchObject({ rejected: 0 });
    await gateway.close();
    await ingestor.close();

    const sink = createSqliteSink({ path: join(dataDir, 'ingestor', 'points.db') });
    try {
      const points = sink.query({ measurement: 'telemetry' });
      let summarisedInDb = 0;
      for (let d = 0; d < DEVICES; d++) {
        const device = deviceId(d);
        const mine = points.filter((p) => p.tags.device === device);
        const summaries = mine.filter((p) => p.fields[COMPACTED_COUNT_METRIC] !== undefined);
        const raw = mine.filter((p) => p.fields[COMPACTED_COUNT_METRIC] === undefined);
        // Raw readings: each once, with its exact value.
        const rawIndex = raw.map((p) => (msOf(p.timestampNs) - BASE_TS) / 1000);
        expect(new Set(rawIndex).size, `raw readings of ${device} written once`).toBe(raw.length);
        for (const p of raw) expect(p.fields.temperature).toBe(expectedTemperature(d, (msOf(p.timestampNs) - BASE_TS) / 1000));
        // Everything not raw is inside a summary's count: nothing lost, nothing counted twice.
        const counted = summaries.reduce((n, p) => n + (p.fields[COMPACTED_COUNT_METRIC] as number), 0);
        expect(raw.length + counted, `readings of ${device} accounted for`).toBe(READINGS);
        summarisedInDb += counted;
        // Old readings were summarised and the newest is raw. (A reading committed just after its
        // minute was summarised stays raw beside that summary, so raw and summarised spans may
        // interleave at their edge; the counts above still add up.)
        const present = new Set(rawIndex);
        const replaced = Array.from({ length: READINGS }, (_, i) => i).filter((i) => !present.has(i));
        expect(replaced.length).toBeGreaterThan(0);
        expect(present.has(READINGS - 1)).toBe(true);
        const summaryMinutes = new Set(summaries.map((p) => msOf(p.timestampNs)));
        for (const i of replaced) {
          const minute = Math.floor((BASE_TS + i * 1000) / MINUTE) * MINUTE;
          expect(summaryMinutes.has(minute), `reading ${i} of ${device} is inside a summary`).toBe(true);
        }
        // Per minute, the summaries hold the count, min, max and mean of the readings they replaced.
        const byMinute = new Map<number, typeof summaries>();
        for (const p of summaries) {
          const start = msOf(p.timestampNs);
          expect(start % MINUTE).toBe(0);
          byMinute.set(start, [...(byMinute.get(start) ?? []), p]);
        }
        for (const [start, group] of byMinute) {
          const temps = replaced.filter((i) => BASE_TS + i * 1000 >= start && BASE_TS + i * 1000 < start + MINUTE).map((i) => expectedTemperature(d, i));
          const count = group.reduce((n, p) => n + (p.fields.temperature_count as number), 0);
          expect(count).toBe(temps.length);
          expect(group.reduce((n, p) => n + (p.fields[COMPACTED_COUNT_METRIC] as number), 0)).toBe(temps.length);
          expect(Math.min(...group.map((p) => p.fields.temperature_min as number))).toBe(Math.min(...temps));
          expect(Math.max(...group.map((p) => p.fields.temperature_max as number))).toBe(Math.max(...temps));
          const mean = group.reduce((n, p) => n + (p.fields.temperature as number) * (p.fields.temperature_count as number), 0) / count;
          expect(mean).toBeCloseTo(temps.reduce((a, b) => a + b, 0) / temps.length, 6);
        }
      }
      // What the gateway says it summarised is exactly what the database holds as summaries.
      expect(summarisedInDb).toBe(compacted?.readings);
    } finally {
      await sink.close();
    }
  });
});
