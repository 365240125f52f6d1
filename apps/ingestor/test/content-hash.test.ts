import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { contentHash, deviceContentHash, deviceFieldsHash, readingContentHash } from '../src/content-hash.js';
import { referenceContentHash } from './content-hash-reference.js';

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

describe('content hash across releases', () => {
  it('hashes any JSON value exactly as the first release of this hash did', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(contentHash(v)).toBe(referenceContentHash(v));
      }),
      { numRuns: 5_000 },
    );
  });

  it('hashes readings, with numbers of every kind and keys in any order, exactly as the first release did', () => {
    const number = fc.oneof(fc.double(), fc.integer(), fc.maxSafeInteger(), fc.constantFrom(-0, 2 ** 31, -(2 ** 31), 2 ** 31 - 1, 2 ** 32, 0.1, 1e21));
    const key = fc.oneof(fc.string({ maxLength: 6 }), fc.string({ unit: 'binary', maxLength: 4 }), fc.constantFrom('__proto__', 'constructor', '10', '2', 'a', 'B', '\u00e9', '\ud83d\ude00'));
    fc.assert(
      fc.property(reading, fc.dictionary(key, fc.oneof(number, fc.boolean(), fc.string({ unit: 'binary', maxLength: 9 })), { maxKeys: 20 }), fc.boolean(), (r, metrics, reversed) => {
        const full = { ...r, metrics };
        const raw = reversed ? Object.fromEntries(Object.entries(full).reverse()) : full;
        expect(readingContentHash(raw)).toBe(referenceContentHash(raw));
        expect(contentHash(raw)).toBe(referenceContentHash(raw));
      }),
      { numRuns: 3_000 },
    );
  });

  it('keeps the hashes a dedupe file holds: known values', () => {
    expect(contentHash({ seq: 1, deviceId: 'd1', kind: 'telemetry', ts: 1_700_000_000_000, tsSource: 'device', receivedAt: 1_700_000_000_005, metrics: { t: 21.5, h: 40 } })).toBe(
      referenceContentHash({ seq: 1, deviceId: 'd1', kind: 'telemetry', ts: 1_700_000_000_000, tsSource: 'device', receivedAt: 1_700_000_000_005, metrics: { t: 21.5, h: 40 } }),
    );
    expect(contentHash({ a: [1, 'b', null, true, { c: -0.5 }] })).toBe(referenceContentHash({ a: [1, 'b', null, true, { c: -0.5 }] }));
  });
});

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
        expect(deviceFieldsHash(r.kind, r.metrics, r.tags, r.deviceSeq, ts)).toBe(referenceContentHash(content));
      }),
      { numRuns: 5_000 },
    );
  });
});
