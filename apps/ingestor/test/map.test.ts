// Stage 4, map: one bad field or tag never costs a reading its good fields at the database.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { uplinkTopics } from '@ferry/protocol';
import { checkPoint, defaultPointMapping } from '@ferry/sinks';
import { waitFor } from '@ferry/testkit';
import { mapReading } from '../src/map.js';
import { openPipelineRig } from './pipeline-rig.js';
import type { PipelineRig } from './pipeline-rig.js';
import { batch, reading, T0 } from './fixtures.js';

describe('mapReading', () => {
  it('leaves out a field and a tag the database would refuse, keeping the rest of the point', () => {
    const dropped: string[] = [];
    const point = mapReading(reading(1, { metrics: { good: 1, 'bad"name': 2, 'trail\\': 3, note: 'a\nb' }, tags: { room: 'a\\', site: 'x' } }), 'gw-1', defaultPointMapping, (p) => dropped.push(...p));
    expect(point.fields).toEqual({ good: 1 });
    // Counted and told, never left out in silence.
    expect(dropped).toHaveLength(4);
    expect(point.tags).toEqual({ site: 'x', device: 'dev-1', gateway: 'gw-1' });
    expect(checkPoint(point)).toBeUndefined();
  });

  it('writes ferry_clock_unsynced on a point whose time stands in for an unset device clock', () => {
    const point = mapReading(reading(2, { tsSource: 'gateway', flags: ['clock_unsynced'] }), 'gw-1', defaultPointMapping);
    expect(point.fields.ferry_clock_unsynced).toBe(true);
  });
});

describe('a reading with one bad field from a gateway that let it through', () => {
  const open: { dir: string; rig: PipelineRig }[] = [];
  afterEach(async () => {
    for (const { dir, rig } of open.splice(0)) {
      await rig.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is written with its good fields and accepted, not refused whole with FERRY_ERR_SINK_REJECTED', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-map-'));
    const rig = openPipelineRig({ dir, now: T0 + 60_000 });
    open.push({ dir, rig });
    // The sink refuses like every real sink does (point-rules.ts).
    rig.sink.refuse = checkPoint;
    rig.pipeline.accept(uplinkTopics.batch('gw-1'), batch('gw-1', 1, [reading(1, { metrics: { temperature: 21.5, 'bad"name': 1, 'end\\': 2 } })]));
    const ack = await waitFor(() => rig.acks.find((a) => a.batchId === 1), { timeoutMs: 5000, what: 'the ack' });
    expect(ack).toMatchObject({ accepted: 1, rejected: [] });
    const [point, ...more] = [...rig.sink.points.values()];
    expect(more).toEqual([]);
    expect(point?.fields).toEqual({ temperature: 21.5 });
    expect(rig.deadLetters.counts().byCode.FERRY_ERR_SINK_REJECTED ?? 0).toBe(0);
  });
});
