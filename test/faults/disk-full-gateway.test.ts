// The gateway's disk fills while its uplink is down, the built CLI on a real 4 MiB tmpfs (an SD
// card standing in): the outbox itself fills it (a byte bound set above the disk's size), or
// another file does. When the uplink returns the gateway must drain by itself, the disk still
// full, and accept readings again as space returns; with the default `maxBytes: auto` the bound
// acts before the filesystem fills. Every acknowledged reading is in the database once, or
// counted as dropped by the policy.
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { fillDisk, mountSmallDisk, waitFor } from '@ferry/testkit';
import { compareDelivery, publishReadings, sqliteCopies, telemetryTopic, totalOf } from './devices.js';
import { gatewayOutbox, metricValue } from './processes.js';
import { drainedDelivery, GATEWAY_ID, startChildStack } from './stack.js';
import type { ChildStack } from './stack.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** A fresh tmpfs of `size` (e.g. '4m'), unmounted after the test. */
async function smallDisk(size: string): Promise<string> {
  const disk = await mountSmallDisk(size, 'sd');
  cleanups.push(() => disk.close());
  return disk.path;
}

const PAD = 'x'.repeat(1000);

function paddedPayload(_deviceId: string, n: number, baseTs: number): string {
  return JSON.stringify({ ts: baseTs + n, seq: n, metrics: { n, v: n / 1000, pad: PAD } });
}

/**
 * One device publishes readings n = from, from + 1, ... (about 1 KB each, ten in flight) until
 * the gateway refuses one (it withholds the PUBACK and drops the connection) or `max` are acked.
 */
async function publishUntilRefused(url: string, deviceId: string, from: number, max: number, baseTs: number): Promise<Set<number>> {
  const acked = new Set<number>();
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `${deviceId}-fill`, reconnectPeriod: 0 });
  client.on('error', () => undefined);
  await new Promise<void>((resolve) => {
    let next = from;
    let inFlight = 0;
    let over = false;
    const finish = (): void => {
      if (!over) {
        over = true;
        resolve();
      }
    };
    const pump = (): void => {
      while (!over && inFlight < 10 && next < from + max) {
        const n = next++;
        inFlight += 1;
        client.publish(telemetryTopic(deviceId), paddedPayload(deviceId, n, baseTs), { qos: 1 }, (err) => {
          inFlight -= 1;
          if (err) finish();
          else acked.add(n);
          if (next >= from + max && inFlight === 0) finish();
          pump();
        });
      }
    };
    client.once('close', finish);
    pump();
  });
  client.end(true);
  return acked;
}

async function diskOf(stack: ChildStack): Promise<{ full: boolean; reserveHeld: boolean; freeBytes: number; maxBytes: number; outboxBytes: number }> {
  const health = await stack.gateway.health();
  const disk = health.disk as { full: boolean; reserveHeld: boolean; freeBytes: number; maxBytes: number; outboxBytes: number } | null | undefined;
  if (!disk) throw new Error(`gateway /healthz has no disk: ${JSON.stringify(health)}`);
  return disk;
}

async function startOnDisk(mountPoint: string, outbox: Record<string, unknown>): Promise<ChildStack> {
  // No grace after the broker outage, so the disk alert can be seen as soon as it holds.
  const stack = await startChildStack({ gateway: { dataDir: join(mountPoint, 'gateway'), outbox }, ingestor: { health: { defaults: { graceMs: 0 } } } });
  cleanups.push(() => stack.close());
  await stack.broker.kill();
  await waitFor(async () => (await stack.gateway.health()).uplinkConnected === false, { timeoutMs: 60_000, what: 'the uplink down' });
  return stack;
}

/** The ingestor's gateway-disk alert for the stack's gateway: its state, or undefined when there is none. */
async function diskAlert(stack: ChildStack): Promise<{ state: string; summary: string } | undefined> {
  const res = await fetch(`${stack.ingestor.httpUrl}/api/alerts`);
  const body = (await res.json()) as { alerts: { rule: string; state: string; summary: string; subject: { id: string } }[] };
  return body.alerts.find((a) => a.rule === 'gateway-disk' && a.subject.id === GATEWAY_ID);
}

function sum(record: Record<string, number>): number {
  return Object.values(record).reduce((a, b) => a + b, 0);
}

