// Retention as the ingestor runs it (src/health.ts): the device cap refuses and counts further
// devices in /metrics, logging once per episode; silent devices are forgotten on the tick timer
// and their rows leave health.db. Health time is a ManualClock; timers and SQLite are real.
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, createRegistry, recordingLogger } from '@ferry/runtime';
import { makeTempDir, waitFor } from '@ferry/testkit';
import { createIngestorHealth, healthConfigSchema } from '../src/health.js';
import type { WrittenReading } from '../src/health.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function written(clock: ManualClock, deviceId: string): WrittenReading {
  const now = clock.now();
  return { gatewayId: 'gw1', origin: 'gateway', reading: { deviceId, kind: 'telemetry', ts: now, tsSource: 'device', receivedAt: now, metrics: { battery: 80 } } };
}

function metric(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe('health retention in the ingestor', () => {
  it('refuses devices beyond maxDevices (counted, logged once) and forgets silent ones, in memory and in health.db', async () => {
    const dataDir = await makeTempDir('health-retention');
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const clock = new ManualClock(Date.UTC(2026, 10, 25, 12, 0, 0));
    const registry = createRegistry();
    const { logger, lines } = recordingLogger('info');
    const config = healthConfigSchema.parse({ tickMs: 20, flushIntervalMs: 50, defaults: { maxDevices: 2, forgetAfter: '7d', graceMs: 0 }, notifiers: { log: false } });
    const health = createIngestorHealth({ config, dataDir, brokerUrl: 'mqtt://127.0.0.1:1', clock, logger, links: () => ({ broker: true, sink: true }), deadLetters: () => 0, registry });
    cleanups.push(() => health.close());
    await health.start();

    health.observeWritten(['a', 'b', 'c', 'd'].map((id) => written(clock, id)));
    health.observeWritten([written(clock, 'c'), written(clock, 'b')]);
    expect([...health.monitor.fleet.devices()].map((d) => d.deviceId)).toEqual(['a', 'b']);
    const text = await registry.metrics();
    expect(metric(text, 'ferry_health_device_messages_refused_total')).toBe(3);
    expect(lines.filter((l) => l['level'] === 40 && String(l['msg']).includes('maxDevices'))).toHaveLength(1);

    // b keeps talking; a falls silent for a week and is forgotten, which makes room for c.
    clock.advance(4 * 86_400_000);
    health.observeWritten([written(clock, 'b')]);
    clock.advance(3 * 86_400_000);
    await waitFor(() => health.monitor.fleet.device('a') === undefined, { timeoutMs: 20_000, what: 'device a forgotten on the tick timer' });
    await waitFor(() => lines.some((l) => l['level'] === 30 && String(l['msg']).includes('below maxDevices')), { timeoutMs: 20_000, what: 'the end of the refusal episode logged' });
    health.observeWritten([written(clock, 'c')]);
    expect(health.monitor.fleet.device('c')).toBeDefined();
    expect(metric(await registry.metrics(), 'ferry_health_devices_forgotten_total')).toBe(1);
    expect(health.monitor.summary().retention).toEqual({ forgottenDevices: 1, forgottenGateways: 0, refused: 3, refusedGateways: 0, maxDevices: 2, maxGateways: 10_000, forgetAfterMs: 7 * 86_400_000 });

    await health.close();
    const db = new Database(join(dataDir, 'health.db'), { readonly: true });
    try {
      expect((db.prepare('SELECT id FROM devices ORDER BY id').all() as { id: string }[]).map((r) => r.id)).toEqual(['b', 'c']);
    } finally {
      db.close();
    }
  });
});
