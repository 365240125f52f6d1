// The outbox bound is hit while the uplink is down: the oldest readings are dropped (the default
// policy), and what the gateway says it dropped is exactly what the database misses.
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeGatewayStatus, uplinkTopics } from '@ferry/protocol';
import type { GatewayStatus } from '@ferry/protocol';
import { waitFor } from '@ferry/testkit';
import { compareDelivery, expectedSet, publishReadings, sqliteCopies, totalOf } from './devices.js';
import { gatewayOutbox, metricValue } from './processes.js';
import { GATEWAY_ID, startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const DEVICES = 5;
const PER_DEVICE = 1_000;
const MAX_ROWS = 2_000;

function sum(record: Record<string, number>): number {
  return Object.values(record).reduce((a, b) => a + b, 0);
}

describe('outbox limit', { timeout: 900_000 }, () => {
  let stack: ChildStack;

  beforeAll(async () => {
    stack = await startChildStack({ gateway: { outbox: { maxRows: MAX_ROWS } } });
  }, 300_000);

  afterAll(async () => {
    await stack?.close();
  });

  it('drops the oldest readings when full, and counts exactly the ones the database misses', async () => {
    const deviceIds = Array.from({ length: DEVICES }, (_, d) => `limit-${d}`);
    const baseTs = Date.now() - 60_000;
    await stack.broker.kill();
    await waitFor(async () => (await stack.gateway.health()).uplinkConnected === false, { timeoutMs: 120_000, what: 'the uplink down' });

    const outage = await publishReadings({ url: stack.deviceUrl, deviceIds, from: 0, count: PER_DEVICE, window: 10, baseTs });
    const published = totalOf(expectedSet(outage));
    expect(published).toBe(DEVICES * PER_DEVICE);
    const held = await gatewayOutbox(stack.gateway);
    expect(held.depth).toBe(MAX_ROWS);
    const dropped = sum(held.dropped);
    expect(dropped).toBe(published - MAX_ROWS);
    expect(metricValue(await stack.gateway.metrics(), 'ferry_gateway_outbox_dropped_readings')).toBe(dropped);

    await stack.broker.start();
    await waitFor(
      async () => (await gatewayOutbox(stack.gateway)).depth === 0 && compareDelivery(expectedSet(outage), sqliteCopies(stack.pointsDb)).present >= MAX_ROWS,
      { timeoutMs: 300_000, intervalMs: 200, what: 'the outbox to drain' },
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${stack.logs()}`);
    });

    const delivery = compareDelivery(expectedSet(outage), sqliteCopies(stack.pointsDb));
    expect(delivery.duplicated).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    // Exact accounting: in the database + counted as dropped == published.
    expect(delivery.present + sum((await gatewayOutbox(stack.gateway)).dropped)).toBe(published);
    expect(delivery.missing.length).toBe(dropped);

    // The missing ones are the oldest: per device, every missing seq precedes every stored one.
    const missingByDevice = new Map<string, number[]>();
    for (const key of delivery.missing) {
      const [device, n] = key.split(':') as [string, string];
      missingByDevice.set(device, [...(missingByDevice.get(device) ?? []), Number(n)]);
    }
    const copies = sqliteCopies(stack.pointsDb);
    for (const device of deviceIds) {
      const missing = missingByDevice.get(device) ?? [];
      const stored = [...(copies.get(device)?.keys() ?? [])];
      expect(stored.length + missing.length).toBe(PER_DEVICE);
      if (missing.length > 0 && stored.length > 0) expect(Math.max(...missing)).toBeLessThan(Math.min(...stored));
    }

    // The loss is named, not just counted: per device, the drop counts and the gap records
    // (first and last device seq) on the gateway's /gaps match exactly what the database misses.
    const named = (await (await fetch(`${stack.gateway.httpUrl}/gaps`)).json()) as {
      gaps: { deviceId: string | null; reason: string; count: number | null; firstDeviceSeq: number | null; lastDeviceSeq: number | null }[];
      dropped: { reason: string; deviceId: string; count: number }[];
    };
    for (const device of deviceIds) {
      const missing = missingByDevice.get(device) ?? [];
      const counted = named.dropped.filter((d) => d.deviceId === device).reduce((a, d) => a + d.count, 0);
      expect(counted, `drops counted for ${device}`).toBe(missing.length);
      const gaps = named.gaps.filter((g) => g.deviceId === device);
      expect(gaps.reduce((a, g) => a + (g.count ?? 0), 0), `gap records of ${device}`).toBe(missing.length);
      if (missing.length > 0) {
        expect(Math.min(...gaps.map((g) => g.firstDeviceSeq ?? Infinity))).toBe(Math.min(...missing));
        expect(Math.max(...gaps.map((g) => g.lastDeviceSeq ?? -Infinity))).toBe(Math.max(...missing));
      }
    }

    // The loss is reported upstream too: the retained status carries the drop counts.
    const client = await mqtt.connectAsync(stack.brokerUrl, { protocolVersion: 4, clientId: `limit-status-${process.pid}`, clean: true });
    try {
      const statusTopic = uplinkTopics.status(GATEWAY_ID);
      let latest: GatewayStatus | undefined;
      client.on('message', (topic, payload) => {
        const decoded = topic === statusTopic ? decodeGatewayStatus(payload) : undefined;
        if (decoded?.state === 'online') latest = decoded;
      });
      await client.subscribeAsync(statusTopic, { qos: 1 });
      const status = await waitFor(() => (latest?.dropped !== undefined && sum(latest.dropped) === dropped ? latest : undefined), {
        timeoutMs: 120_000,
        what: `a gateway status reporting ${dropped} dropped readings (last: ${JSON.stringify(latest?.dropped)})`,
      });
      expect(sum(status.dropped ?? {})).toBe(dropped);
    } finally {
      await client.endAsync();
    }
  });
});
