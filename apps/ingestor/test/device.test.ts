// Device-side identity, skew policy, partitioning and the direct-device path, in-process: real
// SQLite stores, an in-memory sink, acks captured.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Ack, DeviceReading } from '@ferry/protocol';
import { defaultLimits, uplinkTopics } from '@ferry/protocol';
import type { DeadLetterStore } from '@ferry/deadletter';
import { waitFor } from '@ferry/testkit';
import { Accounting, imbalances } from '../src/accounting.js';
import { decimal, deviceIdentity, judgeDevice, legacyKeyOf, openDeviceDedupeStore } from '../src/device-dedupe.js';
import { legacyContentHash } from '../src/content-hash.js';
import type { DeviceIdentity } from '../src/device-dedupe.js';
import { compileDeviceTopics } from '../src/direct.js';
import { openDeviceJournal } from '../src/journal.js';
import { ownsSource, partitionHash } from '../src/partition.js';
import { DIRECT_SOURCE } from '../src/pipeline.js';
import type { Pipeline } from '../src/pipeline.js';
import { applySkewPolicy } from '../src/skew.js';
import type { SkewPolicy } from '../src/skew.js';
import type { MemorySink } from './memory-sink.js';
import { openPipelineRig } from './pipeline-rig.js';
import { batch, reading, T0 } from './fixtures.js';

const NOW = T0 + 60_000;
const dirs: string[] = [];
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-device-'));
  dirs.push(dir);
  return dir;
}

interface Rig {
  pipeline: Pipeline;
  sink: MemorySink;
  acks: Ack[];
  accounting: Accounting;
  deadLetters: DeadLetterStore;
  send(gatewayId: string, batchId: number, items: readonly unknown[]): void;
  direct(id: number, topic: string, payload: unknown, receivedAt?: number): Promise<void>;
}

function rig(options: { dir?: string; skewPolicy?: SkewPolicy } = {}): Rig {
  const dir = options.dir ?? tempDir();
  const r = openPipelineRig({
    dir,
    now: NOW,
    deviceDedupe: true,
    skewPolicy: options.skewPolicy ?? 'deadletter',
    direct: { topics: compileDeviceTopics([{ pattern: 'devices/{deviceId}/telemetry' }, { pattern: 'devices/{deviceId}/status', kind: 'status' }]), gatewayTag: 'direct' },
  });
  closers.push(() => r.close());
  const { pipeline, sink, acks, accounting, deadLetters } = r;
  return {
    pipeline,
    sink,
    acks,
    accounting,
    deadLetters,
    send: (gatewayId, batchId, items) => void pipeline.accept(uplinkTopics.batch(gatewayId), batch(gatewayId, batchId, items)),
    direct: (id, topic, payload, receivedAt = NOW) =>
      new Promise<void>((resolve) => pipeline.acceptDirect({ id, topic, payload: Buffer.from(JSON.stringify(payload)), receivedAt }, resolve)),
  };
}

function ackFor(r: Rig, batchId: number): Promise<Ack> {
  return waitFor(() => r.acks.find((a) => a.batchId === batchId), { timeoutMs: 5000, what: `ack of batch ${batchId}` });
}

const deviceReading = (over: Partial<DeviceReading> = {}): DeviceReading => ({
  deviceId: 'd1',
  kind: 'telemetry',
  ts: T0,
  tsSource: 'device',
  receivedAt: T0 + 5,
  metrics: { t: 1 },
  ...over,
});

