// Acks that go wrong on the way back: lost (the ingestor is killed -9 between its database write
// and its ack), duplicated (a copy of a real ack published again), and acks for a batch the
// gateway never sent. None may lose or double a reading.
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BATCH_VERSION, encodeAck, newBatchNonce, uplinkTopics } from '@ferry/protocol';
import { waitFor } from '@ferry/testkit';
import { expectedSet, mergeExpected, publishReadings, totalOf } from './devices.js';
import type { PublishResult } from './devices.js';
import { gatewayOutbox, metricValue } from './processes.js';
import { drainedDelivery, GATEWAY_ID, startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const DEVICES = 10;

describe('lost, duplicated and unknown acks', { timeout: 900_000 }, () => {
  let stack: ChildStack;
  let expected = new Map<string, Set<number>>();
  const baseTs = Date.now() - 60_000;
  const deviceIds = Array.from({ length: DEVICES }, (_, d) => `ack-${d}`);
  let nextSeq = 0;

  async function publish(count: number): Promise<PublishResult> {
    const result = await publishReadings({ url: stack.deviceUrl, deviceIds, from: nextSeq, count, window: 10, baseTs });
    nextSeq += count;
    expected = mergeExpected(expected, expectedSet(result));
    return result;
  }

  /** Everything published so far is in the database exactly once and the outbox is empty. */
  async function expectExactlyOnce(): Promise<void> {
    const delivery = await drainedDelivery(stack, expected, 'an empty outbox and every reading in the database');
    expect(delivery.missing).toEqual([]);
    expect(delivery.duplicated).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    expect(delivery.present).toBe(totalOf(expected));
  }

  async function watcher(): Promise<MqttClient> {
    const client = await mqtt.connectAsync(stack.brokerUrl, { protocolVersion: 4, clientId: `ack-watcher-${process.pid}`, clean: true });
    client.on('error', () => undefined);
    return client;
  }

  beforeAll(async () => {
    stack = await startChildStack();
  }, 300_000);

  afterAll(async () => {
    await stack?.close();
  });

  it('loses and doubles nothing when the ingestor is killed -9 between its writes and its acks', async () => {
    const publishing = publish(500);
    let over = false;
    const settled = publishing.then(
      () => (over = true),
      () => (over = true),
    );
    let kills = 0;
    while (!over && kills < 3) {
      // The ingestor has written and acked some batches in this run; more are in its hands.
      await waitFor(async () => over || metricValue(await stack.ingestor.metrics(), 'ferry_ingestor_acks_sent_total') >= 3 + kills, {
        timeoutMs: 300_000,
        intervalMs: 10,
        what: 'the ingestor to ack some batches',
      });
      if (over) break;
      await stack.ingestor.kill();
      kills += 1;
      await stack.ingestor.start();
    }
    await settled;
    await publishing;
    // Whether or not a kill landed mid-stream, the acks of the last batches were lost with it
    // when the devices were faster: kill once more while the gateway still waits for some.
    await stack.ingestor.kill();
    await stack.ingestor.start();
    await expectExactlyOnce();
    expect(kills + 1).toBeGreaterThanOrEqual(2);
  });

  it('ignores a duplicated ack', async () => {
    const ackTopic = uplinkTopics.ack(GATEWAY_ID);
    const client = await watcher();
    const seen: Buffer[] = [];
    client.on('message', (topic, payload) => {
      if (topic === ackTopic) seen.push(Buffer.from(payload));
    });
    try {
      await client.subscribeAsync(ackTopic, { qos: 1 });
      await publish(200);
      await expectExactlyOnce();
      await waitFor(() => seen.length > 0, { timeoutMs: 120_000, what: 'acks seen on the broker' });
      const ignoredBefore = metricValue(await stack.gateway.metrics(), 'ferry_gateway_acks_ignored_total');
      const copies = seen.length;
      // Every ack again, while new batches are being sent and acked.
      const more = publish(200);
      for (const ack of seen.slice(0, copies)) await client.publishAsync(ackTopic, ack, { qos: 1 });
      await more;
      await expectExactlyOnce();
      await waitFor(async () => metricValue(await stack.gateway.metrics(), 'ferry_gateway_acks_ignored_total', 'unknown') >= ignoredBefore + copies, {
        timeoutMs: 120_000,
        what: `the gateway to ignore ${copies} duplicated acks`,
      });
    } finally {
      await client.endAsync();
    }
  });

  it('ignores acks for batches it never sent and keeps their readings', async () => {
    const client = await watcher();
    try {
      // With no ingestor, batches go out and no ack comes: the readings stay in the outbox.
      await stack.ingestor.stop();
      const held = await publish(100);
      expect(totalOf(expectedSet(held))).toBe(DEVICES * 100);
      await waitFor(async () => metricValue(await stack.gateway.metrics(), 'ferry_gateway_in_flight_batches') > 0, {
        timeoutMs: 120_000,
        what: 'batches in flight',
      });
      const ignoredBefore = metricValue(await stack.gateway.metrics(), 'ferry_gateway_acks_ignored_total');
      const bogus = [0, 1, 42, 123_456_789, Number.MAX_SAFE_INTEGER];
      for (const batchId of bogus) {
        const ack = encodeAck({ v: BATCH_VERSION, gatewayId: GATEWAY_ID, batchId, nonce: newBatchNonce(), accepted: 100, duplicates: 0, rejected: [], ackedAt: Date.now() });
        await client.publishAsync(uplinkTopics.ack(GATEWAY_ID), ack, { qos: 1 });
      }
      await waitFor(async () => metricValue(await stack.gateway.metrics(), 'ferry_gateway_acks_ignored_total') >= ignoredBefore + bogus.length, {
        timeoutMs: 120_000,
        what: 'the gateway to ignore the bogus acks',
      });
      expect((await gatewayOutbox(stack.gateway)).depth).toBe(DEVICES * 100);

      await stack.ingestor.start();
      await expectExactlyOnce();
    } finally {
      await client.endAsync();
    }
  });
});
