// The database goes away: nothing may be acked while it is down (the readings wait in the
// gateway's outbox), and once it is back everything is written exactly once and acked.
// VictoriaMetrics through the InfluxDB v2 sink, a real Mosquitto, a real MQTT peer.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import { makeTempDir, startMosquitto, startVictoriaMetrics, waitFor } from '@ferry/testkit';
import type { ServerHandle, VictoriaHandle } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import type { Ingestor } from '../src/index.js';
import { readings, T0 } from './fixtures.js';
import { GatewayPeer } from './peer.js';

let broker: ServerHandle;
let vm: VictoriaHandle;
let dir: string;
let ingestor: Ingestor;
let gw: GatewayPeer;

beforeAll(async () => {
  [broker, vm, dir] = await Promise.all([startMosquitto(), startVictoriaMetrics(), makeTempDir('ingestor-sink-down')]);
  ingestor = createIngestor(
    {
      ingestorId: `sink-down-${process.pid}`,
      dataDir: dir,
      broker: { url: broker.url },
      sink: { type: 'influxdb2', url: vm.url, token: 'unused', org: 'ferry', bucket: 'ferry', timeoutMs: 2000 },
      write: { lingerMs: 5, retry: { initialMs: 50, maxMs: 300 } },
      logLevel: 'silent',
    },
    { logger: silentLogger() },
  );
  await ingestor.ready();
  gw = await GatewayPeer.connect(broker.url, `gw-sink-down-${process.pid}`);
});

afterAll(async () => {
  await gw?.close();
  await ingestor?.close();
  await Promise.all([broker?.stop(), vm?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function samples(): Promise<number[]> {
  await vm.flush();
  const series = await vm.exportSeries(`{__name__="telemetry_temperature",gateway="${gw.gatewayId}"}`, { start: T0 - 60_000 });
  return series.flatMap((s) => s.timestamps);
}

async function retriesSoFar(): Promise<number> {
  const text = await (await fetch(`${ingestor.httpUrl}/metrics`)).text();
  return Number(/ferry_ingestor_write_retries_total\{stage="sink"\} (\d+)/.exec(text)?.[1] ?? 0);
}

describe('ingestor with the database down', () => {
  it('acks nothing while the database is down, then writes everything exactly once and acks it', async () => {
    expect(ingestor.stats().sinkUp).toBe(true);
    // Killed before anything is written: VictoriaMetrics confirms writes before they reach disk,
    // so a SIGKILL may lose its last seconds; that is the database's durability, not ours.
    await vm.kill();
    await gw.send(1, readings(0, 20));
    await waitFor(async () => (await retriesSoFar()) >= 2, { what: 'failed writes' });
    // The gateway's ack timeout fires and it resends the same readings in a new batch.
    await gw.send(2, readings(0, 20));
    await waitFor(async () => (await retriesSoFar()) >= 4, { what: 'more failed writes' });
    expect(gw.acks).toEqual([]);
    expect(ingestor.stats()).toMatchObject({ sinkUp: false, received: 40, inFlight: 40, written: 0, pendingBatches: 2 });
    const health = await fetch(`${ingestor.httpUrl}/healthz`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ ok: false, sink: { up: false }, mqtt: { connected: true } });

    await vm.restart();
    expect(await gw.waitAck(1, 30_000)).toMatchObject({ accepted: 20, duplicates: 0, rejected: [] });
    expect(await gw.waitAck(2, 30_000)).toMatchObject({ accepted: 0, duplicates: 20, rejected: [] });
    // A later resend overlapping new readings.
    await gw.send(3, readings(10, 20));
    expect(await gw.waitAck(3)).toMatchObject({ accepted: 10, duplicates: 10 });
    expect(ingestor.stats()).toMatchObject({ received: 60, written: 30, duplicates: 30, rejected: 0, inFlight: 0, sinkUp: true });

    const timestamps = await waitFor(
      async () => {
        const ts = await samples();
        return ts.length >= 30 ? ts : undefined;
      },
      { what: '30 samples in VictoriaMetrics' },
    );
    expect(timestamps).toHaveLength(30);
    expect(new Set(timestamps).size).toBe(30);
  });
});