describe('a full disk under the gateway', { timeout: 300_000 }, () => {
  it('drains the backlog that filled its disk once the uplink returns, and takes readings again', async () => {
    const disk = await smallDisk('4m');
    // A byte bound above the disk's size, as before `auto`: the outbox fills the disk itself.
    const stack = await startOnDisk(disk, { maxBytes: 1 << 30 });
    const baseTs = Date.now() - 600_000;
    const acked = await publishUntilRefused(stack.deviceUrl, 'sd-1', 0, 20_000, baseTs);
    expect(acked.size).toBeGreaterThan(500);
    expect(acked.size).toBeLessThan(20_000);
    expect(metricValue(await stack.gateway.metrics(), 'ferry_gateway_storage_full_total')).toBeGreaterThan(0);
    expect(await diskOf(stack)).toMatchObject({ full: true });

    await stack.broker.start();
    const expected = new Map([['sd-1', acked]]);
    const delivery = await drainedDelivery(stack, expected, 'the backlog that filled the disk written');
    expect(delivery).toMatchObject({ missing: [], duplicated: [], unexpected: [] });
    expect(delivery.present).toBe(acked.size);
    expect(sum((await gatewayOutbox(stack.gateway)).dropped)).toBe(0);

    // Accepting again: the rows the drain deleted left pages the outbox reuses.
    const after = await publishReadings({ url: stack.deviceUrl, deviceIds: ['sd-2'], from: 0, count: 200, baseTs, deadlineMs: 60_000 });
    const all = new Map([...expected, ...after.acked]);
    const final = await drainedDelivery(stack, all, 'readings taken after the drain written');
    expect(final).toMatchObject({ missing: [], duplicated: [], unexpected: [] });
    expect(await diskOf(stack)).toMatchObject({ full: false });
  });

  it('drains while another file keeps the disk full, and takes its reserve back when that file goes', async () => {
    const disk = await smallDisk('4m');
    const stack = await startOnDisk(disk, {});
    const baseTs = Date.now() - 600_000;
    const before = await publishReadings({ url: stack.deviceUrl, deviceIds: ['sd-3'], from: 0, count: 800, baseTs, deadlineMs: 60_000, payload: paddedPayload });
    expect(totalOf(before.acked)).toBe(800);
    expect(await diskOf(stack)).toMatchObject({ reserveHeld: true });

    const filler = join(disk, 'someone-elses-file');
    fillDisk(filler);
    const during = await publishUntilRefused(stack.deviceUrl, 'sd-4', 0, 5_000, baseTs);
    expect(during.size).toBeLessThan(5_000);

    await stack.broker.start();
    const expected = new Map([...before.acked, ['sd-4', during]]);
    const published = totalOf(expected);
    // The disk stays full throughout the drain.
    await waitFor(async () => (await gatewayOutbox(stack.gateway)).depth === 0, { timeoutMs: 120_000, what: 'the outbox empty with the disk full' }).catch(
      async (err: unknown) => {
        // What a wedged drain leaves, for whoever reads the failure: the disk as the gateway sees
        // it, its outbox, and the files on the small disk.
        const gatewayDir = join(disk, 'gateway');
        const files = readdirSync(gatewayDir).map((f) => `${f} ${statSync(join(gatewayDir, f)).size}`);
        throw new Error(
          `${(err as Error).message}\ndisk ${JSON.stringify(await diskOf(stack))}\noutbox ${JSON.stringify(await gatewayOutbox(stack.gateway))}\nfiles ${files.join(', ')}\n${stack.logs()}`,
        );
      },
    );
    const delivery = compareDelivery(expected, sqliteCopies(stack.pointsDb));
    expect(delivery.duplicated).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    // Written, or counted as dropped by the policy (drop-oldest, when the bound shrank to what the file holds).
    const dropped = sum((await gatewayOutbox(stack.gateway)).dropped);
    expect(delivery.present + dropped).toBe(published);
    expect(delivery.missing.length).toBe(dropped);

    // The cloud sees it: the gateway's status carries its disk, and the default rule fires.
    await waitFor(async () => (await diskAlert(stack))?.state === 'firing', { timeoutMs: 30_000, what: 'the gateway-disk alert firing' });
    expect((await diskAlert(stack))?.summary).toMatch(/disk (is full|free)/);

    rmSync(filler);
    await waitFor(async () => (await diskOf(stack)).reserveHeld, { timeoutMs: 30_000, what: 'the reserve back in place' });
    await waitFor(async () => (await diskAlert(stack))?.state === 'resolved', { timeoutMs: 30_000, what: 'the gateway-disk alert resolved' }).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}: ${JSON.stringify(await diskAlert(stack))} ${JSON.stringify(await diskOf(stack))}`);
    });
    const after = await publishReadings({ url: stack.deviceUrl, deviceIds: ['sd-5'], from: 0, count: 200, baseTs, deadlineMs: 60_000 });
    const final = await drainedDelivery(stack, new Map([...after.acked]), 'readings taken after the space returned written');
    expect(final).toMatchObject({ missing: [], duplicated: [] });
  });

  it('with maxBytes auto, bounds the outbox before the filesystem fills: drop-oldest counts what goes, no commit fails', async () => {
    const disk = await smallDisk('4m');
    const stack = await startOnDisk(disk, {});
    const baseTs = Date.now() - 600_000;
    // About 6 MB of readings for a 4 MiB disk.
    const outage = await publishReadings({ url: stack.deviceUrl, deviceIds: ['sd-6', 'sd-7'], from: 0, count: 3_000, baseTs, deadlineMs: 120_000, payload: paddedPayload });
    const published = totalOf(outage.acked);
    expect(published).toBe(6_000);
    const metrics = await stack.gateway.metrics();
    expect(metricValue(metrics, 'ferry_gateway_storage_full_total')).toBe(0);
    const held = await gatewayOutbox(stack.gateway);
    expect(held.dropped.outbox_bytes ?? 0).toBeGreaterThan(0);
    const state = await diskOf(stack);
    expect(state).toMatchObject({ full: false, reserveHeld: true });
    expect(state.freeBytes).toBeGreaterThan(0);
    expect(metricValue(metrics, 'ferry_gateway_outbox_max_bytes')).toBeGreaterThan(0);

    await stack.broker.start();
    await waitFor(async () => (await gatewayOutbox(stack.gateway)).depth === 0, { timeoutMs: 120_000, what: 'the outbox empty' });
    const delivery = compareDelivery(outage.acked, sqliteCopies(stack.pointsDb));
    expect(delivery.duplicated).toEqual([]);
    const dropped = sum((await gatewayOutbox(stack.gateway)).dropped);
    expect(delivery.present + dropped).toBe(published);
    expect(delivery.missing.length).toBe(dropped);
  });
});
