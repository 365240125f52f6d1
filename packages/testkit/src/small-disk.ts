// A small real filesystem for disk-full tests: a tmpfs mounted on a fresh temp dir (mounting needs
// root, as the CI runner has; a missing right is a failure, never a skip), and a filler file that
// writes until the disk refuses more.
import { execFileSync } from 'node:child_process';
import { closeSync, fstatSync, ftruncateSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir } from './tempdir.js';

export interface SmallDisk {
  /** The mounted filesystem. */
  readonly path: string;
  /** Unmounts (lazily, so a process still holding a file cannot block it) and removes the temp dir. */
  close(): void;
}

/** Mounts a tmpfs of `size` (mount's syntax: '2m', '4m') on a new temp dir. */
export async function mountSmallDisk(size: string, name = 'small-disk'): Promise<SmallDisk> {
  const root = await makeTempDir(name);
  const path = join(root, 'disk');
  mkdirSync(path);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', path]);
  let mounted = true;
  return {
    path,
    close() {
      if (mounted) execFileSync('umount', ['-l', path]);
      mounted = false;
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/**
 * Writes `path` until the disk refuses more (down to the last partial block), then gives
 * `leaveBytes` back, so that much stays free.
 */
export function fillDisk(path: string, leaveBytes = 0): void {
  for (const size of [64 * 1024, 512]) {
    const fd = openSync(path, 'a');
    try {
      for (;;) writeSync(fd, Buffer.alloc(size, 1));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    } finally {
      closeSync(fd);
    }
  }
  if (leaveBytes > 0) {
    const fd = openSync(path, 'r+');
    try {
      ftruncateSync(fd, Math.max(0, fstatSync(fd).size - leaveBytes));
    } finally {
      closeSync(fd);
    }
  }
}
