// The database (a real influxd, written through the InfluxDB v1 sink) is down: the gateway keeps
// every reading in its outbox until acks come, and once the database is back each reading is
// written exactly once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInfluxd, waitFor } from '@ferry/testkit';
import type { InfluxdHandle } from '@ferry/testkit';
import { compareDelivery, countCopies, expectedSet, influxCopies, mergeExpected, publishReadings, totalOf } from './devices.js';
import { gatewayOutbox, metricValue } from './processes.js';
import { startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const DATABASE = 'ferry';
const DEVICES = 10;
const PER_DEVICE = 1_000;

describe('database down', { timeout: 900_000 }, () => {
  let influxd: InfluxdHandle;
  let stack: ChildStack;

  beforeAll(async () => {
    influxd = await startInfluxd();
    await influxd.createDatabase(DATABASE);
    stack = await startChildStack({
      ingestor: { sink: { type: 'influxdb1', url: influxd.url, database: DATABASE, timeoutMs: 2_000 } },
    });
  }, 300_000);

  afterAll(async () => {
    await stack?.close();
    await influxd?.stop();
  });

  it('deletes nothing from the outbox while the database is down, then writes every reading exactly once', async () => {
    const deviceIds = Array.from({ length: DEVICES }, (_, d) => `dbdown-${d}`);
    const baseTs = Date.now() - 60_000;
    const warm = await publishReadings({ url: stack.deviceUrl, deviceIds, from: 0, count: 1, baseTs });
    await waitFor(async () => compareDelivery(expectedSet(warm), await influxCopies(influxd, DATABASE)).missing.length === 0, {
      timeoutMs: 300_000,
      what: 'the warm-up readings in influxd',
    });
    await waitFor(async () => (await gatewayOutbox(stack.gateway)).depth === 0, { timeoutMs: 120_000, what: 'the warm-up acks' });

    await influxd.kill();
    const outage = await publishReadings({ url: stack.deviceUrl, deviceIds, from: 1, count: PER_DEVICE, window: 20, baseTs });
    const published = totalOf(expectedSet(outage));
    expect(published).toBe(DEVICES * PER_DEVICE);

    // While the ingestor retries and the gateway resends unacked batches, the outbox holds everything.
    const depths: number[] = [];
    await waitFor(
      async () => {
        depths.push((await gatewayOutbox(stack.gateway)).depth);
        const gw = await stack.gateway.metrics();
        const ing = await stack.ingestor.metrics();
        return metricValue(gw, 'ferry_gateway_resends_total') >= 1 && metricValue(ing, 'ferry_ingestor_write_retries_total') >= 3;
      },
      { timeoutMs: 300_000, intervalMs: 100, what: 'the ingestor to retry and the gateway to resend' },
    );
    depths.push((await gatewayOutbox(stack.gateway)).depth);
    expect(Math.min(...depths)).toBe(published);
    expect(Math.max(...depths)).toBe(published);

    await influxd.restart();
    // During the drain, a reading leaves the outbox only once the database has it:
    // depth (read first) + what the database holds (read after) never falls below what was published.
    const shortfalls: string[] = [];
    const expected = mergeExpected(expectedSet(warm), expectedSet(outage));
    await waitFor(
      async () => {
        const depth = (await gatewayOutbox(stack.gateway)).depth;
        const copies = await influxCopies(influxd, DATABASE);
        const stored = countCopies(copies) - totalOf(expectedSet(warm));
        if (depth + stored < published) shortfalls.push(`depth ${depth} + stored ${stored} < ${published}`);
        return depth === 0 && compareDelivery(expected, copies).missing.length === 0;
      },
      { timeoutMs: 300_000, intervalMs: 100, what: 'every reading in influxd and an empty outbox' },
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${stack.logs()}`);
    });
    expect(shortfalls).toEqual([]);

    const copies = await influxCopies(influxd, DATABASE);
    const delivery = compareDelivery(expected, copies);
    expect(delivery.missing).toEqual([]);
    expect(delivery.duplicated).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    expect(countCopies(copies)).toBe(published + DEVICES);
  });
});
