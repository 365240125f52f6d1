// A full disk for real: the gateway's data directory on a 2 MiB tmpfs. A commit that fails on
// SQLITE_FULL must leave the file intact, withhold the device's PUBACK, be counted, and commits
// must succeed again once space returns.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmdirSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { createRegistry, silentLogger } from '@ferry/runtime';
import { createGateway } from '../src/index.js';
import { connectDevice, metricValue, startTestBroker } from './harness.js';
import type { TestBroker } from './harness.js';

let mountPoint: string;
let uplink: TestBroker;

beforeAll(async () => {
  mountPoint = mkdtempSync(join(tmpdir(), 'ferry-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint]);
  uplink = await startTestBroker();
});

afterAll(async () => {
  await uplink.close();
  execFileSync('umount', [mountPoint]);
  rmdirSync(mountPoint);
});

/** Writes a file until the disk refuses more. */
function fillDisk(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(16 * 1024, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  // The last partial block too.
  const small = openSync(path, 'a');
  try {
    for (;;) writeSync(small, Buffer.alloc(512, 1));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(small);
  }
}

/** A reading of about 8 KB. */
function bigReading(n: number): string {
  const metrics: Record<string, string | number> = { n };
  for (let i = 0; i < 8; i += 1) metrics[`s${i}`] = `${n}-${i}-`.padEnd(1000, 'x');
  return JSON.stringify({ metrics });
}

/** Publishes QoS 1: 'acked' on PUBACK, 'refused' when the gateway drops the connection instead. */
async function publish(url: string, n: number): Promise<'acked' | 'refused'> {
  const device: MqttClient = await connectDevice(url, `full-${n}-${Math.random().toString(16).slice(2)}`);
  try {
    return await new Promise<'acked' | 'refused'>((resolve) => {
      device.once('close', () => resolve('refused'));
      device.publish('devices/d1/telemetry', bigReading(n), { qos: 1 }, (err) => resolve(err ? 'refused' : 'acked'));
    });
  } finally {
    await device.endAsync(true);
  }
}

describe('a full disk', () => {
  it('withholds PUBACKs without corrupting the outbox, and commits again once space returns', async () => {
    const dataDir = join(mountPoint, 'data');
    const registry = createRegistry();
    const gateway = createGateway(
      { gatewayId: 'gw-full', dataDir, devices: { listen: { port: 0 } }, http: false, uplink: { url: uplink.url } },
      { logger: silentLogger(), registry },
    );
    try {
      await gateway.ready();
      const url = gateway.deviceUrl!;
      expect(await publish(url, 0)).toBe('acked');
      const filler = join(mountPoint, 'filler');
      fillDisk(filler);
      const acked = [0];
      let refused = 0;
      // The WAL reuses space it already has, so a few commits may still fit: publish until one does not.
      for (let n = 1; n < 400 && refused === 0; n += 1) {
        if ((await publish(url, n)) === 'acked') acked.push(n);
        else refused += 1;
      }
      expect(refused).toBe(1);
      expect(gateway.stats().commitFailures).toBeGreaterThan(0);
      expect(await metricValue(registry, 'ferry_gateway_storage_full_total')).toBeGreaterThan(0);

      rmSync(filler);
      for (let n = 1000; n < 1005; n += 1) {
        expect(await publish(url, n)).toBe('acked');
        acked.push(n);
      }
      expect(gateway.stats().outboxDepth).toBe(acked.length);
    } finally {
      await gateway.close();
    }
    const db = new Database(join(dataDir, 'outbox.db'), { readonly: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(db.prepare('SELECT count(*) AS n FROM outbox').get()).toEqual({ n: gateway.stats().committed });
    } finally {
      db.close();
    }
  });
});
