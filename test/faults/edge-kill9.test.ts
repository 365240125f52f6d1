// kill -9 of a gateway that runs a deadband (before its outbox, or its uplink), while devices publish: the series
// rebuilt from the database stays within the band for every PUBACKed reading (nothing the
// pipeline should have sent is lost to a crash), and far fewer readings cross the uplink.
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@ferry/testkit';
import { publishReadings, readingValue } from './devices.js';
import { gatewayOutbox, metricValue } from './processes.js';
import { startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const DEVICES = 3;
const PER_DEVICE = 1_500;
const KILLS = 3;
/** readingValue grows by 0.001 a reading: the band holds about 50 readings. */
const BAND = 0.05;

function storedValues(pointsDb: string): Map<string, Array<{ ts: number; v: number }>> {
  const db = new Database(pointsDb, { readonly: true, fileMustExist: true });
  try {
    const rows = db
      .prepare<[], { device: string; ts: number; v: number }>(
        "SELECT json_extract(tags, '$.device') AS device, ts_ns / 1000000 AS ts, value_float AS v FROM point_fields WHERE measurement = 'telemetry' AND field = 'v' ORDER BY ts_ns",
      )
      .all();
    const out = new Map<string, Array<{ ts: number; v: number }>>();
    for (const r of rows) {
      const list = out.get(r.device) ?? [];
      list.push({ ts: r.ts, v: r.v });
      out.set(r.device, list);
    }
    return out;
  } finally {
    db.close();
  }
}

describe.each(['outbox', 'uplink'] as const)('gateway kill -9 with a deadband before the %s', { timeout: 600_000 }, (before) => {
  let stack: ChildStack;

  beforeAll(async () => {
    stack = await startChildStack({
      gateway: {
        processing: {
          before,
          pipelines: [
            { match: { metric: 'v' }, steps: [{ op: 'deadband', abs: BAND }] },
            { match: { metric: 'n' }, steps: [{ op: 'deadband', abs: 49.5 }] },
          ],
        },
      },
    });
  }, 300_000);

  afterAll(async () => {
    await stack?.close();
  });

  it('keeps every PUBACKed reading within the band of what reached the database, across kills', async () => {
    const deviceIds = Array.from({ length: DEVICES }, (_, d) => `edge-${d}`);
    const baseTs = Date.now() - 60_000;
    const publishing = publishReadings({ url: stack.deviceUrl, deviceIds, from: 0, count: PER_DEVICE, window: 5, baseTs });
    let publishingOver = false;
    const settled = publishing.then(
      () => (publishingOver = true),
      () => (publishingOver = true),
    );
    let kills = 0;
    while (!publishingOver && kills < KILLS) {
      const target = 300 + kills * 250;
      // The committed counter counts what the pipeline stored, so wait on what it received.
      await waitFor(async () => publishingOver || metricValue(await stack.gateway.metrics(), 'ferry_gateway_received_total') >= target, {
        timeoutMs: 300_000,
        intervalMs: 20,
        what: `the gateway to receive ${target} device messages`,
      });
      if (publishingOver) break;
      await stack.gateway.kill();
      kills += 1;
      await stack.gateway.start();
    }
    await settled;
    const result = await publishing;
    await waitFor(async () => (await gatewayOutbox(stack.gateway)).depth === 0, {
      timeoutMs: 300_000,
      intervalMs: 200,
      what: 'the outbox to drain',
    }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${stack.logs()}`);
    });
    // The last batch's write may trail the outbox's delete only by the ack round trip: poll the database.
    let stored = new Map<string, Array<{ ts: number; v: number }>>();
    let problems: string[] = [];
    await waitFor(
      () => {
        stored = storedValues(stack.pointsDb);
        problems = [];
        for (const deviceId of deviceIds) {
          const series = stored.get(deviceId) ?? [];
          let k = -1;
          for (const n of [...(result.acked.get(deviceId) ?? [])].sort((a, b) => a - b)) {
            const ts = baseTs + n;
            while (k + 1 < series.length && series[k + 1]!.ts <= ts) k++;
            const held = k >= 0 ? series[k]!.v : undefined;
            if (held === undefined || Math.abs(readingValue(deviceId, n) - held) > BAND + 1e-9) problems.push(`${deviceId}#${n}: held ${String(held)}`);
          }
        }
        return problems.length === 0;
      },
      { timeoutMs: 60_000, intervalMs: 200, what: 'every PUBACKed reading to be within the band of the stored series' },
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}: ${problems.slice(0, 10).join(', ')}\n${stack.logs()}`);
    });
    const storedCount = [...stored.values()].reduce((n, s) => n + s.length, 0);
    process.stderr.write(`[edge-kill9 ${before}] kills=${kills} republished=${result.republished} stored=${storedCount} of ${DEVICES * PER_DEVICE}\n`);
    expect(kills).toBeGreaterThanOrEqual(2);
    expect(storedCount).toBeLessThan((DEVICES * PER_DEVICE) / 10);
  });
});
