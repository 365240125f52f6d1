// Processing before the raw write: per-metric pipelines clean readings, what they remove or change
// is counted per operator and reason in /metrics and written as a flag field when asked; a reading
// left with no metric is acked as written with nothing raw written. Config that cannot work is
// refused at start, naming the field.
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import type { Reading } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { makeTempDir } from '@ferry/testkit';
import { createIngestor, parseIngestorConfig } from '../src/index.js';
import { MemorySink } from './memory-sink.js';
import { GatewayPeer } from './peer.js';
import { T0 } from './fixtures.js';
import { useMosquitto } from './mosquitto-env.js';

const mosquitto = useMosquitto();
const { cleanups } = mosquitto;


function reading(seq: number, metrics: Reading['metrics']): Reading {
  return { seq, deviceId: 'boiler-1', kind: 'telemetry', ts: T0 + seq * 1000, tsSource: 'device', receivedAt: T0 + seq * 1000 + 5, metrics };
}

describe('processing before the raw write', () => {
  it('cleans per metric, counts each removal and change by reason, flags them, and acks a reading left empty without writing it', async () => {
    const dir = await makeTempDir('process');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sink = new MemorySink();
    const ingestor = createIngestor(
      {
        ingestorId: `process-${process.pid}`,
        dataDir: dir,
        broker: { url: mosquitto.url },
        write: { lingerMs: 5 },
        health: { enabled: false },
        logLevel: 'silent',
        processing: {
          pipelines: [
            { match: { metric: 'temperature' }, steps: [{ op: 'range', min: -40, max: 150, action: 'drop', flag: true }] },
            { match: { metric: 'pressure' }, steps: [{ op: 'range', max: 10, action: 'clamp', flag: true }] },
          ],
        },
      },
      { logger: silentLogger(), sink },
    );
    cleanups.push(() => ingestor.close());
    await ingestor.ready();
    const gw = await GatewayPeer.connect(mosquitto.url, `gw-process-${process.pid}`);
    cleanups.push(() => gw.close());

    await gw.send(1, [
      reading(1, { temperature: 21.5, pressure: 3 }),
      reading(2, { temperature: 900, pressure: 3 }),
      reading(3, { temperature: 22, pressure: 12 }),
      // Only a bad value: nothing is left to write raw.
      reading(4, { temperature: -300 }),
    ]);
    expect(await gw.waitAck(1)).toMatchObject({ accepted: 4, duplicates: 0, rejected: [] });

    const bySeq = new Map([...sink.points.values()].map((p) => [Number(p.timestampNs / 1_000_000n) - T0, p.fields] as const));
    expect(bySeq.get(1000)).toEqual({ temperature: 21.5, pressure: 3 });
    expect(bySeq.get(2000)).toEqual({ pressure: 3, ferry_flags: 'temperature:range_above_max' });
    expect(bySeq.get(3000)).toEqual({ temperature: 22, pressure: 10, ferry_flags: 'pressure:range_above_max_clamped' });
    expect(bySeq.has(4000)).toBe(false);
    expect(sink.points.size).toBe(3);
    expect(ingestor.stats()).toMatchObject({ written: 4, inFlight: 0 });

    // Resent (its ack lost): a duplicate, neither cleaned nor counted again.
    await gw.send(2, [reading(2, { temperature: 900, pressure: 3 })]);
    expect(await gw.waitAck(2)).toMatchObject({ accepted: 0, duplicates: 1 });

    const metrics = await (await fetch(`${ingestor.httpUrl}/metrics`)).text();
    expect(metrics).toContain('ferry_ingestor_processing_values_total{op="range",reason="above_max"} 2');
    expect(metrics).toContain('ferry_ingestor_processing_values_total{op="range",reason="below_min"} 1');
    expect(metrics).toContain('ferry_ingestor_processing_values_total{op="range",reason="in"} 7');
    expect(metrics).toContain('ferry_ingestor_processing_readings_emptied_total 1');
    const api = (await (await fetch(`${ingestor.httpUrl}/api/processing`)).json()) as { pipelines: { readings: { in: number } } };
    expect(api.pipelines.readings.in).toBe(4);
  });

  it('refuses at start a pipeline step the ingestor does not run, and rollups with a shared subscription but no Redis', () => {
    const fieldsOf = (input: unknown): unknown => {
      try {
        parseIngestorConfig(input);
      } catch (err) {
        if (isFerryError(err)) return err.details.fields;
        throw err;
      }
      return undefined;
    };
    const base = { dataDir: '/tmp/unused', broker: { url: 'mqtt://127.0.0.1:1883' } };
    expect(fieldsOf({ ...base, processing: { pipelines: [{ match: { metric: 'v' }, steps: [{ op: 'median' }, { op: 'rollup', window: '1m' }] }] } })).toEqual([
      'processing.pipelines.0.steps.1.op',
    ]);
    expect(fieldsOf({ ...base, processing: { rollups: [{ match: { metric: 'v' }, windows: ['1 minute'] }] } })).toEqual(['processing.rollups.0.windows.0']);
    expect(fieldsOf({ ...base, broker: { ...base.broker, sharedGroup: 'ferry' }, processing: { rollups: [{ match: { metric: 'v' }, windows: ['1m'] }] } })).toEqual([
      'processing.rollups',
    ]);
    // With Redis the windows move with the gateway's lease (cluster/shared-rollups.ts), whichever way the broker hands out batches.
    const state = { redisUrl: 'redis://127.0.0.1:6379/0' };
    const rolled = { rollups: [{ match: { metric: 'v' }, windows: ['1m'] }] };
    expect(fieldsOf({ ...base, state, processing: rolled })).toBeUndefined();
    expect(fieldsOf({ ...base, broker: { ...base.broker, sharedGroup: 'ferry' }, state, processing: rolled })).toBeUndefined();
    expect(fieldsOf({ ...base, state, processing: rolled, partition: { index: 0, count: 2 } })).toEqual(['partition']);
    expect(parseIngestorConfig({ ...base, processing: { rollups: [{ match: { metric: 'v' }, windows: ['1m', 3_600_000] }] } }).processing.rollups[0]).toMatchObject({
      windows: [60_000, 3_600_000],
      keepRaw: true,
      allowedLatenessMs: 60_000,
    });
  });
});
