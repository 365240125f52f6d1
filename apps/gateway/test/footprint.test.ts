// The gateway's memory settings for a small device: a 2 MiB SQLite page cache on the outbox (not the
// 16 MiB better-sqlite3 is built with, which a quick_check of a large backlog fills; the dead-letter
// store gets the same through openSqlite's cacheKiB, tested in packages/runtime), and no
// mqtt-packet number cache (65,536 Buffers) in the process that runs the gateway, and V8's heap
// policy left to node's own flags when it was given some, else a young generation bounded at 4 MiB
// semi-spaces (footprint-process.test.ts runs a process).
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { writeToStream } from 'mqtt-packet';
import { applyGatewayFootprint } from '../src/index.js';
import { GATEWAY_YOUNG_BYTES, hasOwnHeapPolicy, youngGrowthFactor } from '../src/heap-policy.js';
import { GATEWAY_SQLITE_CACHE_KIB, openOutboxFile } from '../src/outbox-file.js';
import { tempDir } from './harness.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()?.();
});

describe('gateway footprint', () => {
  it('gives the outbox connection a 2 MiB page cache', () => {
    const d = tempDir();
    cleanups.push(() => d.remove());
    const { db } = openOutboxFile(join(d.path, 'outbox.db'), 'normal', 0);
    cleanups.push(() => db.close());
    expect(GATEWAY_SQLITE_CACHE_KIB).toBe(2048);
    expect(db.pragma('cache_size', { simple: true })).toBe(-2048);
    // What better-sqlite3 gives a connection otherwise: the setting is what makes the difference.
    const plain = new Database(':memory:');
    cleanups.push(() => plain.close());
    expect(plain.pragma('cache_size', { simple: true })).toBe(-16000);
  });

  it('turns off the mqtt-packet number cache for the process', () => {
    const before = writeToStream.cacheNumbers;
    cleanups.push(() => {
      writeToStream.cacheNumbers = before;
    });
    writeToStream.cacheNumbers = true;
    applyGatewayFootprint();
    expect(writeToStream.cacheNumbers).toBe(false);
  });

  it("takes the heap flags node was started with, the Pi unit's or any in NODE_OPTIONS, as the process's own policy", () => {
    expect(hasOwnHeapPolicy(['--max-semi-space-size=1', '--optimize-for-size', '--no-concurrent-recompilation'], '')).toBe(true);
    expect(hasOwnHeapPolicy(['--semi_space_growth_factor=2'], '')).toBe(true);
    expect(hasOwnHeapPolicy(['--heap-growing-percent=50'], '')).toBe(true);
    expect(hasOwnHeapPolicy([], '--max-old-space-size=256 --no-optimize-for-size')).toBe(true);
    expect(hasOwnHeapPolicy([], '')).toBe(false);
    expect(hasOwnHeapPolicy(['--enable-source-maps', '--max-old-space-size=256'], '--inspect')).toBe(false);
  });

  it('lets the young generation double up to two 4 MiB semi-spaces and grow no further', () => {
    const MiB = 1024 * 1024;
    expect(GATEWAY_YOUNG_BYTES).toBe(8 * MiB);
    // node starts at 1 MiB semi-spaces; each growth doubles, so it lands on the bound.
    expect([2 * MiB, 4 * MiB].map((bytes) => youngGrowthFactor(bytes))).toEqual([2, 2]);
    expect([8 * MiB, 32 * MiB].map((bytes) => youngGrowthFactor(bytes))).toEqual([1, 1]);
  });
});
