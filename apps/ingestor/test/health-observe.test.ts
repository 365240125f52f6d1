// Another ingestor's readings (cluster/fleet-sync.ts) reach the model as a written chunk's parallel
// lists, the shape observeWritten returns: taken as the ingestor takes its own, the model and the
// device pages end the same, and a chunk the model cannot take is logged, never thrown.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, recordingLogger, silentLogger } from '@ferry/runtime';
import type { Logger } from '@ferry/runtime';
import { makeTempDir } from '@ferry/testkit';
import { createIngestorHealth, healthConfigSchema } from '../src/health.js';
import type { IngestorHealth, WrittenObservations, WrittenReading } from '../src/health.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function healthAt(clock: ManualClock, logger: Logger = silentLogger()): Promise<IngestorHealth> {
  const dataDir = await makeTempDir('health-observe');
  const config = healthConfigSchema.parse({ defaults: { graceMs: 0 }, notifiers: { log: false } });
  const health = createIngestorHealth({ config, dataDir, brokerUrl: 'mqtt://127.0.0.1:1', clock, logger, links: () => ({ broker: true, sink: true }), deadLetters: () => 0 });
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  cleanups.push(() => health.close());
  return health;
}

function written(clock: ManualClock, deviceId: string, seq: number, point: 'raw' | 'processed' | 'none'): WrittenReading {
  const ts = clock.now() - 1000 + seq;
  const reading = { seq, deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts + 5, metrics: { temperature: 20 + seq, battery: 90 - seq } };
  if (point === 'raw') return { gatewayId: 'gw1', origin: 'gateway', reading };
  if (point === 'none') return { gatewayId: 'gw1', origin: 'gateway', reading, point: null };
  return { gatewayId: 'gw1', origin: 'gateway', reading, point: { measurement: 'telemetry', tags: { deviceId }, fields: { temperature: 30 + seq }, timestampNs: BigInt(ts) * 1_000_000n + 7n } };
}

describe("another ingestor's written readings", () => {
  it('leave the model and the device pages as the same readings written here', async () => {
    const clock = new ManualClock(Date.now());
    const here = await healthAt(clock);
    const there = await healthAt(clock);
    const kinds = ['raw', 'processed', 'none'] as const;
    for (let chunk = 0; chunk < 3; chunk++) {
      const items = Array.from({ length: 12 }, (_, i) => written(clock, `pump-${i % 4}`, chunk * 12 + i, kinds[(chunk + i) % 3]!));
      there.observe(here.observeWritten(items));
      clock.advance(10_000);
    }
    const devices = (h: IngestorHealth): unknown[] => [...h.monitor.fleet.devices()];
    expect(devices(there)).toEqual(devices(here));
    expect(here.monitor.fleet.device('pump-1')).toMatchObject({ messages: 9, battery: 90 - 33 });
    for (const id of ['pump-0', 'pump-1', 'pump-2', 'pump-3']) {
      expect(there.recentReadings(id, 60_000, 100)).toEqual(here.recentReadings(id, 60_000, 100));
      // Readings written with nothing raw have no place on the page.
      expect(here.recentReadings(id, 60_000, 100)).toHaveLength(6);
    }
  });

  it('that the model cannot take are logged, not thrown', async () => {
    const clock = new ManualClock(Date.now());
    const { logger, lines } = recordingLogger('info');
    const health = await healthAt(clock, logger);
    const broken = { readings: [null], recent: [undefined] } as unknown as WrittenObservations;
    expect(() => health.observe(broken)).not.toThrow();
    expect(lines).toContainEqual(expect.objectContaining({ level: 50, msg: 'health model failed to take written readings' }));
  });
});
