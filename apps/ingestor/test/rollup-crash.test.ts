// kill -9 in the middle of a rollup window: the ingestor runs as a real child process (the built
// CLI) and is killed with SIGKILL while a batch is being taken, written and recorded; the
// restarted ingestor, with the gateway resending what it saw no ack for, writes rollups equal to
// InfluxQL's GROUP BY time(1m) over the raw points: the window is neither lost nor doubled,
// whichever side of the commit the kill fell on. Needs `npx tsc -b` first.
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Reading } from '@ferry/protocol';
import { killReadyChildren, makeTempDir, startInfluxd, startMosquitto, startReadyChild, waitFor } from '@ferry/testkit';
import type { InfluxdHandle, ReadyChild, ServerHandle } from '@ferry/testkit';
import { GatewayPeer } from './peer.js';

const FERRY_MAIN = fileURLToPath(new URL('../../ferry/dist/main.js', import.meta.url));
const MIN = 60_000;
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / 3_600_000) * 3_600_000;
const DB = 'rollup_crash';

let influxd: InfluxdHandle;
let mosquitto: ServerHandle;
let dir: string;

beforeAll(async () => {
  [influxd, mosquitto] = await Promise.all([startInfluxd(), startMosquitto()]);
  dir = await makeTempDir('rollup-crash');
});
afterAll(async () => {
  killReadyChildren();
  await Promise.all([influxd?.stop(), mosquitto?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function startIngestor(configFile: string): Promise<ReadyChild> {
  return startReadyChild({ args: [FERRY_MAIN, 'ingestor', '--config', configFile], readyText: 'ingestor ready', name: 'the ingestor child' });
}

/** Readings of three meters every ~1.5 s over four minutes, never two in one millisecond. */
function readings(): Reading[] {
  const out: Reading[] = [];
  for (let i = 0; i < 160; i++) {
    const deviceId = `meter-${i % 3}`;
    const ts = T0 + i * 1500 + (i % 7) * 11;
    out.push({ seq: i + 1, deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts + 20, metrics: { v: 200 + ((i * 37) % 101) / 10 } });
  }
  return out;
}

type Row = readonly number[];

async function table(influxql: string): Promise<Map<string, Row>> {
  const out = new Map<string, Row>();
  for (const s of await influxd.query(DB, influxql, { epoch: 'ms' })) {
    for (const row of s.values) out.set(`${s.tags?.device} ${String(row[0])}`, (row as number[]).slice(1).map((v) => Math.round(v * 1e6) / 1e6));
  }
  return out;
}

describe('rollups across an ingestor killed with SIGKILL', () => {
  it('equal InfluxQL GROUP BY time(1m) after a kill -9 in the middle of a window and the gateway resending', async () => {
    if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` first`);
    await influxd.createDatabase(DB);
    const configFile = join(dir, 'ingestor.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        ingestorId: `rollup-crash-${process.pid}`,
        dataDir: join(dir, 'data'),
        broker: { url: mosquitto.url },
        sink: { type: 'influxdb1', url: influxd.url, database: DB },
        write: { lingerMs: 5 },
        http: false,
        health: { enabled: false },
        logLevel: 'info',
        processing: { rollups: [{ match: { metric: 'v' }, windows: ['1m'], aggregates: ['count', 'sum', 'min', 'max'], allowedLatenessMs: 120_000 }] },
      }),
    );
    const all = readings();
    const batches: Reading[][] = [];
    for (let i = 0; i < all.length; i += 10) batches.push(all.slice(i, i + 10));
    const peer = await GatewayPeer.connect(mosquitto.url, `gw-rollup-crash-${process.pid}`);
    try {
      let ingestor = await startIngestor(configFile);
      // Up to the middle of minute 1, acked.
      const cut = batches.findIndex((b) => b[0]!.ts >= T0 + MIN + 30_000);
      for (let i = 0; i < cut; i++) {
        await peer.send(i + 1, batches[i]!);
        await peer.waitAck(i + 1, 30_000);
      }
      // The next batches go out and the ingestor dies while taking them.
      await peer.send(cut + 1, batches[cut]!);
      await peer.send(cut + 2, batches[cut + 1]!);
      await ingestor.kill();

      ingestor = await startIngestor(configFile);
      try {
        // The gateway resends every batch it saw no ack for, then carries on.
        for (let i = 0; i < batches.length; i++) {
          if (peer.ackOf(i + 1)) continue;
          await peer.send(i + 1, batches[i]!);
          await peer.waitAck(i + 1, 30_000);
        }
        const close = ['meter-0', 'meter-1', 'meter-2'].map((deviceId, i): Reading => ({ seq: 1000 + i, deviceId, kind: 'telemetry', ts: T0 + 30 * MIN + i, tsSource: 'device', receivedAt: T0 + 30 * MIN, metrics: { v: 0 } }));
        await peer.send(500, close);
        await peer.waitAck(500, 30_000);

        const range = `time >= ${T0}ms AND time < ${T0 + 4 * MIN}ms`;
        let theirs = new Map<string, Row>();
        let ours = new Map<string, Row>();
        await waitFor(
          async () => {
            theirs = await table(`SELECT count(v), sum(v), min(v), max(v) FROM telemetry WHERE ${range} GROUP BY time(1m), "device" fill(none)`);
            ours = await table(`SELECT v_count, v_sum, v_min, v_max FROM telemetry_1m WHERE ${range} GROUP BY "device"`);
            return theirs.size === 12 && ours.size === 12 && JSON.stringify([...ours].sort()) === JSON.stringify([...theirs].sort());
          },
          { timeoutMs: 30_000, what: 'the rollups to equal InfluxQL after the restart' },
        ).catch(() => undefined);
        expect([...ours].sort()).toEqual([...theirs].sort());
        expect([...theirs.values()].reduce((n, r) => n + r[0]!, 0)).toBe(all.length);
      } finally {
        await ingestor.stop();
      }
    } finally {
      await peer.close();
    }
  });
});
