// Edge processing inside the gateway: a group the outbox refuses leaves no trace in the pipeline
// state, and before the uplink a resent batch is rebuilt exactly (same readings, same seqs).
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeviceReading, Reading } from '@ferry/protocol';
import { createRegistry, silentLogger, systemClock } from '@ferry/runtime';
import { createGroupCommitter } from '../src/commit.js';
import { createGateway } from '../src/index.js';
import type { Gateway } from '../src/index.js';
import { createSqliteOutbox } from '../src/outbox.js';
import { createEdgeProcessing, UplinkSettlement } from '../src/process.js';
import { connectDevice, startCloud, startTestBroker, tempDir, waitFor } from './harness.js';
import type { Cloud, TestBroker } from './harness.js';

// Start of yesterday (UTC) by the clock at run time: aligned to every window, recent by every bound.
const BASE_TS = Math.floor(Date.now() / 86_400_000) * 86_400_000 - 86_400_000;
const deadband = { before: 'outbox' as const, pipelines: [{ match: { metric: 'level' }, steps: [{ op: 'deadband' as const, abs: 1 }] }] };

function reading(i: number, level: number): DeviceReading {
  return { deviceId: 'tank-1', kind: 'telemetry', ts: BASE_TS + i * 1000, tsSource: 'device', receivedAt: BASE_TS + i * 1000, metrics: { level } };
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('edge processing before the outbox', () => {
  it('processes a refused reading again when the device publishes it again, instead of taking it as sent', () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const outbox = createSqliteOutbox({ path: join(dir.path, 'outbox.db'), maxRows: 2, whenFull: 'refuse-new' });
    cleanups.push(() => outbox.close());
    const edge = createEdgeProcessing(deadband, systemClock);
    const outcomes: Array<string> = [];
    const committer = createGroupCommitter({
      outbox,
      lingerMs: 0,
      maxReadings: 1,
      onCommitted: () => undefined,
      onError: () => undefined,
      processing: { process: (r) => edge.process(r), takeState: () => edge.takeState(), rollback: () => edge.restore(outbox.pipelineState()) },
    });
    const add = (r: DeviceReading): void => committer.add([r], (err) => outcomes.push(err ? String((err as Error & { code?: string }).code) : 'stored'));
    add(reading(0, 1));
    add(reading(1, 1.5)); // within the band: handled, nothing stored
    add(reading(2, 5));
    add(reading(3, 10)); // the outbox is full: refused, not acknowledged
    expect(outcomes).toEqual(['stored', 'stored', 'stored', 'FERRY_ERR_OUTBOX_FULL']);
    expect(outbox.stats().depth).toBe(2);
    outbox.delete(outbox.peek({ limit: 10, maxBytes: 1e9, exclude: new Set() }).map((e) => e.seq));
    // Published again: still more than the band away from the last value stored (5), so stored.
    add(reading(3, 10));
    expect(outcomes[4]).toBe('stored');
    const stored = outbox.peek({ limit: 10, maxBytes: 1e9, exclude: new Set() });
    expect(stored.map((e) => e.reading.metrics.level)).toEqual([10]);
    expect(edge.stats()).toMatchObject({ readingsIn: 5, readingsOut: 4 });
  });
});

describe('edge processing before the uplink', () => {
  let broker: TestBroker;
  let cloud: Cloud;
  let gateway: Gateway;

  it('rebuilds a batch that went unacked with the same readings and seqs, and deletes rows only in batch order', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    broker = await startTestBroker();
    cleanups.push(() => broker.close());
    cloud = await startCloud(broker.url, 'gw-edge', { autoAck: false });
    cleanups.push(() => cloud.close());
    gateway = createGateway(
      {
        gatewayId: 'gw-edge',
        dataDir: dir.path,
        devices: { listen: { host: '127.0.0.1', port: 0 } },
        uplink: { url: broker.url, ackTimeoutMs: 400, reconnectMinMs: 50, reconnectMaxMs: 200 },
        batch: { maxReadings: 10, lingerMs: 0 },
        http: false,
        processing: { ...deadband, before: 'uplink' },
      },
      { logger: silentLogger(), registry: createRegistry() },
    );
    cleanups.push(() => gateway.close());
    await gateway.ready();
    const device = await connectDevice(gateway.deviceUrl!, 'tank-1');
    cleanups.push(() => device.endAsync());
    const levels = Array.from({ length: 40 }, (_, i) => Math.round(10 * Math.sin(i / 4) * 10) / 10);
    for (let i = 0; i < levels.length; i++) {
      await device.publishAsync('devices/tank-1/telemetry', JSON.stringify({ ts: BASE_TS + i * 1000, seq: i, metrics: { level: levels[i] } }), { qos: 1 });
    }
    // Nothing acked: every batch times out and goes out again.
    await waitFor(() => gateway.stats().processing!.readingsIn >= 2 * levels.length, { what: 'a resend', timeoutMs: 20_000 });
    expect(gateway.stats().outboxDepth).toBe(levels.length);
    cloud.autoAck = true;
    // Acks for the batches received so far, then for what is still to come.
    for (const b of [...cloud.batches]) await cloud.ack(b.batchId);
    await waitFor(() => gateway.stats().outboxDepth === 0 && gateway.stats().inFlightBatches === 0, { what: 'the outbox to drain', timeoutMs: 20_000 });

    // Every copy of a seq carries the same reading.
    const bySeq = new Map<number, Reading>();
    for (const b of cloud.batches) {
      for (const r of b.readings) {
        const first = bySeq.get(r.seq);
        if (first) expect(r).toEqual(first);
        else bySeq.set(r.seq, r);
      }
    }
    // What reached the "database" is exactly what one pass of the deadband sends.
    const expected: number[] = [];
    let last: number | undefined;
    levels.forEach((level, i) => {
      if (last === undefined || Math.abs(level - last) > 1) {
        expected.push(i);
        last = level;
      }
    });
    expect([...cloud.written.values()].map((r) => r.deviceSeq).sort((a, b) => a! - b!)).toEqual(expected);
  });
});

describe('UplinkSettlement', () => {
  it('settles batches only as a prefix of acked ones, in the order they were built', () => {
    const s = new UplinkSettlement();
    const state = (v: string) => [{ deviceId: 'd', metric: 'm', state: v }];
    s.built(1, [10, 11], state('a'));
    s.built(2, [12], state('b'));
    s.built(3, [13], state('c'));
    expect(s.acked(2)).toEqual({ count: 0, seqs: [], state: [] });
    expect(s.acked(1)).toEqual({ count: 2, seqs: [10, 11, 12], state: [...state('a'), ...state('b')] });
    s.settled(2);
    expect(s.pending).toBe(1);
    s.reset();
    expect(s.acked(3)).toBeUndefined();
  });
});
