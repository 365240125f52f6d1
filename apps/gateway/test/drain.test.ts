// Draining a backlog: the drain meter (pure, on a manual clock), and live first in process: with
// thousands of readings waiting, readings published during the drain reach the cloud before the
// drain ends, each stream in order per device, and the progress shows in stats and status.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createRegistry, ManualClock, silentLogger } from '@ferry/runtime';
import type { Reading } from '@ferry/protocol';
import { createGateway } from '../src/index.js';
import { createSqliteOutbox } from '../src/outbox.js';
import { DrainMeter } from '../src/drain.js';
import { connectDevice, startCloud, startTestBroker, tempDir, waitFor } from './harness.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

describe('DrainMeter', () => {
  it('measures the acked rate over its window and the time left', () => {
    const clock = new ManualClock(0);
    const meter = new DrainMeter({ clock, aboveReadings: 100, logIntervalMs: 5_000 });
    expect(meter.progress(1000)).toEqual({ backlog: 1000, ratePerSec: 0, etaSec: null });
    meter.acked(500);
    for (let i = 0; i < 10; i += 1) {
      clock.advance(500);
      meter.acked(500);
    }
    expect(meter.progress(10_000)).toEqual({ backlog: 10_000, ratePerSec: 1000, etaSec: 10 });
    // A stalled drain: the rate falls as the window empties of acks.
    clock.advance(20_000);
    expect(meter.progress(10_000).ratePerSec).toBe(0);
    expect(meter.progress(0)).toEqual({ backlog: 0, ratePerSec: 0, etaSec: 0 });
  });

  it('asks for a progress line at most every interval while above the threshold, and one when done', () => {
    const clock = new ManualClock(0);
    const meter = new DrainMeter({ clock, aboveReadings: 100, logIntervalMs: 5_000 });
    expect(meter.report(50)).toBeUndefined();
    expect(meter.report(500)).toBe('progress');
    clock.advance(1_000);
    expect(meter.report(400)).toBeUndefined();
    clock.advance(4_000);
    expect(meter.report(300)).toBe('progress');
    expect(meter.report(20)).toBe('done');
    expect(meter.report(20)).toBeUndefined();
  });
});

describe('live first', () => {
  it('sends readings published during a drain before the backlog is through, each stream in order', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const backlogSize = 20_000;
    const now = Date.now();
    const filled = createSqliteOutbox({ path: join(dir.path, 'outbox.db') });
    for (let start = 0; start < backlogSize; start += 1000) {
      filled.append(
        Array.from({ length: 1000 }, (_, i) => ({
          deviceId: `old-${(start + i) % 3}`,
          kind: 'telemetry' as const,
          ts: now - 60_000 + start + i,
          tsSource: 'gateway' as const,
          receivedAt: now - 60_000 + start + i,
          metrics: { n: start + i },
        })),
      );
    }
    const lastBacklogSeq = filled.newestSeq()!;
    filled.close();

    const uplink = await startTestBroker();
    cleanups.push(() => uplink.close());
    const peer = await startCloud(uplink.url, 'gw-drain', { autoAck: false });
    cleanups.push(() => peer.close());
    const gateway = createGateway(
      {
        gatewayId: 'gw-drain',
        dataDir: dir.path,
        devices: { listen: { port: 0 } },
        http: false,
        uplink: { url: uplink.url, ackTimeoutMs: 30_000 },
        batch: { maxReadings: 500, maxInFlight: 4 },
        drain: { aboveReadings: 1_000 },
        statusIntervalMs: 100,
      },
      { logger: silentLogger(), registry: createRegistry() },
    );
    cleanups.push(() => gateway.close());
    await gateway.ready();
    // The window fills with backlog while nothing is acked.
    await waitFor(() => peer.batches.length >= 4, { what: 'the first backlog batches', timeoutMs: 20_000 });
    expect(gateway.stats().draining).toBe(true);

    const device = await connectDevice(gateway.deviceUrl!, `live-${Math.random().toString(16).slice(2)}`);
    cleanups.push(() => device.endAsync(true));
    for (let i = 0; i < 5; i += 1) await device.publishAsync('devices/live-1/telemetry', JSON.stringify({ metrics: { live: i } }), { qos: 1 });

    const acked = new Set<number>();
    await waitFor(
      async () => {
        for (const batch of [...peer.batches]) {
          if (acked.has(batch.batchId)) continue;
          acked.add(batch.batchId);
          await peer.ack(batch.batchId);
        }
        return gateway.stats().outboxDepth === 0 && peer.written.size === backlogSize + 5;
      },
      { what: 'the backlog and the live readings to arrive', timeoutMs: 60_000 },
    );

    const arrival: Reading[] = peer.batches.flatMap((b) => b.readings);
    const position = (pred: (r: Reading) => boolean): number => arrival.findIndex(pred);
    const firstLive = position((r) => r.deviceId === 'live-1');
    const lastBacklog = position((r) => r.seq === lastBacklogSeq);
    expect(firstLive).toBeGreaterThan(-1);
    expect(firstLive).toBeLessThan(lastBacklog);
    // Within each stream, every device's readings arrive in seq order (first arrivals; no resends here).
    for (const device of ['old-0', 'old-1', 'old-2', 'live-1']) {
      const seqs = arrival.filter((r) => r.deviceId === device).map((r) => r.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    }
    expect(gateway.stats().draining).toBe(false);
    // Progress was visible upstream while it lasted.
    expect(peer.statuses.some((s) => (s.drain?.backlog ?? 0) > 0)).toBe(true);
  });
});
