// The broker (our `ferry broker` child) is down for a while: the gateway's backlog grows, then
// drains completely and in order per device once it is back, and fresh readings published
// during the drain overtake the backlog (live first).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@ferry/testkit';
import { compareDelivery, expectedSet, mergeExpected, publishReadings, readSqliteArrivals, sqliteCopies, totalOf } from './devices.js';
import type { SqliteArrival } from './devices.js';
import { gatewayOutbox, metricValue } from './processes.js';
import { drainedDelivery, startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const BACKLOG_DEVICES = 5;
const BACKLOG_PER_DEVICE = 2_000;
const LIVE_DEVICES = 2;
const LIVE_PER_DEVICE = 20;

describe('broker down for a while', { timeout: 900_000 }, () => {
  let stack: ChildStack;
  const backlogIds = Array.from({ length: BACKLOG_DEVICES }, (_, d) => `backlog-${d}`);
  const liveIds = Array.from({ length: LIVE_DEVICES }, (_, d) => `live-${d}`);
  let arrivals: SqliteArrival[] = [];
  let depthWhenLivePublished = -1;

  beforeAll(async () => {
    // Small batches, a short window and a lingering ingestor make the drain last several
    // seconds, long enough for readings published during it to be told apart.
    stack = await startChildStack({
      gateway: { batch: { maxReadings: 50, maxInFlight: 2, lingerMs: 5 } },
      ingestor: { write: { lingerMs: 100 } },
    });
  }, 300_000);

  afterAll(async () => {
    await stack?.close();
  });

  it('grows the backlog while the broker is down, then drains it completely and in order per device', async () => {
    const baseTs = Date.now() - 60_000;
    // Warm-up: the whole path works before the outage.
    const warm = await publishReadings({ url: stack.deviceUrl, deviceIds: backlogIds, from: 0, count: 1, baseTs });
    await waitFor(() => compareDelivery(expectedSet(warm), sqliteCopies(stack.pointsDb)).missing.length === 0, {
      timeoutMs: 300_000,
      what: 'the warm-up readings in the database',
    });
    await waitFor(async () => (await gatewayOutbox(stack.gateway)).depth === 0, { timeoutMs: 120_000, what: 'the warm-up acks' });

    await stack.broker.kill();
    await waitFor(async () => (await stack.gateway.health()).uplinkConnected === false, { timeoutMs: 120_000, what: 'the gateway to see the uplink down' });
    const backlog = await publishReadings({ url: stack.deviceUrl, deviceIds: backlogIds, from: 1, count: BACKLOG_PER_DEVICE, window: 20, baseTs });
    expect(totalOf(expectedSet(backlog))).toBe(BACKLOG_DEVICES * BACKLOG_PER_DEVICE);
    const held = await gatewayOutbox(stack.gateway);
    expect(held.depth).toBe(BACKLOG_DEVICES * BACKLOG_PER_DEVICE);
    expect(metricValue(await stack.gateway.metrics(), 'ferry_gateway_outbox_depth')).toBe(BACKLOG_DEVICES * BACKLOG_PER_DEVICE);

    const ackedBefore = metricValue(await stack.gateway.metrics(), 'ferry_gateway_acked_readings_total');
    await stack.broker.start();
    // Live readings go out once the drain is under way.
    await waitFor(async () => metricValue(await stack.gateway.metrics(), 'ferry_gateway_acked_readings_total') > ackedBefore, {
      timeoutMs: 300_000,
      intervalMs: 20,
      what: 'the drain to start',
    });
    const live = await publishReadings({ url: stack.deviceUrl, deviceIds: liveIds, from: 0, count: LIVE_PER_DEVICE, window: 5, baseTs });
    depthWhenLivePublished = (await gatewayOutbox(stack.gateway)).depth;

    const expected = mergeExpected(expectedSet(warm), expectedSet(backlog), expectedSet(live));
    const delivery = await drainedDelivery(stack, expected, 'the backlog to drain');
    expect(delivery.missing).toEqual([]);
    expect(delivery.duplicated).toEqual([]);
    expect(delivery.unexpected).toEqual([]);

    arrivals = readSqliteArrivals(stack.pointsDb);
    for (const device of backlogIds) {
      const order = arrivals.filter((a) => a.device === device).map((a) => a.n);
      expect(order).toEqual(Array.from({ length: BACKLOG_PER_DEVICE + 1 }, (_, i) => i));
    }
  });

  it('delivers readings published during the drain before the drain ends (live first)', () => {
    expect(arrivals.length).toBeGreaterThan(0);
    // The drain must still have had work when the live readings were all accepted, or this proves nothing.
    expect(depthWhenLivePublished).toBeGreaterThan(1_000);
    const lastBacklog = Math.max(...arrivals.filter((a) => a.device.startsWith('backlog-')).map((a) => a.rowid));
    const lastLive = Math.max(...arrivals.filter((a) => a.device.startsWith('live-')).map((a) => a.rowid));
    const backlogAfterLive = arrivals.filter((a) => a.device.startsWith('backlog-') && a.rowid > lastLive).length;
    process.stderr.write(`[broker-down] depthWhenLivePublished=${depthWhenLivePublished} backlogReadingsWrittenAfterLastLive=${backlogAfterLive}\n`);
    expect(lastLive).toBeLessThan(lastBacklog);
  });
});
