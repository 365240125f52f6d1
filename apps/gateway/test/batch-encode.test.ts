// The sender splices the outbox's stored JSON into the envelope instead of parsing and encoding
// it again: the bytes must be those of @ferry/protocol's encodeBatch, whatever the readings hold.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BATCH_VERSION, decodeBatch, encodeBatch, newBatchNonce } from '@ferry/protocol';
import type { BatchHeader, Compression, DeviceReading } from '@ferry/protocol';
import { encodeStoredBatch } from '../src/batch-encode.js';
import { createSqliteOutbox } from '../src/outbox.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-batch-encode-'));
const outbox = createSqliteOutbox({ path: join(dir, 'outbox.db'), synchronous: 'normal' });
afterAll(() => {
  outbox.close();
  rmSync(dir, { recursive: true, force: true });
});

const none = { has: () => false };
// Names as hostile as JSON allows: integer-like keys (which objects reorder), escapes, astral and lone surrogates.
const name = fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }), fc.nat(1000).map(String));
const value = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), fc.boolean(), fc.string({ unit: 'grapheme', maxLength: 20 }));
const deviceReading: fc.Arbitrary<DeviceReading> = fc
  .record(
    {
      deviceId: fc.string({ minLength: 1, maxLength: 20 }),
      kind: fc.constantFrom('telemetry' as const, 'status' as const),
      ts: fc.integer({ min: 0, max: 4_000_000_000_000 }),
      tsSource: fc.constantFrom('device' as const, 'gateway' as const),
      receivedAt: fc.integer({ min: 0, max: 4_000_000_000_000 }),
      metrics: fc.dictionary(name, value, { minKeys: 1, maxKeys: 6 }),
      deviceSeq: fc.nat(),
      tags: fc.dictionary(name, fc.string({ maxLength: 10 }), { maxKeys: 3 }),
      flags: fc.array(fc.constantFrom('clock_unsynced', 'compacted'), { maxLength: 2 }),
    },
    { requiredKeys: ['deviceId', 'kind', 'ts', 'tsSource', 'receivedAt', 'metrics'] },
  )
  .map((r) => r as DeviceReading);

function header(batchId: number): BatchHeader {
  return { v: BATCH_VERSION, gatewayId: 'gw-1', batchId, sentAt: 1_700_000_000_000 + batchId, nonce: newBatchNonce() };
}

describe('encodeStoredBatch', () => {
  it('gives the bytes encodeBatch gives for the same readings, read back from the outbox, with and without gzip', () => {
    let batchId = 0;
    fc.assert(
      fc.property(fc.array(deviceReading, { minLength: 1, maxLength: 40 }), fc.constantFrom<Compression>('none', 'gzip'), (readings, compression) => {
        const { seqs } = outbox.append(readings);
        const entries = outbox.peek({ limit: 1000, maxBytes: 1 << 30, exclude: none, afterSeq: seqs[0]! - 1 });
        expect(entries.map((e) => e.seq)).toEqual(seqs);
        const h = header((batchId += 1));
        const spliced = encodeStoredBatch(h, entries, compression);
        const encoded = encodeBatch(
          h,
          entries.map((e) => e.reading),
          compression,
        );
        expect(spliced.equals(encoded)).toBe(true);
        outbox.delete(seqs);
      }),
      { numRuns: 300 },
    );
  });

  it('encodes an envelope the ingestor decodes to the stored readings with their seqs', () => {
    const readings: DeviceReading[] = [
      { deviceId: 'dev-1', kind: 'telemetry', ts: 1, tsSource: 'device', receivedAt: 2, metrics: { temp: 21.5, '10': 1, '2': 'two' }, deviceSeq: 7 },
      { deviceId: 'dev-"2"', kind: 'status', ts: 3, tsSource: 'gateway', receivedAt: 3, metrics: { state: 'online' } },
    ];
    const { seqs } = outbox.append(readings);
    const entries = outbox.peek({ limit: 10, maxBytes: 1 << 30, exclude: none, afterSeq: seqs[0]! - 1 });
    const decoded = decodeBatch(encodeStoredBatch(header(1), entries, 'none'), 1 << 20);
    expect(decoded.ok && decoded.readings).toEqual(readings.map((r, i) => ({ seq: seqs[i], ...r })));
    outbox.delete(seqs);
  });
});
