// kill -9 of the gateway process, several times, while devices publish 10,000 QoS 1 readings:
// every PUBACKed reading must reach the database exactly once, device republishes included.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@ferry/testkit';
import { expectedSet, publishReadings, totalOf } from './devices.js';
import { metricValue } from './processes.js';
import { drainedDelivery, startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const DEVICES = 10;
const PER_DEVICE = 1_000;
const KILLS = 5;

/** Deterministic spread of kill points (readings committed since the last start). */
function killPoint(i: number): number {
  return 400 + ((i * 7919) % 900);
}

describe('gateway kill -9 while devices publish', { timeout: 900_000 }, () => {
  let stack: ChildStack;

  beforeAll(async () => {
    stack = await startChildStack();
  }, 300_000);

  afterAll(async () => {
    await stack?.close();
  });

  it('delivers every PUBACKed reading after repeated kill -9 and restarts on the same data dir', async () => {
    const deviceIds = Array.from({ length: DEVICES }, (_, d) => `kill9-${d}`);
    const publishing = publishReadings({
      url: stack.deviceUrl,
      deviceIds,
      from: 0,
      count: PER_DEVICE,
      window: 10,
      baseTs: Date.now() - 60_000,
    });
    let publishingOver = false;
    const settled = publishing.then(
      () => {
        publishingOver = true;
      },
      () => {
        publishingOver = true;
      },
    );

    let kills = 0;
    while (!publishingOver && kills < KILLS) {
      const target = killPoint(kills);
      // Kill mid-stream: once this run of the gateway has committed some readings (or the devices are done).
      await waitFor(
        async () => publishingOver || metricValue(await stack.gateway.metrics(), 'ferry_gateway_committed_total') >= target,
        { timeoutMs: 300_000, intervalMs: 20, what: `the gateway to commit ${target} readings` },
      );
      if (publishingOver) break;
      await stack.gateway.kill();
      kills += 1;
      await stack.gateway.start();
    }
    await settled;
    const result = await publishing;
    const expected = expectedSet(result);
    expect(totalOf(expected)).toBe(DEVICES * PER_DEVICE);

    const delivery = await drainedDelivery(stack, expected, 'the outbox to drain and every PUBACKed reading to be in the database');
    const ingestorStats = (await (await fetch(`${stack.ingestor.httpUrl}/api/stats`)).json()) as Record<string, unknown>;
    // Reported for the record: how much each fault cost.
    process.stderr.write(
      `[kill9] kills=${kills} republished=${result.republished} connections=${result.connections} ` +
        `present=${delivery.present} missing=${delivery.missing.length} extraCopies=${delivery.extraCopies} ` +
        `duplicatedReadings=${delivery.duplicated.length} ingestorDuplicates=${String(ingestorStats.duplicates)}\n`,
    );
    expect(kills).toBeGreaterThanOrEqual(3);
    expect(delivery.missing).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    // A device that republishes a reading whose PUBACK the kill cut off gives the gateway a second
    // copy under a new gateway seq; the ingestor knows it by the device's own seq and time
    // (device-dedupe.ts), so each device reading is in the database exactly once all the same.
    expect(delivery.duplicated).toEqual([]);
    expect(delivery.extraCopies).toBe(0);
  });
});
