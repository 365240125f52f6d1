import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DeviceReading } from '@ferry/protocol';
import { createGroupCommitter } from '../src/commit.js';
import type { AppendResult } from '../src/outbox.js';
import { createSqliteOutbox } from '../src/outbox.js';

const reading = (i: number): DeviceReading => ({
  deviceId: 'plc-1',
  kind: 'telemetry',
  ts: 1_764_000_000_000 + i,
  tsSource: 'device',
  receivedAt: 1_764_000_000_000,
  metrics: { v: i },
});

describe('group commit', () => {
  it('stores the readings of one device message in a single transaction, even past the group size', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-commit-'));
    const outbox = createSqliteOutbox({ path: join(dir, 'outbox.db') });
    const commits: AppendResult[] = [];
    const acked: Array<Error | null> = [];
    const committer = createGroupCommitter({
      outbox,
      lingerMs: 0,
      maxReadings: 2,
      onCommitted: (r) => commits.push(r),
      onError: () => undefined,
    });
    try {
      committer.add([reading(1), reading(2), reading(3)], (err) => acked.push(err));
      committer.add([reading(4)], (err) => acked.push(err));
      committer.flush();
      expect(commits.map((c) => c.seqs.length)).toEqual([3, 1]);
      expect(acked).toEqual([null, null]);
      expect(outbox.stats().depth).toBe(4);
    } finally {
      committer.close();
      outbox.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
