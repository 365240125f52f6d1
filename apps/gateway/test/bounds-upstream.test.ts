// The outbox bounds seen from outside the gateway: drop counts and gap records in the retained
// status and the ops view, refuse-new withholding PUBACKs, and SD-card wear in status and /metrics.
import { afterEach, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { createRegistry, silentLogger } from '@ferry/runtime';
import { createGateway } from '../src/index.js';
import type { Gateway, GatewayConfigInput } from '../src/index.js';
import { processWriteBytes } from '../src/disk-wear.js';
import { connectDevice, metricValue, startCloud, startTestBroker, tempDir, waitFor } from './harness.js';
import type { Cloud } from './harness.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function setUp(
  gatewayId: string,
  overrides: Partial<GatewayConfigInput>,
): Promise<{ gateway: Gateway; peer: Cloud; registry: ReturnType<typeof createRegistry> }> {
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  const uplink = await startTestBroker();
  cleanups.push(() => uplink.close());
  const peer = await startCloud(uplink.url, gatewayId, { autoAck: false });
  cleanups.push(() => peer.close());
  const registry = createRegistry();
  const gateway = createGateway(
    { gatewayId, dataDir: dir.path, devices: { listen: { port: 0 } }, uplink: { url: uplink.url }, statusIntervalMs: 100, ...overrides },
    { logger: silentLogger(), registry },
  );
  cleanups.push(() => gateway.close());
  await gateway.ready();
  return { gateway, peer, registry };
}

async function device(url: string): Promise<MqttClient> {
  const d = await connectDevice(url, `dev-${Math.random().toString(16).slice(2)}`);
  cleanups.push(() => d.endAsync(true));
  return d;
}

describe('bounds upstream', () => {
  it('sends drop counts and gap records naming the lost readings in the retained status, and serves them at /gaps', async () => {
    const { gateway, peer } = await setUp('gw-gaps', { outbox: { maxRows: 3 }, batch: { maxInFlight: 1, lingerMs: 10_000, maxReadings: 1000 } });
    const dev = await device(gateway.deviceUrl!);
    for (let i = 0; i < 6; i += 1) {
      await dev.publishAsync('devices/d1/telemetry', JSON.stringify({ seq: 100 + i, metrics: { n: i } }), { qos: 1 });
    }
    const dropped = gateway.stats().dropped.outbox_full ?? 0;
    expect(dropped).toBeGreaterThan(0);
    const status = await waitFor(() => peer.statuses.find((s) => (s.gaps?.length ?? 0) > 0 && s.dropped?.outbox_full === dropped), {
      what: 'a status carrying the gap',
    });
    const gap = status.gaps![0]!;
    expect(gap).toMatchObject({ deviceId: 'd1', reason: 'outbox_full', count: dropped });
    expect(gap.lastDeviceSeq! - gap.firstDeviceSeq! + 1).toBe(dropped);
    const res = await fetch(`${gateway.httpUrl!}/gaps`);
    const body = (await res.json()) as { gaps: unknown[]; dropped: unknown[] };
    expect(body.gaps).toHaveLength(1);
    expect(body.dropped).toEqual([{ reason: 'outbox_full', deviceId: 'd1', count: dropped }]);
  });

  it('withholds the PUBACK when full under refuse-new, and takes the reading once there is room', async () => {
    const { gateway, peer, registry } = await setUp('gw-refuse', { outbox: { maxRows: 2, whenFull: 'refuse-new' }, batch: { lingerMs: 0 } });
    const url = gateway.deviceUrl!;
    const dev = await device(url);
    await dev.publishAsync('devices/d1/telemetry', JSON.stringify({ metrics: { n: 1 } }), { qos: 1 });
    await dev.publishAsync('devices/d1/telemetry', JSON.stringify({ metrics: { n: 2 } }), { qos: 1 });
    const third = await device(url);
    const outcome = await new Promise<'acked' | 'refused'>((resolve) => {
      third.once('close', () => resolve('refused'));
      third.publish('devices/d1/telemetry', JSON.stringify({ metrics: { n: 3 } }), { qos: 1 }, (err) => resolve(err ? 'refused' : 'acked'));
    });
    expect(outcome).toBe('refused');
    expect(gateway.stats()).toMatchObject({ outboxDepth: 2, refusedReadings: 1, dropped: {} });
    expect(await metricValue(registry, 'ferry_gateway_refused_readings_total')).toBe(1);
    // Acks make room; the device's retry is then taken.
    await waitFor(() => peer.batches.length > 0, { what: 'a batch' });
    for (const batch of [...peer.batches]) await peer.ack(batch.batchId);
    await waitFor(() => gateway.stats().outboxDepth === 0, { what: 'the outbox to empty' });
    const retry = await device(url);
    await retry.publishAsync('devices/d1/telemetry', JSON.stringify({ metrics: { n: 3 } }), { qos: 1 });
    expect(gateway.stats().outboxDepth + gateway.stats().ackedReadings).toBe(3);
  });

  it('reports the bytes written to disk per reading in stats, status and /metrics', async () => {
    const { gateway, peer, registry } = await setUp('gw-wear', {});
    const dev = await device(gateway.deviceUrl!);
    for (let i = 0; i < 20; i += 1) await dev.publishAsync('devices/d1/telemetry', JSON.stringify({ metrics: { n: i } }), { qos: 1 });
    if (processWriteBytes() === undefined) {
      // Not Linux: unmeasurable, and said so rather than made up.
      expect(gateway.stats().diskWriteBytesPerReading).toBeNull();
      return;
    }
    expect(gateway.stats().diskWriteBytesPerReading).toEqual(expect.any(Number));
    expect(await metricValue(registry, 'ferry_gateway_disk_write_bytes_per_reading')).toBeGreaterThanOrEqual(0);
    await waitFor(() => peer.statuses.find((s) => typeof s.diskWriteBytesPerReading === 'number'), { what: 'a status with disk wear' });
  });

  it('reads write_bytes from /proc/self/io', () => {
    expect(processWriteBytes(() => 'rchar: 10\nwchar: 20\nread_bytes: 0\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n')).toBe(4096);
    expect(
      processWriteBytes(() => {
        throw new Error('ENOENT');
      }),
    ).toBeUndefined();
  });
});