describe('device identity', () => {
  it('writes the times in its keys as plain template strings would, for every number', () => {
    const edges = fc.constantFrom(1e8 - 1, 1e8, 1e8 + 1, 2 ** 31, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 1e21, -1e8, -0, 0.5, 1e8 + 0.5, NaN, Infinity);
    fc.assert(
      fc.property(fc.oneof(fc.maxSafeInteger(), fc.maxSafeNat(), fc.integer(), fc.double(), edges), (n) => {
        expect(decimal(n)).toBe(`${n}`);
      }),
      { numRuns: 20_000 },
    );
  });

  it('keys a reading by deviceSeq and device time, strictly, and ignores what the gateway added', () => {
    const a = deviceIdentity(deviceReading({ deviceSeq: 7 }), 'gateway', 'gw')!;
    const b = deviceIdentity(deviceReading({ deviceSeq: 7, receivedAt: T0 + 999, flags: ['x'] }), 'gateway', 'gw')!;
    expect(a).toEqual(b);
    expect(a.strict).toBe(true);
    const other = deviceIdentity(deviceReading({ deviceSeq: 7, metrics: { t: 2 } }), 'gateway', 'gw')!;
    expect(other.key).toBe(a.key);
    expect(judgeDevice(a.hash, other)).toMatchObject({ kind: 'conflict' });
    expect(judgeDevice(a.hash, a)).toEqual({ kind: 'duplicate' });
  });

  it('treats a reused deviceSeq without a device time, or a shared device millisecond, as new when the content differs', () => {
    const seqOnly = deviceIdentity(deviceReading({ deviceSeq: 3, tsSource: 'gateway' }), 'gateway', 'gw')!;
    const seqOnlyOther = deviceIdentity(deviceReading({ deviceSeq: 3, tsSource: 'gateway', metrics: { t: 9 } }), 'gateway', 'gw')!;
    expect(seqOnly.key).not.toBe(seqOnlyOther.key);
    const tsOnly = deviceIdentity(deviceReading(), 'gateway', 'gw')!;
    const tsOnlyOther = deviceIdentity(deviceReading({ metrics: { h: 1 } }), 'gateway', 'gw')!;
    expect(tsOnly.key).not.toBe(tsOnlyOther.key);
    expect(judgeDevice(tsOnly.hash, tsOnlyOther)).toEqual({ kind: 'new' });
  });

  it('gives no identity to a gateway reading with neither deviceSeq nor device time, but one to a direct reading', () => {
    expect(deviceIdentity(deviceReading({ tsSource: 'gateway' }), 'gateway', 'gw')).toBeUndefined();
    expect(deviceIdentity(deviceReading({ tsSource: 'gateway' }), 'direct', 'direct')?.key).toMatch(/^r/);
  });
});

