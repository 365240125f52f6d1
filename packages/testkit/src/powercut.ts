// A disk whose power can be cut: powercut-fs.py (FUSE, Debian fuse3 + python3-fusepy) over a
// backing directory. Writes stay in the FUSE process's memory until the file is fsynced, as in a
// drive's volatile cache; powerCut() kills that process, so what was not synced is gone, and
// mounts the disk again on what the backing directory kept. Kill (-9) the programs using the disk
// first: a power cut takes them too.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError } from '@ferry/protocol';
import { findBinary } from './binaries.js';
import { makeTempDir } from './tempdir.js';

const SCRIPT = fileURLToPath(new URL('../powercut-fs.py', import.meta.url));
// Debian's python3-fusepy is a module of the system Python, not of one a version manager put first in PATH.
const PYTHON = '/usr/bin/python3';

export interface PowercutDisk {
  /** Where programs keep their files: the mounted filesystem. */
  readonly path: string;
  /** Power cuts so far. */
  readonly cuts: number;
  /** Loses every write not yet fsynced, then mounts again on what was kept. */
  powerCut(): Promise<void>;
  /** Unmounts and removes everything. */
  close(): Promise<void>;
}

function unmount(mountPoint: string): void {
  // Lazy: a program the test forgot to kill must not keep the unmount from happening.
  spawnSync(findBinary('fusermount3'), ['-u', '-z', mountPoint], { stdio: 'ignore' });
}

async function mount(backing: string, mountPoint: string): Promise<ChildProcess> {
  // The filesystem keeps no time of its own: it runs on the real clock even when the suite runs
  // shifted under libfaketime (scripts/any-date.mjs), which the FUSE library does not survive.
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'LD_PRELOAD' && !name.startsWith('FAKETIME')));
  const child = spawn(PYTHON, [SCRIPT, backing, mountPoint], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let output = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      // A half-made mount of a dead daemon would stay behind.
      unmount(mountPoint);
      reject(new FerryError('FERRY_ERR_SERVER_START', `powercut-fs did not mount ${mountPoint} within 15 s: ${output}`, { mountPoint }));
    }, 15_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      unmount(mountPoint);
      reject(
        new FerryError(
          'FERRY_ERR_SERVER_START',
          `powercut-fs exited (${signal ?? code}) before mounting ${mountPoint}; Debian fuse3 and python3-fusepy are needed (node scripts/setup.mjs --servers): ${output}`,
          { mountPoint },
        ),
      );
    });
  });
  child.removeAllListeners('exit');
  return child;
}

function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

export async function startPowercutDisk(): Promise<PowercutDisk> {
  findBinary('fusermount3');
  const root = await makeTempDir('powercut');
  const backing = join(root, 'kept');
  const mountPoint = join(root, 'disk');
  mkdirSync(backing);
  mkdirSync(mountPoint);
  let daemon = await mount(backing, mountPoint);
  let cuts = 0;
  return {
    path: mountPoint,
    get cuts() {
      return cuts;
    },
    async powerCut() {
      await killAndWait(daemon);
      unmount(mountPoint);
      cuts += 1;
      daemon = await mount(backing, mountPoint);
    },
    async close() {
      await killAndWait(daemon);
      unmount(mountPoint);
      rmSync(root, { recursive: true, force: true });
    },
  };
}
