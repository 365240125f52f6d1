// A full disk for real: the gateway's data directory on a 2 MiB tmpfs. A commit that fails on
// SQLITE_FULL must leave the file intact, withhold the device's PUBACK (every device of the group),
// be counted, and commits must succeed again once space returns; a delete the disk cannot take
// gives up the reserve and goes through, so the drain never wedges.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import { isFerryError } from '@ferry/protocol';
import type { DeviceReading } from '@ferry/protocol';
import { createRegistry, isDiskFull, silentLogger } from '@ferry/runtime';
import { createGateway } from '../src/index.js';
import { createDiskReserve, readDiskUsage } from '../src/disk-space.js';
import { createSqliteOutbox } from '../src/outbox.js';
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
      // A byte bound set above the disk's size: the bound cannot act, so the disk fills (auto would stop first).
      { gatewayId: 'gw-full', dataDir, devices: { listen: { port: 0 } }, http: false, uplink: { url: uplink.url }, outbox: { maxBytes: 1 << 30 } },
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
      expect(gateway.stats().disk).toMatchObject({ full: true });
      expect(await metricValue(registry, 'ferry_gateway_disk_full')).toBe(1);

      rmSync(filler);
      for (let n = 1000; n < 1005; n += 1) {
        expect(await publish(url, n)).toBe('acked');
        acked.push(n);
      }
      expect(gateway.stats().outboxDepth).toBe(acked.length);
      expect(gateway.stats().disk).toMatchObject({ full: false });
    } finally {
      await gateway.close();
    }
    const db = new Database(join(dataDir, 'outbox.db'), { readonly: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(db.prepare('SELECT count(*) AS n FROM outbox').get()).toEqual({ n: gateway.stats().committed });
    } finally {
      db.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('withholds the PUBACK of every device in a group commit that the disk fills in the middle of, and stores none of it', async () => {
    const dataDir = join(mountPoint, 'group');
    const gateway = createGateway(
      // A long linger gathers the devices' readings into one transaction.
      { gatewayId: 'gw-group', dataDir, devices: { listen: { port: 0 } }, http: false, uplink: { url: uplink.url }, outbox: { maxBytes: 1 << 30, commitLingerMs: 200, reserveBytes: 0 } },
      { logger: silentLogger() },
    );
    const gap = join(mountPoint, 'gap');
    const filler = join(mountPoint, 'filler');
    try {
      await gateway.ready();
      const url = gateway.deviceUrl!;
      expect(await publish(url, 0)).toBe('acked');
      // Room for a few of the twenty 8 KB readings, not for all: the transaction fails part way.
      writeFileSync(gap, Buffer.alloc(48 * 1024, 1));
      fillDisk(filler);
      rmSync(gap);
      const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => publish(url, 100 + i)));
      expect(outcomes.filter((o) => o === 'acked')).toEqual([]);
      expect(gateway.stats().commitFailures).toBeGreaterThan(0);
      expect(gateway.stats().outboxDepth).toBe(1);
      rmSync(filler);
      const again = await Promise.all(Array.from({ length: 20 }, (_, i) => publish(url, 100 + i)));
      expect(again.every((o) => o === 'acked')).toBe(true);
      expect(gateway.stats().outboxDepth).toBe(21);
    } finally {
      await gateway.close();
      rmSync(filler, { force: true });
      rmSync(gap, { force: true });
    }
    const db = new Database(join(dataDir, 'outbox.db'), { readonly: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(db.prepare("SELECT count(*) AS n FROM outbox WHERE json_extract(payload, '$.metrics.n') >= 100").get()).toEqual({ n: 20 });
    } finally {
      db.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('deletes acked rows on a full disk by giving up the reserve, and keeps them intact when there is none', () => {
    const dataDir = join(mountPoint, 'delete');
    mkdirSync(dataDir);
    const path = join(dataDir, 'outbox.db');
    const reserve = createDiskReserve(join(dataDir, 'outbox.reserve'), 256 * 1024);
    expect(reserve.ensure(readDiskUsage(dataDir).freeBytes)).toBe(true);
    let offered = false;
    const outbox = createSqliteOutbox({ path, onDiskFull: () => (offered ? reserve.release() : false) });
    const filler = join(mountPoint, 'filler');
    try {
      const big = (n: number): DeviceReading => ({ deviceId: 'd1', kind: 'telemetry', ts: Date.now(), tsSource: 'gateway', receivedAt: Date.now(), metrics: JSON.parse(bigReading(n)).metrics });
      const { seqs } = outbox.append(Array.from({ length: 60 }, (_, n) => big(n)));
      // An empty WAL: the delete has to grow it, on a disk with no room left.
      const side = new Database(path);
      side.pragma('wal_checkpoint(TRUNCATE)');
      side.close();
      fillDisk(filler);

      let caught: unknown;
      try {
        outbox.delete(seqs.slice(0, 30));
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'FERRY_ERR_STORAGE')).toBe(true);
      expect(isDiskFull(caught)).toBe(true);
      expect(outbox.stats().depth).toBe(60);

      offered = true;
      expect(outbox.delete(seqs.slice(0, 30))).toBe(30);
      expect(reserve.held).toBe(false);
      expect(reserve.releases).toBe(1);
      expect(outbox.stats().depth).toBe(30);
      // The pages those rows freed take new readings although the disk is still full.
      expect(outbox.append([big(1000)]).seqs).toHaveLength(1);

      rmSync(filler);
      expect(reserve.ensure(readDiskUsage(dataDir).freeBytes)).toBe(true);
      expect(outbox.delete(seqs.slice(30))).toBe(30);
    } finally {
      outbox.close();
      rmSync(filler, { force: true });
    }
    const db = new Database(path, { readonly: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(db.prepare('SELECT count(*) AS n FROM outbox').get()).toEqual({ n: 1 });
    } finally {
      db.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