describe('device dedupe store', () => {
  const identity = (ts: number, deviceSeq?: number): DeviceIdentity =>
    deviceIdentity(deviceReading({ ts, ...(deviceSeq !== undefined ? { deviceSeq } : {}) }), 'gateway', 'gw')!;

  it('finds a reading older than the newest one recorded, in the same process and after a reopen', () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const store = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    const [older, newer, newest] = [identity(T0 + 10, 1), identity(T0 + 20, 2), identity(T0 + 30)];
    expect(store.lookup(newer)).toBeUndefined();
    store.record([newer], NOW);
    store.record([older], NOW);
    expect(store.lookup(older)).toBe(older.hash);
    expect(store.lookup(newer)).toBe(newer.hash);
    expect(store.lookup(newest)).toBeUndefined();
    store.record([newest], NOW);
    expect(store.lookup(newest)).toBe(newest.hash);
    store.close();
    const again = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    closers.push(() => again.close());
    for (const i of [older, newer, newest]) expect(again.lookup(i)).toBe(i.hash);
  });

  it('finds identities recorded in runs across many minutes, devices and out-of-order chunks, after a reopen', () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const at = (deviceId: string, ts: number, deviceSeq?: number): DeviceIdentity =>
      deviceIdentity(deviceReading({ deviceId, ts, metrics: { t: ts % 97 }, ...(deviceSeq !== undefined ? { deviceSeq } : {}) }), 'gateway', 'gw')!;
    // Two devices, a reading every 7 s over 20 minutes (runs are cut at a minute of device time),
    // half strict (deviceSeq + time) and half loose (time only); recorded newest chunk first.
    const all: DeviceIdentity[] = [];
    for (let k = 0; k < 170; k++) for (const d of ['a', 'b']) all.push(at(d, T0 + k * 7_000, k % 2 === 0 ? k : undefined));
    const store = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 100_000 });
    store.record(all.slice(170), NOW);
    store.record(all.slice(0, 170), NOW + 1);
    expect(store.held).toBe(340);
    for (const i of all) expect(store.lookup(i)).toBe(i.hash);
    store.close();
    const again = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 100_000 });
    closers.push(() => again.close());
    expect(again.held).toBe(340);
    for (const i of all) expect(again.lookup(i)).toBe(i.hash);
    // Between two recorded times, another device, other content at a strict key: none is found as the same.
    expect(again.lookup(at('a', T0 + 3_500))).toBeUndefined();
    expect(again.lookup(at('c', T0 + 7_000))).toBeUndefined();
    const changed = deviceIdentity(deviceReading({ deviceId: 'a', ts: T0 + 14_000, deviceSeq: 2, metrics: { t: -1 } }), 'gateway', 'gw')!;
    expect(judgeDevice(again.lookup(changed), changed)).toMatchObject({ kind: 'conflict' });
  });

  it('forgets identities past the window and past the bound, counting what the bound discarded', () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const at = (ts: number): DeviceIdentity => identity(ts);
    const store = openDeviceDedupeStore({ path, windowMs: 600_000, maxEntries: 50 });
    closers.push(() => store.close());
    const first = Array.from({ length: 30 }, (_, k) => at(T0 + k * 1000));
    const noTime = deviceIdentity(deviceReading({ tsSource: 'gateway', deviceSeq: 1 }), 'gateway', 'gw')!;
    expect(store.record([...first, noTime], NOW)).toBe(0);
    expect(store.held).toBe(31);
    // 30 more: 61 held is over the bound of 50; the oldest spans (a second of device time each,
    // here one identity each) go whole until 11 are gone.
    const second = Array.from({ length: 30 }, (_, k) => at(T0 + 100_000 + k * 1000));
    expect(store.record(second, NOW + 1)).toBe(11);
    expect(store.held).toBe(50);
    expect(store.lookup(first[0]!)).toBeUndefined();
    expect(store.lookup(first[10]!)).toBeUndefined();
    expect(store.lookup(first[11]!)).toBe(first[11]!.hash);
    expect(store.lookup(second[0]!)).toBe(second[0]!.hash);
    expect(store.lookup(noTime)).toBe(noTime.hash);
    // Past the window (and the prune interval), runs and rows alike are forgotten.
    const later = at(T0 + 500_000);
    store.record([later], NOW + 700_000);
    expect(store.held).toBe(1);
    expect(store.lookup(second[0]!)).toBeUndefined();
    expect(store.lookup(noTime)).toBeUndefined();
    expect(store.lookup(later)).toBe(later.hash);
  });

  it('keeps the newest identities up to a bound smaller than a chunk of one second, rather than dropping them all', () => {
    const store = openDeviceDedupeStore({ path: join(tempDir(), 'device-dedupe.db'), windowMs: 3_600_000, maxEntries: 100 });
    closers.push(() => store.close());
    // 300 identities of one device within one second or two of device time, in one chunk: the
    // bound drops whole spans, and no span holds more than a tenth of the bound.
    const chunk = Array.from({ length: 300 }, (_, k) => identity(T0 + k, k + 1));
    expect(store.record(chunk, NOW)).toBeGreaterThanOrEqual(200);
    expect(store.held).toBeGreaterThanOrEqual(90);
    expect(store.held).toBeLessThanOrEqual(100);
    expect(store.lookup(chunk[299]!)).toBe(chunk[299]!.hash);
    expect(store.lookup(chunk[210]!)).toBe(chunk[210]!.hash);
    expect(store.lookup(chunk[0]!)).toBeUndefined();
  });

  it('reads the devices it knows again once the window let them go, after they filled its bound', () => {
    const store = openDeviceDedupeStore({ path: join(tempDir(), 'device-dedupe.db'), windowMs: 1_000, maxEntries: 1000, maxKnownDevices: 3 });
    closers.push(() => store.close());
    const of = (deviceId: string, ts: number): DeviceIdentity => deviceIdentity(deviceReading({ deviceId, ts, deviceSeq: 1 }), 'gateway', 'gw')!;
    store.record(['a', 'b', 'c', 'd', 'e'].map((d) => of(d, T0)), NOW);
    // Five devices over a bound of three: a device it does not know is bounded by the newest time
    // of any device, so its older reading is looked up.
    const before = store.queried ?? 0;
    expect(store.lookup(of('f', T0 - 5_000))).toBeUndefined();
    expect(store.queried).toBe(before + 1);
    // Past the window (and the prune interval) the spans of those five go; the devices it knows
    // are read again from what is left, and a new device's older reading is new without a query.
    store.record([of('g', T0)], NOW + 20_000);
    const after = store.queried ?? 0;
    expect(store.lookup(of('h', T0 - 5_000))).toBeUndefined();
    expect(store.queried).toBe(after);
    // And the one device recorded since is still judged by its own newest time.
    expect(store.lookup(of('g', T0))).toBe(of('g', T0).hash);
  });

  it('never answers from a run that was pruned, even when a new run takes its id', () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const store = openDeviceDedupeStore({ path, windowMs: 600_000, maxEntries: 1000 });
    closers.push(() => store.close());
    const first = deviceIdentity(deviceReading({ ts: T0 + 10, deviceSeq: 7, metrics: { t: 1 } }), 'gateway', 'gw')!;
    store.record([first], NOW);
    expect(store.lookup(first)).toBe(first.hash);
    // Past the window, a record with no device time prunes every run: the table is empty.
    const noTime = deviceIdentity(deviceReading({ tsSource: 'gateway', deviceSeq: 1 }), 'gateway', 'gw')!;
    store.record([noTime], NOW + 700_000);
    expect(store.lookup(first)).toBeUndefined();
    // The same strict key with other content, recorded into a run that gets the pruned run's id.
    const second = deviceIdentity(deviceReading({ ts: T0 + 10, deviceSeq: 7, metrics: { t: 2 } }), 'gateway', 'gw')!;
    store.record([second], NOW + 700_001);
    expect(store.lookup(first)).toBe(second.hash);
    expect(judgeDevice(store.lookup(first), first)).toMatchObject({ kind: 'conflict' });
  });

  it('upgrades a file written before device times were stored, keeping every identity findable', () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const strict = identity(T0 + 10, 4);
    const loose = identity(T0 + 20);
    const noTime = deviceIdentity(deviceReading({ tsSource: 'gateway', deviceSeq: 9 }), 'gateway', 'gw')!;
    const old = new Database(path);
    old.exec(`CREATE TABLE device_seen (device TEXT NOT NULL, key TEXT NOT NULL, hash TEXT NOT NULL, seen_at INTEGER NOT NULL,
      PRIMARY KEY (device, key)) WITHOUT ROWID; CREATE INDEX device_seen_at ON device_seen (seen_at);`);
    const insert = old.prepare('INSERT INTO device_seen VALUES (?, ?, ?, ?)');
    for (const i of [strict, loose, noTime]) insert.run(`${i.scope}/${i.deviceId}`, i.key, i.hash, NOW);
    old.close();
    const store = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    closers.push(() => store.close());
    for (const i of [strict, loose, noTime]) expect(store.lookup(i)).toBe(i.hash);
    expect(store.lookup(identity(T0 + 30))).toBeUndefined();
  });
  it("keeps finding identities an earlier release stored as per-device runs, and forgets them with the window", () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const strict = identity(T0 + 10, 4);
    const loose = identity(T0 + 20);
    const first = openDeviceDedupeStore({ path, windowMs: 600_000, maxEntries: 1000 });
    first.close();
    // One run of device d1 as that release wrote it: its keys (not slots) to hashes.
    const old = new Database(path);
    old
      .prepare('INSERT INTO device_runs (device, first_ts, last_ts, seen_at, n, entries) VALUES (?, ?, ?, ?, ?, ?)')
      .run('gw/d1', T0 + 10, T0 + 20, NOW, 2, JSON.stringify({ [strict.key]: strict.hash, [loose.key]: loose.hash }));
    old.close();
    const store = openDeviceDedupeStore({ path, windowMs: 600_000, maxEntries: 1000 });
    closers.push(() => store.close());
    expect(store.held).toBe(2);
    for (const i of [strict, loose]) expect(store.lookup(i)).toBe(i.hash);
    const other = deviceIdentity(deviceReading({ ts: T0 + 10, deviceSeq: 4, metrics: { t: 99 } }), 'gateway', 'gw')!;
    expect(judgeDevice(store.lookup(other), other)).toMatchObject({ kind: 'conflict' });
    // New records go to spans, next to the old run; both are found.
    const later = identity(T0 + 15, 5);
    store.record([later], NOW + 1);
    expect(store.held).toBe(3);
    for (const i of [strict, loose, later]) expect(store.lookup(i)).toBe(i.hash);
    // Past the window the old run goes like any record.
    const next = identity(T0 + 30);
    store.record([next], NOW + 700_000);
    expect(store.held).toBe(1);
    for (const i of [strict, loose, later]) expect(store.lookup(i)).toBeUndefined();
    expect(store.lookup(next)).toBe(next.hash);
  });

  it('finds identities of devices whose ids hold quotes and backslashes, with gateways of any id, after a reopen', () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const ids = ['a"b', 'c\\d', 'e\\"f', 'g\u00e9h', 'plain'];
    const all = ids.flatMap((deviceId, k) =>
      ['gw', 'gw"2'].map((scope) => deviceIdentity(deviceReading({ deviceId, ts: T0 + k * 300, deviceSeq: k }), 'gateway', scope)!),
    );
    const store = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    store.record(all, NOW);
    for (const i of all) expect(store.lookup(i)).toBe(i.hash);
    store.close();
    const again = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    closers.push(() => again.close());
    expect(again.held).toBe(all.length);
    for (const i of all) expect(again.lookup(i)).toBe(i.hash);
    // The same key under another device (or the same device through another gateway) is not found.
    expect(again.lookup(deviceIdentity(deviceReading({ deviceId: 'a', ts: T0, deviceSeq: 0 }), 'gateway', 'gw')!)).toBeUndefined();
  });

  it('finds every identity of many devices recorded in chunks over many seconds, and only those, after a reopen', () => {
    const path = join(tempDir(), 'device-dedupe.db');
    // 100 devices, 3 readings a second each for 20 s, recorded in chunks of 500, out of order.
    const all: DeviceIdentity[] = [];
    for (let k = 0; k < 60; k++) {
      for (let d = 0; d < 100; d++) all.push(deviceIdentity(deviceReading({ deviceId: `d${d}`, ts: T0 + k * 333 + d, deviceSeq: k }), 'gateway', 'gw')!);
    }
    const chunks = Array.from({ length: all.length / 500 }, (_, c) => all.slice(c * 500, c * 500 + 500)).reverse();
    const store = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1_000_000 });
    for (const chunk of chunks) store.record(chunk, NOW);
    store.close();
    const again = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1_000_000 });
    closers.push(() => again.close());
    expect(again.held).toBe(all.length);
    expect(all.filter((i) => again.lookup(i) !== i.hash)).toEqual([]);
    // A millisecond no reading of the device had, next to ones it had: new.
    expect(again.lookup(deviceIdentity(deviceReading({ deviceId: 'd7', ts: T0 + 333 + 8, deviceSeq: 1 }), 'gateway', 'gw')!)).toBeUndefined();
  });

  it("judges each device by its own newest time after a reopen, whatever another device's clock says", () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const at = (deviceId: string, ts: number, deviceSeq: number, t = 1): DeviceIdentity =>
      deviceIdentity(deviceReading({ deviceId, ts, deviceSeq, metrics: { t } }), 'gateway', 'gw')!;
    const behind = at('behind', T0 + 10, 1);
    const ahead = at('ahead', T0 + 3_600_000, 1);
    const first = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    first.record([behind, ahead], NOW);
    first.close();
    const store = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    closers.push(() => store.close());
    // In the same second as its recorded reading, and after it: found, and new.
    expect(store.lookup(behind)).toBe(behind.hash);
    expect(store.lookup(at('behind', T0 + 11, 2))).toBeUndefined();
    expect(judgeDevice(store.lookup(at('behind', T0 + 10, 1, 2)), at('behind', T0 + 10, 1, 2))).toMatchObject({ kind: 'conflict' });
    // A device the store never saw, and one recorded after the reopen.
    expect(store.lookup(at('new', T0 + 10, 1))).toBeUndefined();
    const later = at('new', T0 + 20, 2);
    store.record([later], NOW + 1);
    expect(store.lookup(later)).toBe(later.hash);
    expect(store.lookup(at('new', T0 + 15, 3))).toBeUndefined();
    expect(store.lookup(ahead)).toBe(ahead.hash);
  });

  it('recognises identities an earlier release stored with its hash form, in the hash and inside loose keys', () => {
    const path = join(tempDir(), 'device-dedupe.db');
    const strict = identity(T0 + 10, 4);
    const loose = identity(T0 + 20);
    const noTime = deviceIdentity(deviceReading({ tsSource: 'gateway', deviceSeq: 9 }), 'gateway', 'gw')!;
    const first = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    first.close();
    // Rows as that release wrote them: SHA-256 form hashes, and loose keys that embed them.
    const old = new Database(path);
    const insert = old.prepare('INSERT INTO device_seen (device, key, hash, seen_at, ts) VALUES (?, ?, ?, ?, ?)');
    for (const i of [strict, loose, noTime]) insert.run(`${i.scope}/${i.deviceId}`, legacyKeyOf(i) ?? i.key, legacyContentHash(i.content), NOW, i.ts ?? null);
    old.close();
    const store = openDeviceDedupeStore({ path, windowMs: 3_600_000, maxEntries: 1000 });
    closers.push(() => store.close());
    for (const i of [strict, loose, noTime]) {
      const stored = store.lookup(i);
      expect(stored).toBe(legacyContentHash(i.content));
      expect(judgeDevice(stored, i)).toEqual({ kind: 'duplicate' });
    }
    // The strict key with other content is still a conflict against the old record.
    const other = deviceIdentity(deviceReading({ ts: T0 + 10, deviceSeq: 4, metrics: { t: 99 } }), 'gateway', 'gw')!;
    expect(judgeDevice(store.lookup(other), other)).toMatchObject({ kind: 'conflict' });
  });
});

