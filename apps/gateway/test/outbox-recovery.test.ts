// The outbox file at start: schema migrations that keep the backlog, a newer schema refused, and
// a corrupt file moved aside (never wiped) with its loss counted, the gateway running on.
import { existsSync, openSync, readdirSync, truncateSync, writeFileSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import { createRegistry, ManualClock, silentLogger } from '@ferry/runtime';
import { createGateway } from '../src/index.js';
import { createSqliteOutbox } from '../src/outbox.js';
import { migrateOutbox, OUTBOX_SCHEMA_VERSION } from '../src/outbox-schema.js';
import { reading } from './outbox-contract.js';
import { startTestBroker, tempDir } from './harness.js';

const none = new Set<number>();
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

function dir(): string {
  const d = tempDir();
  cleanups.push(() => d.remove());
  return d.path;
}

/** An outbox file with `rows` readings over two devices, closed. */
function filledOutbox(path: string, rows: number): void {
  const outbox = createSqliteOutbox({ path });
  outbox.append(Array.from({ length: rows }, (_, i) => reading(i, i % 2 === 0 ? 'a' : 'b')));
  outbox.close();
}

function asideFiles(directory: string): string[] {
  return readdirSync(directory).filter((f) => f.startsWith('outbox.db.corrupt-') && !f.endsWith('-wal') && !f.endsWith('-shm'));
}

describe('outbox schema versions', () => {
  it('migrates a version 1 outbox forward and keeps its backlog', () => {
    const path = join(dir(), 'outbox.db');
    const clock = new ManualClock(1_700_000_000_000);
    // A file exactly as the version 1 code left it: schema 1, two readings, their totals.
    const v1 = new Database(path);
    v1.pragma('journal_mode = WAL');
    migrateOutbox(v1, clock, path, 1);
    const insert = v1.prepare('INSERT INTO outbox (device_id, ts, received_at, bytes, payload) VALUES (?, ?, ?, ?, ?)');
    let total = 0;
    for (const r of [reading(1, 'a'), reading(2, 'b')]) {
      const payload = JSON.stringify(r);
      total += Buffer.byteLength(payload);
      insert.run(r.deviceId, r.ts, r.receivedAt, Buffer.byteLength(payload), payload);
    }
    v1.prepare('UPDATE outbox_state SET depth = 2, bytes = ? WHERE id = 1').run(total);
    expect(v1.pragma('user_version', { simple: true })).toBe(1);
    v1.close();

    const outbox = createSqliteOutbox({ path, clock });
    expect(outbox.stats()).toMatchObject({ depth: 2, bytes: total });
    expect(outbox.peek({ limit: 10, maxBytes: 1 << 20, exclude: none }).map((e) => e.reading.metrics.n)).toEqual([1, 2]);
    // The new tables work on the migrated file.
    expect(outbox.gaps()).toEqual([]);
    outbox.close();
    const check = new Database(path, { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(OUTBOX_SCHEMA_VERSION);
    check.close();
  });

  it('migrates a version 4 outbox to the age bound by receive time: a backfill it holds is kept, a row held too long goes', () => {
    const path = join(dir(), 'outbox.db');
    const clock = new ManualClock(Date.now());
    const now = clock.now();
    const v4 = new Database(path);
    v4.pragma('journal_mode = WAL');
    migrateOutbox(v4, clock, path, 4);
    expect(v4.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'outbox_ts'").get()).toBeDefined();
    const insert = v4.prepare('INSERT INTO outbox (device_id, ts, received_at, bytes, payload) VALUES (?, ?, ?, ?, ?)');
    let total = 0;
    // Row 1: device time 40 days ago, received a minute ago. Row 2: received two hours ago.
    const rows = [
      { ...reading(1, 'a'), ts: now - 40 * 86_400_000, receivedAt: now - 60_000 },
      { ...reading(2, 'b'), ts: now - 7_200_000, receivedAt: now - 7_200_000 },
    ];
    for (const r of rows) {
      const payload = JSON.stringify(r);
      total += Buffer.byteLength(payload);
      insert.run(r.deviceId, r.ts, r.receivedAt, Buffer.byteLength(payload), payload);
    }
    v4.prepare('UPDATE outbox_state SET depth = 2, bytes = ? WHERE id = 1').run(total);
    v4.close();

    const outbox = createSqliteOutbox({ path, clock, maxAgeMs: 3_600_000 });
    expect(outbox.expire()).toHaveLength(1);
    expect(outbox.peek({ limit: 10, maxBytes: 1 << 20, exclude: none }).map((e) => e.reading.deviceId)).toEqual(['a']);
    expect(outbox.droppedByDevice()).toEqual([{ reason: 'outbox_age', deviceId: 'b', count: 1 }]);
    outbox.close();
    const check = new Database(path, { readonly: true });
    const indexes = check.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'").all().map((r) => r.name);
    expect(indexes).toContain('outbox_received_at');
    expect(indexes).not.toContain('outbox_ts');
    expect(check.pragma('user_version', { simple: true })).toBe(5);
    check.close();
  });

  it('refuses an outbox from a newer Ferry with FERRY_ERR_STORAGE and leaves the file untouched', () => {
    const path = join(dir(), 'outbox.db');
    filledOutbox(path, 3);
    const db = new Database(path);
    db.pragma(`user_version = ${OUTBOX_SCHEMA_VERSION + 1}`);
    db.close();
    let caught: unknown;
    try {
      createSqliteOutbox({ path });
    } catch (err) {
      caught = err;
    }
    expect(isFerryError(caught, 'FERRY_ERR_STORAGE')).toBe(true);
    expect((caught as Error).message).toContain('newer Ferry');
    const after = new Database(path, { readonly: true });
    expect(after.prepare('SELECT count(*) AS n FROM outbox').get()).toEqual({ n: 3 });
    after.close();
  });
});

describe('corrupt outbox at start', () => {
  it('moves a file of garbage aside, counts the loss as unknown, and opens a fresh outbox', () => {
    const directory = dir();
    const path = join(directory, 'outbox.db');
    writeFileSync(path, Buffer.alloc(64 * 1024, 0x5a));
    const outbox = createSqliteOutbox({ path });
    cleanups.push(() => outbox.close());
    expect(outbox.corrupt?.asidePath).toMatch(/outbox\.db\.corrupt-\d+$/);
    expect(existsSync(outbox.corrupt!.asidePath)).toBe(true);
    expect(outbox.stats().depth).toBe(0);
    expect(outbox.gaps()).toEqual([expect.objectContaining({ reason: 'corrupt', deviceId: null, count: null })]);
    expect(outbox.append([reading(1)]).seqs).toHaveLength(1);
  });

  it('moves a file torn mid-page aside with its -wal, and counts what could still be read', () => {
    const directory = dir();
    const path = join(directory, 'outbox.db');
    filledOutbox(path, 2000);
    const size = statSync(path).size;
    // Torn write: the last pages cut off in the middle of a page, and a page in the middle scribbled on.
    truncateSync(path, Math.floor(size * 0.6) + 1234);
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(2048, 0xff), 0, 2048, 4096 * 3 + 100);
    closeSync(fd);
    const outbox = createSqliteOutbox({ path });
    cleanups.push(() => outbox.close());
    expect(outbox.corrupt).toBeDefined();
    expect(asideFiles(directory)).toHaveLength(1);
    expect(existsSync(path)).toBe(true);
    expect(outbox.stats().depth).toBe(0);
    // A loss is recorded either way: rows counted when readable, else of unknown size.
    const gaps = outbox.gaps();
    expect(gaps.length).toBeGreaterThan(0);
    expect(gaps.every((g) => g.reason === 'corrupt')).toBe(true);
  });

  it('keeps the gateway running on a fresh outbox, with the corrupt file aside and the loss recorded', async () => {
    const directory = dir();
    const path = join(directory, 'outbox.db');
    filledOutbox(path, 500);
    truncateSync(path, 4096 * 2 + 777);
    const uplink = await startTestBroker();
    cleanups.push(() => uplink.close());
    const gateway = createGateway(
      { gatewayId: 'gw-corrupt', dataDir: directory, devices: { listen: { port: 0 } }, http: false, uplink: { url: uplink.url } },
      { logger: silentLogger(), registry: createRegistry() },
    );
    cleanups.push(() => gateway.close());
    await gateway.ready();
    expect(gateway.stats().outboxSetAside).toMatch(/outbox\.db\.corrupt-\d+$/);
    expect(asideFiles(directory)).toHaveLength(1);
    expect(gateway.stats().outboxDepth).toBe(0);
    const fresh = new Database(path, { readonly: true });
    try {
      expect(fresh.prepare("SELECT count(*) AS n FROM outbox_gaps WHERE reason = 'corrupt'").get()).toEqual({ n: 1 });
    } finally {
      fresh.close();
    }
  });
});
