// A full disk under the ingestor's own SQLite files, for real (a 4 MiB tmpfs filled to the last
// block), with a real Mosquitto: nothing is acked or let go that could not be recorded, the state
// is in /healthz and /metrics, and everything resumes by itself once space returns, each reading
// written and recorded once.
import { mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { createSqliteSink } from '@ferry/sinks';
import { fillDisk, mountSmallDisk, waitFor } from '@ferry/testkit';
import type { SmallDisk } from '@ferry/testkit';
import { DIRECT_SOURCE } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { openDeviceJournal } from '../src/journal.js';
import { reading, readings, T0 } from './fixtures.js';
import { MemorySink } from './memory-sink.js';
import { useMosquitto } from './mosquitto-env.js';
import { GatewayPeer } from './peer.js';

const mosquitto = useMosquitto();
const { cleanups } = mosquitto;
let small: SmallDisk | undefined;
let disk: string;

beforeAll(async () => {
  small = await mountSmallDisk('4m', 'ingestor-disk-full');
  disk = small.path;
});

afterAll(() => {
  small?.close();
});

/** Fills the small disk with a file, down to the last partial block; removed after the test. */
function fillSmallDisk(): string {
  const path = join(disk, 'filler');
  fillDisk(path);
  cleanups.push(() => rmSync(path, { force: true }));
  return path;
}

/** A directory on the small disk, emptied after the test. */
function onSmallDisk(name: string): string {
  const dir = join(disk, name);
  mkdirSync(dir);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

let n = 0;
function config(dataDir: string, extra: Partial<IngestorConfigInput> = {}): IngestorConfigInput {
  n += 1;
  return {
    ingestorId: `disk-full-${process.pid}-${n}`,
    dataDir,
    broker: { url: mosquitto.url },
    write: { lingerMs: 5, closeTimeoutMs: 200, retry: { initialMs: 50, maxMs: 300 } },
    logLevel: 'silent',
    ...extra,
  };
}

interface Storage {
  full: boolean;
  stores: string[];
  failures: number;
}

async function healthOf(ingestor: Ingestor): Promise<{ status: number; ok: boolean; storage: Storage }> {
  const res = await fetch(`${ingestor.httpUrl}/healthz`);
  const body = (await res.json()) as { ok: boolean; storage: Storage };
  return { status: res.status, ok: body.ok, storage: body.storage };
}

async function metric(ingestor: Ingestor, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${ingestor.httpUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (pattern.test(line)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

describe('a full disk under the ingestor', () => {
  it('acks nothing and records no reading while its data dir is full and the database is elsewhere, then writes each reading once', async () => {
    // The database (points.db) on a disk with room, everything the ingestor keeps itself on the
    // full one: noting the chunk's write intent (dedupe.db) fails, so nothing is written or recorded.
    const elsewhere = await mosquitto.dataDir('ingestor-disk-full-points');
    const pointsDb = join(elsewhere, 'points.db');
    const ingestor = await mosquitto.startIngestor(config(onSmallDisk('ingestor'), { sink: { type: 'sqlite', path: pointsDb } }));
    const gw = await GatewayPeer.connect(mosquitto.url, `gw-disk-full-${process.pid}`);
    cleanups.push(() => gw.close());
    await gw.send(1, readings(0, 20));
    expect(await gw.waitAck(1)).toMatchObject({ accepted: 20 });

    const filler = fillSmallDisk();
    await gw.send(2, readings(20, 20));
    await waitFor(async () => (await metric(ingestor, /^ferry_ingestor_write_retries_total\{stage="intent"\}/)) >= 2, { timeoutMs: 20_000, what: 'write intents failing' });
    // The gateway's ack timeout fires and it resends the same readings in a new batch.
    await gw.send(3, readings(20, 20));
    await waitFor(async () => (await metric(ingestor, /^ferry_ingestor_write_retries_total\{stage="intent"\}/)) >= 4, { timeoutMs: 20_000, what: 'more failed write intents' });
    expect(gw.acks.map((a) => a.batchId)).toEqual([1]);
    expect(ingestor.stats()).toMatchObject({ received: 60, written: 20, inFlight: 40, pendingBatches: 2 });
    const health = await healthOf(ingestor);
    expect(health).toMatchObject({ status: 503, ok: false, storage: { full: true } });
    expect(health.storage.stores.length).toBeGreaterThan(0);
    expect(await metric(ingestor, /^ferry_ingestor_storage_full /)).toBe(1);
    expect(await metric(ingestor, /^ferry_ingestor_storage_full_total\{/)).toBeGreaterThan(0);

    rmSync(filler);
    // Written once and recorded once: the first copy is accepted, the resend is a duplicate.
    expect(await gw.waitAck(2, 20_000)).toMatchObject({ accepted: 20, duplicates: 0, rejected: [] });
    expect(await gw.waitAck(3, 20_000)).toMatchObject({ accepted: 0, duplicates: 20, rejected: [] });
    await gw.send(4, readings(20, 20));
    expect(await gw.waitAck(4)).toMatchObject({ accepted: 0, duplicates: 20 });
    expect(ingestor.stats()).toMatchObject({ received: 80, written: 40, duplicates: 40, inFlight: 0, rejected: 0 });
    await waitFor(async () => (await healthOf(ingestor)).ok, { timeoutMs: 30_000, what: '/healthz ok again' });
    expect((await healthOf(ingestor)).storage.full).toBe(false);
    const sink = createSqliteSink({ path: pointsDb });
    try {
      expect(sink.count('telemetry')).toBe(40);
    } finally {
      await sink.close();
    }
  });

  it('files the dead letter of a reading the database refused once, however often recording the chunk fails', async () => {
    // Only device-dedupe.db on the full disk (SQLite follows the link, its WAL goes there too): the
    // refusal's dead letter is filed and the seqs recorded, then recording the device identities
    // fails and the chunk is confirmed again, and again. (With dedupe.db full the chunk's write
    // intent fails first and nothing is written: the test above.)
    const dataDir = await mosquitto.dataDir('ingestor-disk-full-letters');
    symlinkSync(join(onSmallDisk('device-dedupe'), 'device-dedupe.db'), join(dataDir, 'device-dedupe.db'));
    const sink = new MemorySink();
    sink.refuse = (p) => (p.fields.bad !== undefined ? 'field type conflict: bad is string, was float' : undefined);
    const ingestor = await mosquitto.startIngestor(config(dataDir), sink);
    const gw = await GatewayPeer.connect(mosquitto.url, `gw-disk-full-letters-${process.pid}`);
    cleanups.push(() => gw.close());

    const filler = fillSmallDisk();
    await gw.send(1, [reading(0), reading(1, { metrics: { bad: 'text' } }), reading(2)]);
    await waitFor(async () => (await metric(ingestor, /^ferry_ingestor_write_retries_total\{stage="confirm"\}/)) >= 3, { timeoutMs: 20_000, what: 'the confirmation failing three times' });
    expect(gw.acks).toEqual([]);

    rmSync(filler);
    expect(await gw.waitAck(1, 20_000)).toMatchObject({ accepted: 2, rejected: [{ seq: 1, code: 'FERRY_ERR_SINK_REJECTED' }] });
    expect(ingestor.deadLetters.counts().held).toBe(1);
  });

  it('counts each reading once in its rollup window, however often recording the chunk fails', async () => {
    // Only device-dedupe.db on the full disk: the rollup windows (in dedupe.db, with the seqs) could
    // be saved on every try of a confirmation that then fails on the device identities.
    const dataDir = await mosquitto.dataDir('ingestor-disk-full-rollups');
    symlinkSync(join(onSmallDisk('device-dedupe'), 'device-dedupe.db'), join(dataDir, 'device-dedupe.db'));
    const sink = new MemorySink();
    const ingestor = await mosquitto.startIngestor(
      config(dataDir, { processing: { rollups: [{ match: { metric: 'temperature' }, windows: ['1m'], aggregates: ['count'], allowedLatenessMs: 0 }] } }),
      sink,
    );
    const gw = await GatewayPeer.connect(mosquitto.url, `gw-disk-full-rollups-${process.pid}`);
    cleanups.push(() => gw.close());

    const filler = fillSmallDisk();
    await gw.send(1, readings(0, 6));
    await waitFor(async () => (await metric(ingestor, /^ferry_ingestor_write_retries_total\{stage="confirm"\}/)) >= 3, { timeoutMs: 20_000, what: 'the confirmation failing three times' });
    rmSync(filler);
    expect(await gw.waitAck(1, 20_000)).toMatchObject({ accepted: 6 });
    // Later readings of each device close the first readings' windows.
    const later = T0 + 30 * 60_000;
    await gw.send(2, [0, 1, 2].map((d) => reading(100 + d, { deviceId: `dev-${d}`, ts: later, receivedAt: later + 5 })));
    expect(await gw.waitAck(2)).toMatchObject({ accepted: 3 });
    const counted = (): number => [...sink.points.values()].filter((p) => p.measurement === 'telemetry_1m').reduce((sum, p) => sum + Number(p.fields.temperature_count ?? 0), 0);
    await waitFor(() => counted() >= 6, { timeoutMs: 10_000, what: 'the rollup points of the first readings' });
    expect(counted()).toBe(6);
  });

  it("takes a direct device's message again, without a restart, once its dead letter can be filed", async () => {
    // Only the dead-letter store on the full disk (SQLite follows the link, its WAL goes there too),
    // so the message is journaled and PUBACKed, and filing its refusal is what fails.
    const dataDir = await mosquitto.dataDir('ingestor-disk-full-direct');
    symlinkSync(join(onSmallDisk('letters'), 'deadletters.db'), join(dataDir, 'deadletters.db'));
    const ingestor = await mosquitto.startIngestor(config(dataDir, { direct: {} }));
    const device = await mqtt.connectAsync(mosquitto.url, { protocolVersion: 4, clientId: `dev-disk-full-${process.pid}`, clean: true });
    cleanups.push(() => device.endAsync());
    await device.publishAsync('devices/sensor-1/telemetry', JSON.stringify({ ts: T0, seq: 1, metrics: { t: 20 } }), { qos: 1 });
    await waitFor(() => ingestor.stats().byGateway[DIRECT_SOURCE]?.written === 1, { timeoutMs: 10_000, what: 'the first reading written' });

    const filler = fillSmallDisk();
    await device.publishAsync('devices/sensor-1/telemetry', 'not a reading', { qos: 1 });
    await waitFor(async () => (await healthOf(ingestor)).storage.stores.includes('deadletters'), { timeoutMs: 10_000, what: 'the dead-letter store reported full' });
    expect(ingestor.stats().journalRows).toBe(1);
    expect(ingestor.deadLetters.counts().held).toBe(0);

    rmSync(filler);
    await waitFor(() => ingestor.stats().journalRows === 0, { timeoutMs: 20_000, what: 'the message taken again and its journal row deleted' });
    expect(ingestor.deadLetters.counts().held).toBe(1);
    expect(ingestor.stats().byGateway[DIRECT_SOURCE]).toMatchObject({ written: 1, rejected: 1, inFlight: 0 });
  });

  it('deletes a journal row whose delete failed on a full disk with the next commit once space returns', async () => {
    const journal = openDeviceJournal({ path: join(onSmallDisk('journal'), 'journal.db'), maxRows: 100, synchronous: 'normal' });
    cleanups.push(() => journal.close());
    const failures: unknown[] = [];
    const append = (payload: string): Promise<void> =>
      new Promise((resolve, reject) => journal.append('devices/d/telemetry', Buffer.from(payload), Date.now(), (err) => (err ? reject(err) : resolve())));
    for (let i = 0; i < 3; i++) await append(`reading ${i}`);
    const ids = journal.read(0, 10).map((e) => e.id);
    expect(ids).toHaveLength(3);

    const filler = fillSmallDisk();
    for (const id of ids) journal.remove(id);
    // The deletes' commit fails; an append then fails too (no PUBACK for it), and the rows stay counted.
    await append('while full').catch((err: unknown) => failures.push(err));
    expect(failures).toHaveLength(1);
    expect(journal.rows).toBe(3);

    rmSync(filler);
    await append('after');
    await waitFor(() => journal.rows === 1, { timeoutMs: 5_000, what: 'the failed deletes committed with the next append' });
    expect(journal.read(0, 10).map((e) => e.payload.toString())).toEqual(['after']);
  });
});