describe('skew policy', () => {
  const future = deviceReading({ ts: NOW + defaultLimits.maxFutureSkewMs + 60_000, receivedAt: NOW });
  it('dead-letters, clamps or flags a device time out of the window', () => {
    expect(applySkewPolicy(future, defaultLimits, 'deadletter', NOW)).toMatchObject({ ok: false, rejection: { code: 'FERRY_ERR_TIMESTAMP_SKEW' } });
    const clamped = applySkewPolicy(future, defaultLimits, 'clamp', NOW);
    expect(clamped).toMatchObject({ ok: true, skewed: 'clamped', reading: { ts: NOW, tsSource: 'gateway', metrics: { t: 1, ferry_device_ts_ms: future.ts } } });
    const flagged = applySkewPolicy(future, defaultLimits, 'flag', NOW);
    expect(flagged).toMatchObject({ ok: true, skewed: 'flagged', reading: { ts: future.ts, metrics: { t: 1, ferry_ts_skewed: true } } });
  });

  it('refuses a device time beyond what a Date can hold without throwing', () => {
    const huge = deviceReading({ ts: 9e15 });
    expect(applySkewPolicy(huge, defaultLimits, 'deadletter', NOW)).toMatchObject({ ok: false, rejection: { code: 'FERRY_ERR_TIMESTAMP_SKEW', reason: expect.stringContaining('9000000000000000 ms') } });
  });

  it('leaves a reading inside the window, or stamped by the gateway, as it is', () => {
    const inside = deviceReading({ ts: NOW - 1000 });
    expect(applySkewPolicy(inside, defaultLimits, 'clamp', NOW)).toEqual({ ok: true, reading: inside, skewed: false });
    const gatewayTime = deviceReading({ ts: NOW + 10 * 3_600_000, tsSource: 'gateway' });
    expect(applySkewPolicy(gatewayTime, defaultLimits, 'deadletter', NOW)).toMatchObject({ ok: true, skewed: false });
  });
});

