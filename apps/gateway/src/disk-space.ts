// The gateway's disk: free space, a reserve file that keeps the outbox able to delete what the
// ingestor acked when something else filled the disk (a full SD card must never wedge the drain),
// and the `maxBytes: auto` bound that stops the outbox before the filesystem fills.
//
// Why a reserve: in WAL mode a DELETE appends frames to the WAL; on a full disk it fails with
// SQLITE_FULL, the acked rows stay, the batch is resent and acked again, forever. Releasing the
// reserve frees room for those frames; the pages the delete frees are reused by later appends,
// so once the backlog drains the gateway accepts readings again without the disk getting
// emptier. The reserve costs nothing per reading: it is written once at start and after a release.
import { closeSync, existsSync, openSync, statfsSync, statSync, unlinkSync, writeSync } from 'node:fs';

export interface DiskUsage {
  /** Size of the filesystem, bytes. */
  readonly totalBytes: number;
  /** Bytes an unprivileged writer may still use (statfs f_bavail). */
  readonly freeBytes: number;
}

/** statfs of the filesystem holding `dir`. */
export function readDiskUsage(dir: string): DiskUsage {
  const s = statfsSync(dir);
  return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
}

/** Reserve size: `configured`, but never more than 5% of a small filesystem, nor below 256 KiB. */
export function reserveSizeFor(configured: number, totalBytes: number): number {
  if (configured === 0) return 0;
  return Math.max(Math.min(configured, Math.floor(totalBytes * 0.05)), Math.min(configured, 256 * 1024));
}

export interface DiskReserve {
  /** Bytes the reserve file holds when present. */
  readonly bytes: number;
  readonly held: boolean;
  /** Times the reserve was given up to let a write through. */
  readonly releases: number;
  /**
   * Creates the reserve when it is missing and the disk has room for it twice over (so the
   * gateway does not fill the last bytes itself); true when the reserve is held afterwards.
   */
  ensure(freeBytes: number): boolean;
  /** Deletes the reserve file; true when it was held (so a failed write may be tried again). */
  release(): boolean;
}

const CHUNK = Buffer.alloc(64 * 1024);

/** A file of `bytes` real (not sparse) bytes at `path`; `bytes` 0 turns the reserve off. */
export function createDiskReserve(path: string, bytes: number): DiskReserve {
  let held = bytes > 0 && existsSync(path) && statSync(path).size >= bytes;
  let releases = 0;
  return {
    bytes,
    get held() {
      return held;
    },
    get releases() {
      return releases;
    },
    ensure(freeBytes) {
      if (held || bytes === 0) return held;
      if (freeBytes < bytes * 2) return false;
      let fd: number | undefined;
      try {
        fd = openSync(path, 'w');
        // Written, not truncated to size: a sparse file reserves nothing.
        for (let written = 0; written < bytes; ) {
          written += writeSync(fd, CHUNK, 0, Math.min(CHUNK.length, bytes - written));
        }
        held = true;
      } catch {
        // The disk filled while writing: what was written goes back.
        held = false;
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
      if (!held) {
        try {
          unlinkSync(path);
        } catch {
          // Nothing was created.
        }
      }
      return held;
    },
    release() {
      if (!held) return false;
      try {
        unlinkSync(path);
      } catch {
        // Already gone (an operator removed it): the space is free either way.
      }
      held = false;
      releases += 1;
      return true;
    },
  };
}

/**
 * WAL pages between checkpoints for a filesystem of `totalBytes`: SQLite's 1000 (4 MiB) on a real
 * card, down to 2% of a small filesystem (never below 32 pages), since the WAL keeps the size it
 * reached and the space is taken from the outbox's share.
 */
export function walPagesFor(totalBytes: number, pageSize = 4096): number {
  if (totalBytes <= 0) return 1000;
  return Math.min(1000, Math.max(32, Math.floor((totalBytes * 0.02) / pageSize)));
}

export interface AutoBoundInput {
  /** The share of (the outbox file plus the free space) the outbox may fill, 0..1. */
  readonly share: number;
  /** Pages the outbox file has, in bytes (used and free pages). */
  readonly fileBytes: number;
  /** Bytes of those pages that hold rows (the rest are free pages SQLite reuses). */
  readonly usedFileBytes: number;
  /** The WAL file now, and what it may grow to between checkpoints. */
  readonly walBytes: number;
  readonly walLimitBytes: number;
  /** What the outbox counts against maxBytes now: payloads plus the per-row cost. */
  readonly countedBytes: number;
  /** Free space on the filesystem, less the reserve when it is not held (it will be). */
  readonly freeBytes: number;
}

/** File bytes per counted byte, until the outbox holds enough to measure its own. */
export const DEFAULT_FILE_BYTES_PER_COUNTED = 1.5;
const MEASURABLE_COUNTED_BYTES = 256 * 1024;

/**
 * The `maxBytes: auto` bound, in the units the outbox counts (payload + per-row cost). The outbox
 * file may take `share` of the space it could have (its own pages plus the free space, less what
 * the WAL may still grow by, twice over for a group commit that outgrows a checkpoint), and never
 * less than the pages it already has: with the disk filled by something else the bound is what
 * the file holds, so `whenFull` makes room by reusing pages (drop-oldest, compact) or refuses,
 * instead of commits failing with SQLITE_FULL, and no backlog is dropped just because the disk
 * filled. Stable: the file growing into the free space does not move the bound.
 */
export function autoMaxBytes(input: AutoBoundInput): number {
  const ratio =
    input.countedBytes >= MEASURABLE_COUNTED_BYTES && input.usedFileBytes > 0
      ? Math.min(Math.max(input.usedFileBytes / input.countedBytes, 1), 4)
      : DEFAULT_FILE_BYTES_PER_COUNTED;
  const walGrowth = Math.max(0, 2 * input.walLimitBytes - input.walBytes);
  const available = input.fileBytes + Math.max(0, input.freeBytes - walGrowth);
  const allowedFileBytes = Math.max(input.share * available, input.fileBytes);
  return Math.max(1, Math.floor(allowedFileBytes / ratio));
}
