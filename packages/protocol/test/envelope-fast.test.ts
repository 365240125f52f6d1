import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { batchEnvelopeSchema, plainBatchFastPath } from '../src/envelope.js';
import { BATCH_VERSION, decodeBatch, LEGACY_BATCH_VERSION, newBatchNonce } from '../src/index.js';

const number = fc.oneof(
  fc.integer(),
  fc.constantFrom(0, -0, -1, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1, 2 ** 60, 0.5, NaN, Infinity),
  fc.double(),
);
const text = fc.oneof(fc.constantFrom('gw-1', 'a/b', '#', 'x+y', '', 'tab\there', '\u0000', 'ü', 'x'.repeat(129), 'x'.repeat(128)), fc.string({ maxLength: 8 }));
const nonce = fc.oneof(fc.constant(newBatchNonce()), fc.constantFrom('short', 'A'.repeat(22), 'A'.repeat(129), 'not base64url!!!!!!!!!!!!'), text);
const anything: fc.Arbitrary<unknown> = fc.oneof(number, fc.boolean(), text, fc.constant(null), fc.constant(undefined), fc.constant({}), fc.constant([1, 'x']));

/** An envelope of the right shape, then with any part possibly wrong or missing, or a key added. */
const candidate = fc
  .record(
    {
      v: fc.oneof(fc.constantFrom(BATCH_VERSION, LEGACY_BATCH_VERSION, 3, '2'), number),
      gatewayId: text,
      batchId: fc.oneof(fc.nat(), number),
      sentAt: fc.oneof(fc.integer(), number),
      nonce,
      compression: fc.constantFrom('none', 'gzip', 'other'),
      readings: fc.oneof(fc.array(anything, { maxLength: 3 }), anything),
      data: fc.oneof(fc.string(), anything),
    },
    { requiredKeys: [] },
  )
  .chain((r) => fc.oneof(fc.constant(r as Record<string, unknown>), fc.record({ extra: anything }).map((e) => ({ ...r, ...e }))));

// What the ingestor really gets: JSON text parsed (no undefined, no NaN, own __proto__ keys).
const asJson = fc.oneof(
  candidate.map((r) => JSON.parse(JSON.stringify(r)) as unknown),
  candidate.map((r) => JSON.parse(JSON.stringify(r).replace(/^\{/, '{"__proto__":{"v":2},')) as unknown),
);

describe('plainBatchFastPath', () => {
  it('accepts only what batchEnvelopeSchema accepts, with the same header and readings', () => {
    fc.assert(
      fc.property(asJson, (raw) => {
        const fast = plainBatchFastPath(raw);
        if (fast === undefined) return;
        const parsed = batchEnvelopeSchema.safeParse(raw);
        expect(parsed.success).toBe(true);
        if (!parsed.success || parsed.data.compression !== 'none') throw new Error('schema disagrees');
        const { compression: _c, readings, ...header } = parsed.data;
        expect(fast.header).toStrictEqual(header);
        expect(fast.readings).toStrictEqual(readings);
      }),
      { numRuns: 20_000 },
    );
  });

  it('takes every well-formed uncompressed envelope itself, v2 and v1', () => {
    fc.assert(
      fc.property(
        fc.record({
          v: fc.constantFrom(BATCH_VERSION, LEGACY_BATCH_VERSION),
          gatewayId: fc.constantFrom('gw-1', 'site:a@b', 'ü'),
          batchId: fc.nat(),
          sentAt: fc.integer(),
          readings: fc.array(fc.record({ seq: fc.nat() }), { maxLength: 3 }),
        }),
        (env) => {
          const body = env.v === BATCH_VERSION ? { ...env, nonce: newBatchNonce(), compression: 'none' } : { ...env, compression: 'none' };
          expect(plainBatchFastPath(JSON.parse(JSON.stringify(body)))).toBeDefined();
        },
      ),
    );
  });

  it('leaves a refusal and its message to the schema', () => {
    const payload = Buffer.from(JSON.stringify({ v: BATCH_VERSION, gatewayId: 'gw-1', batchId: 1, sentAt: 1, compression: 'none', readings: [] }));
    const decoded = decodeBatch(payload, 1 << 20);
    expect(decoded.ok).toBe(false);
    if (!decoded.ok) expect(decoded.rejection).toMatchObject({ code: 'FERRY_ERR_ENVELOPE_INVALID', reason: 'batch envelope at nonce: a v2 batch or ack carries the batch nonce' });
  });
});
