// Power cuts, for real: a tier's data dir on a disk that loses every write not yet fsynced when
// the power goes (@ferry/testkit's powercut-fs). Readings are published and acknowledged, the
// process is killed (-9) and the power cut, the tier restarts on what the disk kept, and every
// acknowledged reading must reach the database exactly once, at each tier's default settings.
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { startPowercutDisk, waitFor } from '@ferry/testkit';
import type { PowercutDisk } from '@ferry/testkit';
import { compareDelivery, publishReadings, sqliteCopies, telemetryTopic, totalOf } from './devices.js';
import { gatewayOutbox } from './processes.js';
import { startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const MINUTE = 60_000;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function disk(): Promise<PowercutDisk> {
  const d = await startPowercutDisk();
  cleanups.push(() => d.close());
  return d;
}

async function stack(options: Parameters<typeof startChildStack>[0]): Promise<ChildStack> {
  const s = await startChildStack(options);
  // Before the disk goes: the children hold files on it.
  cleanups.push(() => s.close());
  return s;
}

describe('a power cut', { timeout: 300_000 }, () => {
  it('loses no reading the gateway acknowledged to a device, nor doubles one', async () => {
    const sd = await disk();
    // The Pi's settings that matter here: its commit linger, and otherwise the gateway's defaults.
    const s = await stack({ gateway: { dataDir: `${sd.path}/gateway`, outbox: { commitLingerMs: 50 } } });
    await s.broker.kill();
    await waitFor(async () => (await s.gateway.health()).uplinkConnected === false, { timeoutMs: 60_000, what: 'the uplink down' });
    const baseTs = Date.now() - 600_000;
    const outage = await publishReadings({ url: s.deviceUrl, deviceIds: ['pc-1', 'pc-2'], from: 0, count: 1_000, baseTs });
    expect(totalOf(outage.acked)).toBe(2_000);

    await s.gateway.kill();
    await sd.powerCut();
    await s.gateway.start();
    await s.broker.start();
    // The gateway deletes a reading only once the database has it: an empty outbox is the end.
    await waitFor(async () => (await gatewayOutbox(s.gateway)).depth === 0, { timeoutMs: 120_000, what: 'the outbox empty after the power cut' });
    const delivery = compareDelivery(outage.acked, sqliteCopies(s.pointsDb));
    expect(delivery.missing.length, `${delivery.missing.length} acknowledged readings lost`).toBe(0);
    expect(delivery).toMatchObject({ duplicated: [], unexpected: [] });
  });

  it('loses no reading the broker and the ingestor acknowledged to a direct device, and counts none twice in a rollup', async () => {
    const sd = await disk();
    const s = await stack({
      broker: { dataDir: `${sd.path}/broker` },
      ingestor: {
        dataDir: `${sd.path}/ingestor`,
        direct: {},
        processing: { rollups: [{ match: { metric: 'n' }, windows: ['1m'], aggregates: ['count'] }] },
      },
    });
    const baseTs = Math.floor((Date.now() - 3_600_000) / MINUTE) * MINUTE;
    // Devices on the broker itself, no gateway: the broker's PUBACK and the ingestor's journal are the promise.
    const acked = new Set<number>();
    const client = await mqtt.connectAsync(s.brokerUrl, { protocolVersion: 4, clientId: 'direct-1', reconnectPeriod: 0 });
    // 1,000 readings over 200 s of device time: four one-minute windows.
    for (let n = 0; n < 1_000; n += 1) {
      await client.publishAsync(telemetryTopic('direct-1'), JSON.stringify({ ts: baseTs + n * 200, seq: n, metrics: { n } }), { qos: 1 });
      acked.add(n);
    }
    await client.endAsync();

    // The power goes while the ingestor is still taking them.
    await Promise.all([s.ingestor.kill(), s.broker.kill(), s.gateway.kill()]);
    await sd.powerCut();
    await s.broker.start();
    await s.ingestor.start();
    const expected = new Map([['direct-1', acked]]);
    await waitFor(() => compareDelivery(expected, sqliteCopies(s.pointsDb)).missing.length === 0, { timeoutMs: 120_000, what: 'every direct reading written' }).catch(
      (err: unknown) => {
        throw new Error(`${(err as Error).message}: ${compareDelivery(expected, sqliteCopies(s.pointsDb)).missing.length} lost\n${s.logs()}`);
      },
    );
    expect(compareDelivery(expected, sqliteCopies(s.pointsDb))).toMatchObject({ missing: [], duplicated: [], unexpected: [] });

    // A reading ten minutes on closes the four windows: their counts add up to what was acknowledged.
    const closer = await mqtt.connectAsync(s.brokerUrl, { protocolVersion: 4, clientId: 'direct-1', reconnectPeriod: 0 });
    await closer.publishAsync(telemetryTopic('direct-1'), JSON.stringify({ ts: baseTs + 10 * MINUTE, seq: 5_000, metrics: { n: 5_000 } }), { qos: 1 });
    await closer.endAsync();
    let counted = 0;
    await waitFor(
      () => {
        counted = rolledUpCount(s.pointsDb, baseTs, baseTs + 4 * MINUTE);
        return counted >= 1_000;
      },
      { timeoutMs: 60_000, what: 'the four windows rolled up' },
    ).catch(() => undefined);
    expect(counted).toBe(1_000);
  });
});

/** Sum of the one-minute rollups' counts of metric n for windows starting in [from, to). */
function rolledUpCount(pointsDb: string, from: number, to: number): number {
  const db = new Database(pointsDb, { readonly: true, fileMustExist: true });
  try {
    const row = db
      .prepare<[bigint, bigint], { total: number | null }>(
        "SELECT sum(value_float) AS total FROM point_fields WHERE measurement = 'telemetry_1m' AND field = 'n_count' AND ts_ns >= ? AND ts_ns < ?",
      )
      .get(BigInt(from) * 1_000_000n, BigInt(to) * 1_000_000n);
    return row?.total ?? 0;
  } catch {
    return 0;
  } finally {
    db.close();
  }
}
