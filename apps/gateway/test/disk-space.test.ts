// The disk arithmetic, without a disk: the auto bound, the reserve and WAL sizes, and the guard
// that moves the bound and the `full` flag as the (injected) free space changes.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import { autoMaxBytes, createDiskReserve, DEFAULT_FILE_BYTES_PER_COUNTED, reserveSizeFor, walPagesFor } from '../src/disk-space.js';
import { createDiskGuard } from '../src/disk-guard.js';
import { createSqliteOutbox } from '../src/outbox.js';
import { reading } from './outbox-contract.js';
import { tempDir } from './harness.js';

const MiB = 1_048_576;
const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()?.();
});

describe('the auto byte bound', () => {
  const base = { share: 0.5, fileBytes: 0, usedFileBytes: 0, walBytes: 0, walLimitBytes: 0, countedBytes: 0 };

  it('gives an empty outbox a share of the free space, in counted bytes', () => {
    expect(autoMaxBytes({ ...base, freeBytes: 300 * MiB })).toBe(Math.floor((150 * MiB) / DEFAULT_FILE_BYTES_PER_COUNTED));
  });

  it('does not move as the file grows into the free space (no creep to a full disk)', () => {
    const measured = { ...base, usedFileBytes: 100 * MiB, countedBytes: 80 * MiB };
    const before = autoMaxBytes({ ...measured, fileBytes: 100 * MiB, freeBytes: 200 * MiB });
    const after = autoMaxBytes({ ...measured, fileBytes: 150 * MiB, freeBytes: 150 * MiB });
    expect(after).toBe(before);
  });

  it('keeps what the file holds when another file fills the disk: nothing is dropped for it', () => {
    const bound = autoMaxBytes({ ...base, fileBytes: 100 * MiB, usedFileBytes: 100 * MiB, countedBytes: 80 * MiB, freeBytes: 0 });
    expect(bound).toBe(80 * MiB);
  });

  it('leaves room for the WAL to grow to twice its checkpoint size', () => {
    const without = autoMaxBytes({ ...base, freeBytes: 100 * MiB });
    const withWal = autoMaxBytes({ ...base, freeBytes: 100 * MiB, walLimitBytes: 4 * MiB, walBytes: 1 * MiB });
    expect(withWal).toBeLessThan(without);
    expect(withWal).toBe(Math.floor((0.5 * 93 * MiB) / DEFAULT_FILE_BYTES_PER_COUNTED));
  });

  it('sizes the reserve and the WAL for small filesystems', () => {
    expect(reserveSizeFor(8 * MiB, 32 * 1024 * MiB)).toBe(8 * MiB);
    expect(reserveSizeFor(8 * MiB, 4 * MiB)).toBe(256 * 1024);
    expect(reserveSizeFor(8 * MiB, 40 * MiB)).toBe(2 * MiB);
    expect(reserveSizeFor(0, 40 * MiB)).toBe(0);
    expect(walPagesFor(32 * 1024 * MiB)).toBe(1000);
    expect(walPagesFor(4 * MiB)).toBe(32);
    expect(walPagesFor(100 * MiB)).toBe(512);
  });
});

describe('the disk reserve', () => {
  it('is written as real bytes only when the disk has room for it twice, and released once', () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const path = join(dir.path, 'outbox.reserve');
    const reserve = createDiskReserve(path, 64 * 1024);
    expect(reserve.ensure(100 * 1024)).toBe(false);
    expect(existsSync(path)).toBe(false);
    expect(reserve.ensure(10 * MiB)).toBe(true);
    expect(statSync(path).blocks * 512).toBeGreaterThanOrEqual(64 * 1024);
    expect(reserve.release()).toBe(true);
    expect(reserve.release()).toBe(false);
    expect(existsSync(path)).toBe(false);
    expect(reserve.releases).toBe(1);
    // A restart finds the file and holds it.
    expect(reserve.ensure(10 * MiB)).toBe(true);
    expect(createDiskReserve(path, 64 * 1024).held).toBe(true);
  });
});

describe('the disk guard', () => {
  it('moves the auto bound with the free space, brings the reserve back, and clears full once there is room', () => {
    const dir = tempDir();
    const outbox = createSqliteOutbox({ path: join(dir.path, 'outbox.db') });
    cleanups.push(() => {
      outbox.close();
      dir.remove();
    });
    const reserve = createDiskReserve(join(dir.path, 'outbox.reserve'), 64 * 1024);
    let free = 100 * MiB;
    const guard = createDiskGuard({
      dataDir: dir.path,
      outboxPath: join(dir.path, 'outbox.db'),
      outbox,
      reserve,
      maxBytes: 'auto',
      diskShare: 0.5,
      logger: silentLogger(),
      usage: () => ({ totalBytes: 200 * MiB, freeBytes: free }),
    });
    const first = guard.check();
    expect(first).toMatchObject({ totalBytes: 200 * MiB, reserveHeld: true, full: false });
    expect(first?.maxBytes).toBeGreaterThan(30 * MiB);

    outbox.append([reading(1)]);
    reserve.release();
    free = 10 * 1024;
    guard.commitFailed();
    expect(guard.status()).toMatchObject({ full: true, reserveHeld: false });
    const squeezed = guard.status()?.maxBytes ?? 0;
    expect(squeezed).toBeLessThan(first?.maxBytes ?? 0);

    free = 50 * MiB;
    expect(guard.check()).toMatchObject({ full: false, reserveHeld: true });
    expect(guard.status()?.maxBytes).toBeGreaterThan(squeezed);
  });

  it('reports a numeric bound as it is', () => {
    const dir = tempDir();
    const outbox = createSqliteOutbox({ path: join(dir.path, 'outbox.db') });
    cleanups.push(() => {
      outbox.close();
      dir.remove();
    });
    const guard = createDiskGuard({
      dataDir: dir.path,
      outboxPath: join(dir.path, 'outbox.db'),
      outbox,
      reserve: createDiskReserve(join(dir.path, 'outbox.reserve'), 0),
      maxBytes: 5 * MiB,
      diskShare: 0.5,
      logger: silentLogger(),
      usage: () => ({ totalBytes: 200 * MiB, freeBytes: 100 * MiB }),
    });
    expect(guard.check()).toMatchObject({ maxBytes: 5 * MiB, reserveHeld: false });
  });
});
