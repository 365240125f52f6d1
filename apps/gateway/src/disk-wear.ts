// SD-card wear: bytes this process caused to be written to storage (`write_bytes` in
// /proc/self/io, Linux only) per reading committed, since the gateway started. It counts every
// file the process writes (outbox, WAL, checkpoints, dead letters), which is what wears the card.
import { readFileSync } from 'node:fs';

/** Reads write_bytes from /proc/self/io; undefined where that file does not exist (not Linux). */
export function processWriteBytes(read: () => string = () => readFileSync('/proc/self/io', 'utf8')): number | undefined {
  try {
    const match = /^write_bytes:\s*(\d+)/m.exec(read());
    return match?.[1] !== undefined ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

export class DiskWearMeter {
  private readonly startBytes: number | undefined;

  constructor(private readonly readBytes: () => number | undefined = processWriteBytes) {
    this.startBytes = readBytes();
  }

  /** Bytes written to storage per reading committed since start; null before the first reading or where unmeasurable. */
  bytesPerReading(readingsCommitted: number): number | null {
    if (this.startBytes === undefined || readingsCommitted <= 0) return null;
    const now = this.readBytes();
    if (now === undefined) return null;
    return Math.round(((now - this.startBytes) / readingsCommitted) * 10) / 10;
  }
}
