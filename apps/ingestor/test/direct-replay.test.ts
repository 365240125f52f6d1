// The direct-device path in-process (real SQLite stores, an in-memory sink): a message of several
// readings settles its journal row once all of them are settled, and its dead letters keep the
// message, its topic and receive time, so a replay decodes it again.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeadLetterStore } from '@ferry/deadletter';
import { Accounting, imbalances } from '../src/accounting.js';
import { compileDeviceTopics } from '../src/direct.js';
import { DIRECT_SOURCE } from '../src/pipeline.js';
import type { Pipeline } from '../src/pipeline.js';
import type { MemorySink } from './memory-sink.js';
import { openPipelineRig } from './pipeline-rig.js';
import { T0 } from './fixtures.js';

const NOW = T0 + 60_000;
const dirs: string[] = [];
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

interface Rig {
  pipeline: Pipeline;
  sink: MemorySink;
  accounting: Accounting;
  deadLetters: DeadLetterStore;
  /** Resolves with how many times the journal row was settled, once it was. */
  direct(id: number, topic: string, payload: string): Promise<number>;
}

function rig(): Rig {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-direct-replay-'));
  dirs.push(dir);
  const r = openPipelineRig({
    dir,
    now: NOW,
    deviceDedupe: true,
    direct: {
      topics: compileDeviceTopics([
        { pattern: 'tele/{deviceId}/+', format: 'tasmota' },
        { pattern: 'telegraf/{deviceId}/+', format: 'influx-line' },
      ]),
      gatewayTag: 'direct',
    },
  });
  closers.push(() => r.close());
  const { pipeline, sink, accounting, deadLetters } = r;
  return {
    pipeline,
    sink,
    accounting,
    deadLetters,
    direct: (id, topic, payload) =>
      new Promise<number>((resolve) => {
        let settled = 0;
        pipeline.acceptDirect({ id, topic, payload: Buffer.from(payload), receivedAt: NOW }, () => {
          settled++;
          // A second call would show up here before the test looks.
          setImmediate(() => resolve(settled));
        });
      }),
  };
}

const iso = (ms: number): string => new Date(ms).toISOString().replace('.000Z', '+00:00');

describe('direct messages of several readings', () => {
  it('settles the journal row once, after every reading of the message, counting each reading', async () => {
    const r = rig();
    const far = NOW + 7 * 24 * 3600 * 1000;
    const lines = [`cpu usage=1 ${T0}000000`, `mem used=2 ${T0}000000`, `disk used=3 ${far}000000`].join('\n');
    expect(await r.direct(1, 'telegraf/pi/host', lines)).toBe(1);
    expect(r.accounting.byGateway().get(DIRECT_SOURCE)).toMatchObject({ received: 3, written: 2, rejected: 1, inFlight: 0 });
    expect(imbalances(r.accounting.byGateway())).toEqual([]);
    expect(r.sink.points.size).toBe(2);
    const [letter] = r.deadLetters.list({});
    expect(letter).toMatchObject({ code: 'FERRY_ERR_TIMESTAMP_SKEW', at: NOW, source: { topic: 'telegraf/pi/host', deviceId: 'pi' } });
    expect(letter?.payload.toString()).toBe(lines);
    // Still refused: the replay writes nothing, not even the readings that were fine.
    expect(await r.pipeline.replay(letter!.id, 2000)).toMatchObject({ outcome: 'rejected', code: 'FERRY_ERR_TIMESTAMP_SKEW' });
    expect(r.sink.points.size).toBe(2);
    expect(r.deadLetters.get(letter!.id)?.replayedAt).toBeNull();
  });

  it('settles a message that holds no reading at once, counting nothing', async () => {
    const r = rig();
    // A RESULT power change is a reading now (issue #17); INFO1 still holds none.
    expect(await r.direct(1, 'tele/plug/INFO1', '{"Info1":{"Module":"Sonoff Basic"}}')).toBe(1);
    expect(r.accounting.byGateway().get(DIRECT_SOURCE)).toBeUndefined();
    expect(r.deadLetters.list({})).toEqual([]);
  });
});

describe('replaying a direct dead letter', () => {
  it('replays a reading the database refused once it takes it, by its message and topic', async () => {
    const r = rig();
    r.sink.refuse = (p) => (p.fields['energy_total'] !== undefined ? 'field type conflict: energy_total is integer' : undefined);
    const sensor = JSON.stringify({ Time: iso(T0), ENERGY: { Total: 1.5, Power: 9 } });
    expect(await r.direct(7, 'tele/plug/SENSOR', sensor)).toBe(1);
    expect(r.accounting.byGateway().get(DIRECT_SOURCE)).toMatchObject({ received: 1, rejected: 1 });
    const [letter] = r.deadLetters.list({});
    expect(letter).toMatchObject({ code: 'FERRY_ERR_SINK_REJECTED', at: NOW, source: { topic: 'tele/plug/SENSOR', deviceId: 'plug' } });
    expect(letter?.payload.toString()).toBe(sensor);

    // A refusal again is reported, and is not filed a second time.
    expect(await r.pipeline.replay(letter!.id, 2000)).toMatchObject({ outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED' });
    expect(r.deadLetters.list({})).toHaveLength(1);

    r.sink.refuse = () => undefined;
    expect(await r.pipeline.replay(letter!.id, 2000)).toEqual({ outcome: 'written', id: letter!.id });
    expect([...r.sink.points.values()].map((p) => [p.tags, p.fields])).toEqual([[{ device: 'plug', gateway: 'direct' }, { energy_total: 1.5, energy_power: 9 }]]);
    expect(r.deadLetters.get(letter!.id)?.replayedAt).toBe(NOW);
    expect(await r.pipeline.replay(letter!.id, 2000)).toEqual({ outcome: 'duplicate', id: letter!.id });
    expect(r.sink.points.size).toBe(1);
  });
});
