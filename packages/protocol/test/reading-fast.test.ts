import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readingFastPath, readingSchema } from '../src/index.js';

// Values near the edges of what the schema takes: safe integers and beyond, -0, NaN, infinities.
const number = fc.oneof(
  fc.integer(),
  fc.constantFrom(0, -0, 1, -1, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1, -Number.MAX_SAFE_INTEGER - 1, 2 ** 60, NaN, Infinity, -Infinity, 0.5),
  fc.double(),
);
const name = fc.oneof(
  fc.constantFrom('temp', 'hum', 'device-1', 'gw:1', 'a/b', '.', 'a/../b', '#', 'x+y', '__proto__', 'constructor', '', 'a\\', 'tab\there', 'zw\u200bsp', '\uFFFD', '\uD800', 'ü'),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 6 }),
);
const anything: fc.Arbitrary<unknown> = fc.oneof(number, fc.boolean(), fc.string({ maxLength: 6 }), fc.constant(null), fc.constant(undefined), fc.array(fc.string(), { maxLength: 2 }));
const record = <T>(value: fc.Arbitrary<T>): fc.Arbitrary<Record<string, T>> => fc.dictionary(name, value, { maxKeys: 4 });

/** An array with a hole at index 0: `every` skips it, the schema does not. */
const sparse: unknown[] = [];
sparse[1] = 'x';

/** A reading of the right shape, then with any of its parts possibly wrong or missing, or a key added. */
const candidate = fc
  .record(
    {
      seq: fc.oneof(fc.nat(), number),
      deviceId: fc.oneof(fc.constantFrom('dev-1', 'kitchen/fridge', 'sensor:a@b'), name),
      kind: fc.constantFrom('telemetry', 'status', 'other'),
      ts: fc.oneof(fc.integer(), number),
      tsSource: fc.constantFrom('device', 'gateway', 'other'),
      receivedAt: fc.oneof(fc.integer(), number),
      deviceSeq: fc.oneof(fc.nat(), number),
      metrics: fc.oneof(record(fc.oneof(number, fc.boolean(), fc.string({ maxLength: 6 }))), record(anything), fc.constant([]), fc.constant(null)),
      tags: fc.oneof(record(fc.string({ maxLength: 6 })), record(anything)),
      flags: fc.oneof(fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }), fc.array(anything, { maxLength: 2 }), fc.constant(sparse)),
    },
    { requiredKeys: [] },
  )
  .chain((r) => fc.oneof(fc.constant(r as Record<string, unknown>), fc.record({ extra: anything }).map((e) => ({ ...r, ...e }))));

// JSON text round trip: what the ingestor really gets (no undefined, no NaN, own __proto__ keys).
const asJson = candidate.map((r) => JSON.parse(JSON.stringify(r)) as unknown);

describe('readingFastPath', () => {
  it('accepts only what readingSchema accepts, and as the same value the schema parses to', () => {
    fc.assert(
      fc.property(fc.oneof(candidate, asJson), (raw) => {
        const fast = readingFastPath(raw);
        if (fast === undefined) return;
        const parsed = readingSchema.safeParse(raw);
        expect(parsed.success).toBe(true);
        expect(fast).toStrictEqual(parsed.data);
      }),
      { numRuns: 20_000 },
    );
  });

  it('takes every well-formed JSON reading itself, so the schema runs only for the unusual one', () => {
    const wellFormed = fc.record(
      {
        seq: fc.nat(),
        deviceId: fc.constantFrom('dev-1', 'gw-3_sensor', 'kitchen/fridge', 'Küche'),
        kind: fc.constantFrom('telemetry', 'status'),
        ts: fc.integer(),
        tsSource: fc.constantFrom('device', 'gateway'),
        receivedAt: fc.integer(),
        deviceSeq: fc.nat(),
        metrics: fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }).filter((k) => k !== '__proto__'), fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.string())),
        tags: fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }).filter((k) => k !== '__proto__'), fc.string()),
        flags: fc.array(fc.string(), { maxLength: 2 }),
      },
      { requiredKeys: ['seq', 'deviceId', 'kind', 'ts', 'tsSource', 'receivedAt', 'metrics'] },
    );
    fc.assert(
      fc.property(wellFormed, (r) => {
        const raw = JSON.parse(JSON.stringify(r)) as unknown;
        expect(readingSchema.safeParse(raw).success).toBe(true);
        expect(readingFastPath(raw)).toBe(raw);
      }),
      { numRuns: 5_000 },
    );
  });
});
