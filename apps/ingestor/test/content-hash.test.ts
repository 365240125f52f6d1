import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { contentHash, deviceContentHash, readingContentHash } from '../src/content-hash.js';

const value = fc.oneof(fc.double(), fc.integer(), fc.boolean(), fc.string({ maxLength: 8 }));
const reading = fc.record(
  {
    seq: fc.nat(),
    deviceId: fc.string({ maxLength: 10 }),
    kind: fc.constantFrom('telemetry', 'status'),
    ts: fc.integer(),
    tsSource: fc.constantFrom('device', 'gateway'),
    receivedAt: fc.integer(),
    deviceSeq: fc.nat(),
    metrics: fc.dictionary(fc.string({ maxLength: 6 }), value, { maxKeys: 5 }),
    tags: fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }),
    flags: fc.array(fc.string({ maxLength: 6 }), { maxLength: 2 }),
  },
  { requiredKeys: ['seq', 'deviceId', 'kind', 'ts', 'tsSource', 'receivedAt', 'metrics'] },
);

describe('content hashes of known shapes', () => {
  it('hashes a schema-shaped reading as contentHash does, whatever its key order', () => {
    fc.assert(
      fc.property(reading, fc.boolean(), (r, reversed) => {
        const raw = reversed ? Object.fromEntries(Object.entries(r).reverse()) : r;
        expect(readingContentHash(raw)).toBe(contentHash(raw));
      }),
      { numRuns: 5_000 },
    );
  });

  it("hashes a device's content as contentHash does the object of it", () => {
    fc.assert(
      fc.property(reading, fc.option(fc.integer(), { nil: undefined }), (r, ts) => {
        const content = { kind: r.kind, metrics: r.metrics, tags: r.tags, deviceSeq: r.deviceSeq, ts };
        expect(deviceContentHash(content)).toBe(contentHash(content));
      }),
      { numRuns: 5_000 },
    );
  });
});