describe('partition', () => {
  it('gives every id to exactly one of count ingestors, the same way every time', () => {
    const ids = Array.from({ length: 200 }, (_, i) => `gw-${i}`);
    for (const id of ids) {
      const owners = [0, 1, 2].filter((index) => ownsSource({ index, count: 3 }, id));
      expect(owners).toEqual([partitionHash(id) % 3]);
    }
    expect(partitionHash('gw-1')).toBe(partitionHash('gw-1'));
    expect(new Set(ids.map((id) => partitionHash(id) % 3)).size).toBe(3);
    expect(ownsSource(undefined, 'anything')).toBe(true);
  });
});

describe('pipeline with device identity', () => {
  it("writes a device's republish once though the gateway gave it a second seq, in the same batch or later", async () => {
    const r = rig();
    const first = reading(1, { deviceId: 'd1', deviceSeq: 41 });
    const again = { ...first, seq: 2, receivedAt: first.receivedAt + 700 };
    r.send('gw-1', 1, [first, again]);
    expect(await ackFor(r, 1)).toMatchObject({ accepted: 1, duplicates: 1, rejected: [] });
    const later = { ...first, seq: 3, receivedAt: first.receivedAt + 5000 };
    r.send('gw-1', 2, [later]);
    expect(await ackFor(r, 2)).toMatchObject({ accepted: 0, duplicates: 1 });
    expect(r.sink.points.size).toBe(1);
    expect(imbalances(r.accounting.byGateway())).toEqual([]);
  });

  it('catches a republish by device time and content when the device sends no seq, after a restart too', async () => {
    const dir = tempDir();
    const r = rig({ dir });
    const first = reading(1, { deviceId: 'd1' });
    r.send('gw-1', 1, [first]);
    await ackFor(r, 1);
    for (const close of closers.splice(0).reverse()) await close();
    const again = rig({ dir });
    again.send('gw-1', 2, [{ ...first, seq: 9, receivedAt: first.receivedAt + 100 }]);
    expect(await ackFor(again, 2)).toMatchObject({ accepted: 0, duplicates: 1 });
    expect(again.sink.points.size).toBe(0);
  });

  it('dead-letters the same deviceSeq and device time with other values instead of merging it', async () => {
    const r = rig();
    const first = reading(1, { deviceId: 'd1', deviceSeq: 5 });
    r.send('gw-1', 1, [first]);
    await ackFor(r, 1);
    r.send('gw-1', 2, [{ ...first, seq: 2, metrics: { temperature: 99 } }]);
    const ack = await ackFor(r, 2);
    expect(ack.rejected).toMatchObject([{ seq: 2, code: 'FERRY_ERR_DUPLICATE_CONFLICT' }]);
    expect(r.deadLetters.list({ code: 'FERRY_ERR_DUPLICATE_CONFLICT' }).length).toBe(1);
  });

  it('keeps one device heard by two gateways as two series', async () => {
    const r = rig();
    const item = reading(1, { deviceId: 'd1', deviceSeq: 5 });
    r.send('gw-1', 1, [item]);
    r.send('gw-2', 1, [item]);
    await waitFor(() => r.acks.length === 2);
    expect(r.sink.points.size).toBe(2);
  });

  it('applies the skew policy to gateway readings: clamp writes at the receive time and keeps the device time', async () => {
    const r = rig({ skewPolicy: 'clamp' });
    const skewed = reading(1, { ts: NOW + 3_600_000, receivedAt: NOW - 10 });
    r.send('gw-1', 1, [skewed]);
    expect(await ackFor(r, 1)).toMatchObject({ accepted: 1, rejected: [] });
    const [point] = [...r.sink.points.values()];
    expect(point?.timestampNs).toBe(BigInt(NOW - 10) * 1_000_000n + 1n);
    expect(point?.fields).toMatchObject({ ferry_device_ts_ms: NOW + 3_600_000 });
  });

  it('dead-letters a skewed gateway reading by default', async () => {
    const r = rig();
    r.send('gw-1', 1, [reading(1, { ts: NOW + 3_600_000 })]);
    expect((await ackFor(r, 1)).rejected).toMatchObject([{ seq: 1, code: 'FERRY_ERR_TIMESTAMP_SKEW' }]);
  });
});

