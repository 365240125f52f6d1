// Watches the filesystem under the outbox: keeps the reserve in place while there is room,
// moves the `maxBytes: auto` bound with the free space, and says how full the disk is for the
// status, /healthz, metrics and the cloud's disk alert. I/O is statfs and stat, a few per check.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { GatewayDisk } from '@ferry/protocol';
import type { Logger } from '@ferry/runtime';
import { autoMaxBytes, createDiskReserve, readDiskUsage, reserveSizeFor, walPagesFor } from './disk-space.js';
import type { DiskReserve, DiskUsage } from './disk-space.js';
import { OUTBOX_ROW_OVERHEAD_BYTES } from './outbox.js';
import type { Outbox } from './outbox.js';

export interface DiskGuardOptions {
  readonly dataDir: string;
  readonly outboxPath: string;
  readonly outbox: Outbox;
  readonly reserve: DiskReserve;
  readonly maxBytes: number | 'auto';
  readonly diskShare: number;
  readonly logger: Logger;
  /** statfs; injected by tests. */
  readonly usage?: (dir: string) => DiskUsage;
}

export interface DiskGuard {
  /** Re-reads the disk: re-creates a released reserve when there is room, moves the auto bound. */
  check(): GatewayDisk | undefined;
  /** A commit failed on a full disk: checks at once, and reports `full` until a commit succeeds or the disk has room. */
  commitFailed(): void;
  commitSucceeded(): void;
  /** The last check, null before the first. */
  status(): GatewayDisk | null;
}

/** The reserve file beside the outbox and the WAL's checkpoint size, both sized for the filesystem they are on. */
export function sizeForDisk(dataDir: string, configuredReserveBytes: number): { reserve: DiskReserve; walPages: number } {
  let total = 0;
  try {
    total = readDiskUsage(dataDir).totalBytes;
  } catch {
    // Unknown size: the defaults apply.
  }
  return { reserve: createDiskReserve(join(dataDir, 'outbox.reserve'), reserveSizeFor(configuredReserveBytes, total)), walPages: walPagesFor(total) };
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** With no reserve configured: this much free, twice over, counts as room again. */
const ROOM_AGAIN_BYTES = 256 * 1024;

export function createDiskGuard(options: DiskGuardOptions): DiskGuard {
  const { outbox, reserve, logger } = options;
  const usageOf = options.usage ?? readDiskUsage;
  let last: GatewayDisk | null = null;
  let full = false;
  let boundLogged: number | undefined;

  function check(): GatewayDisk | undefined {
    let usage: DiskUsage;
    try {
      usage = usageOf(options.dataDir);
    } catch (err) {
      logger.warn({ err, dataDir: options.dataDir }, 'free space on the data directory cannot be read');
      return undefined;
    }
    // Room again: the next commit will tell if it is not enough.
    if (full && usage.freeBytes >= 2 * Math.max(reserve.bytes, ROOM_AGAIN_BYTES)) full = false;
    if (!reserve.held && reserve.ensure(usage.freeBytes)) {
      logger.info({ reserveBytes: reserve.bytes, freeBytes: usage.freeBytes }, 'disk reserve in place');
      usage = { ...usage, freeBytes: Math.max(0, usage.freeBytes - reserve.bytes) };
    }
    let maxBytes: number;
    if (options.maxBytes === 'auto') {
      // The reserve comes back as soon as there is room: do not hand its space to the outbox.
      const free = reserve.held ? usage.freeBytes : Math.max(0, usage.freeBytes - reserve.bytes);
      try {
        const file = outbox.fileUsage();
        const counted = outbox.stats();
        maxBytes = autoMaxBytes({
          share: options.diskShare,
          fileBytes: file.fileBytes,
          usedFileBytes: file.usedFileBytes,
          walBytes: file.walBytes,
          walLimitBytes: file.walLimitBytes,
          countedBytes: counted.bytes + counted.depth * OUTBOX_ROW_OVERHEAD_BYTES,
          freeBytes: free,
        });
      } catch (err) {
        logger.warn({ err }, 'the outbox size cannot be read; the byte bound stays as it was');
        return last ?? undefined;
      }
      outbox.setMaxBytes(maxBytes);
      // One line when the bound has moved by a quarter: it follows the disk, and a full disk is news.
      if (boundLogged === undefined || Math.abs(maxBytes - boundLogged) > boundLogged / 4) {
        logger.info({ maxBytes, freeBytes: usage.freeBytes, diskShare: options.diskShare }, 'outbox byte bound (auto) follows the free space');
        boundLogged = maxBytes;
      }
    } else {
      maxBytes = options.maxBytes;
    }
    last = {
      totalBytes: usage.totalBytes,
      freeBytes: usage.freeBytes,
      outboxBytes: fileSize(options.outboxPath) + fileSize(`${options.outboxPath}-wal`),
      maxBytes,
      reserveHeld: reserve.held,
      full,
    };
    return last;
  }

  return {
    check,
    commitFailed() {
      full = true;
      check();
    },
    commitSucceeded() {
      if (!full) return;
      full = false;
      if (last) last = { ...last, full: false };
    },
    status: () => last,
  };
}
