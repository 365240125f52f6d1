// kill -9 between the database's confirmation and the ack: the ingestor runs as a real child
// process (the built CLI), dies by SIGKILL right after the database confirmed a write (the
// test-only FERRY_TEST_CRASH_AFTER_WRITE hook in write.ts), and the batch the gateway then resends
// is not doubled in the database: InfluxDB overwrites the point; VictoriaMetrics would keep a
// second sample, so the chunk's write intent sends the restarted ingestor to look first
// (intents.ts). Needs `npx tsc -b` first (the root `npm test` builds before vitest).
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killReadyChildren, makeTempDir, startInfluxd, startMosquitto, startReadyChild, startVictoriaMetrics } from '@ferry/testkit';
import type { InfluxdHandle, ReadyChild, ServerHandle, VictoriaHandle } from '@ferry/testkit';
import { readings } from './fixtures.js';
import { GatewayPeer } from './peer.js';
import { countPoints } from './influx-count.js';

const FERRY_MAIN = fileURLToPath(new URL('../../ferry/dist/main.js', import.meta.url));

let influxd: InfluxdHandle;
let vm: VictoriaHandle;
let mosquitto: ServerHandle;
let dir: string;

beforeAll(async () => {
  [influxd, vm, mosquitto] = await Promise.all([startInfluxd(), startVictoriaMetrics(), startMosquitto()]);
  dir = await makeTempDir('ingestor-crash');
});
afterAll(async () => {
  killReadyChildren();
  await Promise.all([influxd?.stop(), vm?.stop(), mosquitto?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Starts `ferry ingestor --config <file>` and resolves once it logged that it is ready. */
function startIngestor(configFile: string, env: Record<string, string> = {}): Promise<ReadyChild> {
  return startReadyChild({ args: [FERRY_MAIN, 'ingestor', '--config', configFile], readyText: 'ingestor ready', env, name: 'the ingestor child' });
}

describe('ingestor killed with SIGKILL between the write and the ack', () => {
  it('writes the resent batch over itself: the database holds each reading exactly once', async () => {
    if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` first`);
    await influxd.createDatabase('crash');
    const configFile = join(dir, 'ingestor.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        ingestorId: `crash-${process.pid}`,
        dataDir: join(dir, 'data'),
        broker: { url: mosquitto.url },
        sink: { type: 'influxdb1', url: influxd.url, database: 'crash' },
        write: { lingerMs: 5 },
        http: false,
        logLevel: 'info',
      }),
    );
    const peer = await GatewayPeer.connect(mosquitto.url, 'gw-crash');
    try {
      const batch = readings(0, 50);
      const doomed = await startIngestor(configFile, { FERRY_TEST_CRASH_AFTER_WRITE: '1' });
      await peer.send(1, batch);
      const death = await doomed.exited;
      expect(death.signal).toBe('SIGKILL');
      // The database confirmed the write; the ack never left.
      expect(await countPoints(influxd, 'crash', 'temperature')).toBe(50);
      expect(peer.acks).toEqual([]);

      const restarted = await startIngestor(configFile);
      try {
        // The gateway's ack timeout: it resends the same batch.
        await peer.send(1, batch);
        expect(await peer.waitAck(1, 30_000)).toMatchObject({ batchId: 1, accepted: 50, duplicates: 0, rejected: [] });
        expect(await countPoints(influxd, 'crash', 'temperature')).toBe(50);
        // Resent once more after the ack: now recognised as duplicates, still 50 points.
        await peer.send(2, batch);
        expect(await peer.waitAck(2, 30_000)).toMatchObject({ accepted: 0, duplicates: 50 });
        expect(await countPoints(influxd, 'crash', 'temperature')).toBe(50);
      } finally {
        await restarted.stop();
      }
    } finally {
      await peer.close();
    }
  });
});

/** Raw samples of the readings' temperature in VictoriaMetrics, duplicates included. */
async function vmSamples(gatewayId: string): Promise<number[]> {
  await vm.flush();
  const series = await vm.exportSeries(`{__name__="telemetry_temperature",gateway="${gatewayId}"}`);
  return series.flatMap((s) => s.timestamps).sort((a, b) => a - b);
}

describe('ingestor killed with SIGKILL between the write and the ack, VictoriaMetrics behind it', () => {
  it('finds the resent readings in the database and does not write them again: one sample each', async () => {
    if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` first`);
    const gatewayId = 'gw-crash-vm';
    const configFile = join(dir, 'ingestor-vm.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        ingestorId: `crash-vm-${process.pid}`,
        dataDir: join(dir, 'data-vm'),
        broker: { url: mosquitto.url },
        sink: { type: 'influxdb2', url: vm.url, token: 'unused', org: 'ferry', bucket: 'crash' },
        write: { lingerMs: 5 },
        http: false,
        logLevel: 'info',
      }),
    );
    const peer = await GatewayPeer.connect(mosquitto.url, gatewayId);
    try {
      const batch = readings(0, 50);
      const doomed = await startIngestor(configFile, { FERRY_TEST_CRASH_AFTER_WRITE: '1' });
      await peer.send(1, batch);
      expect((await doomed.exited).signal).toBe('SIGKILL');
      expect(await vmSamples(gatewayId)).toHaveLength(50);
      expect(peer.acks).toEqual([]);

      // A second batch the dead run never saw: written normally beside the recovered one.
      const restarted = await startIngestor(configFile);
      try {
        await peer.send(1, batch);
        expect(await peer.waitAck(1, 30_000)).toMatchObject({ batchId: 1, accepted: 50, duplicates: 0, rejected: [] });
        await peer.send(2, readings(50, 10));
        expect(await peer.waitAck(2, 30_000)).toMatchObject({ accepted: 10, duplicates: 0 });
        const samples = await vmSamples(gatewayId);
        expect(samples).toHaveLength(60);
        expect(new Set(samples).size).toBe(60);
        // Once recorded, a resend is a duplicate and nothing is asked or written.
        await peer.send(3, batch);
        expect(await peer.waitAck(3, 30_000)).toMatchObject({ accepted: 0, duplicates: 50 });
        expect(await vmSamples(gatewayId)).toHaveLength(60);
        expect(restarted.output()).toContain('not written again');
      } finally {
        await restarted.stop();
      }
    } finally {
      await peer.close();
    }
  });
});