describe('pipeline with direct devices', () => {
  it('writes a direct reading once, takes its republish as a duplicate and settles each journal row', async () => {
    const r = rig();
    const payload = { ts: T0, seq: 12, metrics: { t: 21.5 } };
    await r.direct(1, 'devices/d1/telemetry', payload);
    await r.direct(2, 'devices/d1/telemetry', payload, NOW + 50);
    await r.direct(3, 'devices/d1/telemetry', { ts: T0, seq: 13, metrics: { t: 21.6 } });
    expect(r.sink.points.size).toBe(2);
    const [point] = [...r.sink.points.values()];
    expect(point?.tags).toMatchObject({ device: 'd1', gateway: 'direct' });
    expect(r.accounting.byGateway().get(DIRECT_SOURCE)).toMatchObject({ received: 3, written: 2, duplicates: 1, inFlight: 0 });
  });

  it('maps a direct republish the dedupe window missed to the very same point', async () => {
    const a = rig();
    const payload = { ts: T0, metrics: { t: 1 } };
    await a.direct(1, 'devices/d1/telemetry', payload);
    const b = rig();
    await b.direct(1, 'devices/d1/telemetry', payload, NOW + 1000);
    expect([...a.sink.points.keys()]).toEqual([...b.sink.points.keys()]);
  });

  it('dead-letters a direct message that is not a reading, or has a skewed time, and still settles it', async () => {
    const r = rig();
    await r.direct(1, 'devices/d1/telemetry', 'not an object');
    await r.direct(2, 'devices/d1/telemetry', { ts: NOW + 3_600_000, metrics: { t: 1 } });
    expect(r.deadLetters.list({}).map((l) => l.code).sort()).toEqual(['FERRY_ERR_PAYLOAD_SCHEMA', 'FERRY_ERR_TIMESTAMP_SKEW']);
    expect(r.deadLetters.list({})[0]?.source).toMatchObject({ deviceId: 'd1', topic: 'devices/d1/telemetry' });
    expect(r.accounting.byGateway().get(DIRECT_SOURCE)).toMatchObject({ received: 2, rejected: 2, inFlight: 0 });
  });
});

describe('device journal', () => {
  it('calls back only after commit, keeps rows across a reopen and deletes settled ones', async () => {
    const path = join(tempDir(), 'journal.db');
    const journal = openDeviceJournal({ path, maxRows: 100, synchronous: 'normal' });
    const appended = await Promise.all(
      [1, 2, 3].map((n) => new Promise<void>((resolve, reject) => journal.append(`devices/d${n}/telemetry`, Buffer.from(`{"t":${n}}`), NOW, (err) => (err ? reject(err) : resolve())))),
    );
    expect(appended.length).toBe(3);
    const rows = journal.read(0, 10);
    expect(rows.map((row) => row.topic)).toEqual(['devices/d1/telemetry', 'devices/d2/telemetry', 'devices/d3/telemetry']);
    journal.remove(rows[0]!.id);
    journal.close();
    const reopened = openDeviceJournal({ path, maxRows: 100, synchronous: 'normal' });
    closers.push(() => reopened.close());
    expect(reopened.read(0, 10).map((row) => row.payload.toString())).toEqual(['{"t":2}', '{"t":3}']);
    expect(reopened.rows).toBe(2);
  });

  it('holds an append at the bound until a settled row makes room', async () => {
    const journal = openDeviceJournal({ path: join(tempDir(), 'journal.db'), maxRows: 1, synchronous: 'normal' });
    closers.push(() => journal.close());
    await new Promise<void>((resolve) => journal.append('devices/a/telemetry', Buffer.from('{}'), NOW, () => resolve()));
    let second = false;
    journal.append('devices/b/telemetry', Buffer.from('{}'), NOW, () => (second = true));
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(second).toBe(false);
    journal.remove(journal.read(0, 1)[0]!.id);
    await waitFor(() => second, { timeoutMs: 5000, what: 'the held append' });
    expect(journal.read(0, 10).map((row) => row.topic)).toEqual(['devices/b/telemetry']);
  });
});
