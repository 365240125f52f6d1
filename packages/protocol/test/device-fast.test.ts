import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { checkDeviceId, decodeDevicePayload, decodeTelemetryText, defaultLimits } from '../src/index.js';
import type { DecodeResult, Limits } from '../src/index.js';
import { decodeNativeFast } from '../src/device-fast.js';

const NOW = Date.now();

/** Both results alike, -0 apart from 0 and the metrics' key order included (JSON.stringify of a reading follows it). */
function expectSame(actual: DecodeResult, expected: DecodeResult): void {
  expect(actual).toStrictEqual(expected);
  expect(JSON.stringify(actual)).toBe(JSON.stringify(expected));
  if (actual.ok && expected.ok) {
    expect(Object.keys(actual.reading)).toEqual(Object.keys(expected.reading));
    expect(Object.keys(actual.reading.metrics)).toEqual(Object.keys(expected.reading.metrics));
    for (const [name, value] of Object.entries(expected.reading.metrics)) expect(Object.is(actual.reading.metrics[name], value)).toBe(true);
    expect(Object.is(actual.reading.deviceSeq, expected.reading.deviceSeq)).toBe(true);
  }
}

function viaPublish(text: string, limits: Limits): DecodeResult {
  return decodeDevicePayload({ payload: Buffer.from(text), kind: 'telemetry', deviceId: 'dev-1', receivedAt: NOW, limits });
}

// ---------------------------------------------------------------- payload text, token by token
const ws = fc.constantFrom('', '', '', ' ', '\n', '\t', '\r\n  ');

/** Number tokens near every edge the two paths could read apart: -0, 2^53, 64 bits, 1e308, NaN/inf literals, bad JSON. */
const numberToken = fc.oneof(
  fc.double().map((d) => JSON.stringify(d)),
  fc.integer().map(String),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String),
  fc.constantFrom(
    '0', '-0', '1', '-1', '0.0', '-0.0', '1e308', '-1e308', '1e309', '1e999', '-1e999', '5e-324', '1e-400',
    '9007199254740991', '-9007199254740991', '9007199254740992', '9007199254740993', '-9007199254740993',
    '123456789012345', '1234567890123456', '18446744073709551615', '18446744073709551616', '9223372036854775808', '-9223372036854775809',
    '0.1', '1E5', '1e-7', '2.5e+3', '1e16', '01', '-01', '1.', '.5', '-', '+1', '1e', '0x10',
    'NaN', '-NaN', 'nan', 'Infinity', '-Infinity', 'infinity', 'inf', '-inf', 'Inf',
  ),
);
const stringToken = fc.oneof(
  fc.string({ maxLength: 8 }).map((s) => JSON.stringify(s)),
  fc.string({ unit: 'grapheme', maxLength: 6 }).map((s) => JSON.stringify(s)),
  fc.string({ unit: 'binary', maxLength: 4 }).map((s) => JSON.stringify(s)),
  fc.constantFrom(
    '"eco"', '""', '"NaN"', '"nan"', '"Infinity"', '"-0"', '"1.5"', '"1e999"', '"true"', '"null"', '"Küche"', '"温度"', '"🌡️"',
    '"\\u00e9"', '"a\\"b"', '"a\\\\"', '"line\\nbreak"', '"cr\\r"', '"\\ud800"', '"\\udc00x"', '"\\ud83c\\udf21"', '"tab\\t"',
    '"\\u0000ferry-non-finite\\u0000"', '"\\u0000ferry-out-of-range\\u0000"', '"\\u0000ferry-reserved-key\\u0000"',
    `"${'x'.repeat(1025)}"`, '"unterminated',
  ),
);
const scalarToken = fc.oneof(numberToken, stringToken, fc.constantFrom('true', 'false', 'null', 'tru', 'True'));
const nestedToken = fc.constantFrom('{}', '{"x":1}', '[]', '[1,2]', '{"a":{"b":1}}', '[{"t":1}]');
const valueToken = fc.oneof({ weight: 6, arbitrary: scalarToken }, { weight: 1, arbitrary: nestedToken });

/** Metric and tag names, as the JSON key text: the usual ones, unicode, every name rule, reserved keys, escapes, integer-like keys. */
const keyToken = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('temp', 'hum', 'batt', 'rssi', 'temperature', 'on', 'mode').map((s) => JSON.stringify(s)) },
  {
    weight: 3,
    arbitrary: fc
      .constantFrom(
        'ts', 'seq', 'metrics', 'tags', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '', ' ', 'a\\', 'a\\b', 'a"b', 'a=b', 'a b', 'a,b',
        'ü', 'Küche', 'Ku\u0308che', '温度', '🌡', 'tab\t', 'line\n', '\u0000', '\u007f', '\uD800', '\uFEFF', 'zw\u200bsp',
        '0', '1', '2', '10', '-1', '01', '4294967295', '4294967294', 'x'.repeat(128), 'x'.repeat(129),
      )
      .map((s) => JSON.stringify(s)),
  },
  { weight: 2, arbitrary: fc.string({ maxLength: 8 }).map((s) => JSON.stringify(s)) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 4 }).map((s) => JSON.stringify(s)) },
  { weight: 1, arbitrary: fc.constantFrom('"t\\u0065mp"', '"__pro\\u0074o__"', '"\\u0074s"', '"metric\\u0073"', '"a\\/b"') },
);

const entry = (key: fc.Arbitrary<string>, value: fc.Arbitrary<string>): fc.Arbitrary<string> =>
  fc.tuple(ws, key, ws, ws, value, ws).map(([a, k, b, c, v, d]) => `${a}${k}${b}:${c}${v}${d}`);
const objectOf = (entries: fc.Arbitrary<string[]>): fc.Arbitrary<string> => entries.map((e) => `{${e.join(',')}}`);

const metricsObject = objectOf(fc.array(entry(keyToken, fc.oneof({ weight: 8, arbitrary: scalarToken }, { weight: 1, arbitrary: nestedToken })), { maxLength: 5 }));
const tagsObject = objectOf(fc.array(entry(keyToken, fc.oneof({ weight: 6, arbitrary: stringToken }, { weight: 1, arbitrary: valueToken })), { maxLength: 3 }));

/** Device times: ms, s (with fractions), µs and ns near now, ISO text, numeric text, unsynced, skewed, not a time. */
const tsToken = fc.oneof(
  fc.integer({ min: 0, max: 3_600_000 }).map((back) => String(NOW - back)),
  fc.integer({ min: 0, max: 3_600_000 }).map((back) => String((NOW - back) / 1000)),
  fc.constantFrom(
    String(NOW * 1000), String(NOW * 1e6), `"${NOW}"`, `" ${Math.floor(NOW / 1000)} "`, `"${new Date(NOW - 5000).toISOString()}"`,
    `"${new Date(NOW - 5000).toISOString().replace('T', ' ').replace('Z', '+00:00')}"`, '"2023-02-30T00:00:00Z"',
    String(NOW + 3_600_000), String(NOW - 2 * 365 * 24 * 3_600_000), '0', '1', '-1', '-0', '1e3', 'true', 'null', '"yesterday"', '""', '{}',
  ),
  numberToken,
);
const seqToken = fc.oneof(
  fc.nat().map(String),
  fc.constantFrom('0', '-0', '7', '-1', '1.5', '1e3', '9007199254740991', '9007199254740992', '9007199254740993', '"3"', 'true', 'null', '[]'),
);

/** A native payload: any of its keys, in any order, maybe an unknown or a repeated key. */
const nativeText = fc
  .record(
    {
      ts: entry(fc.constant('"ts"'), tsToken),
      seq: entry(fc.constant('"seq"'), seqToken),
      metrics: entry(fc.constant('"metrics"'), fc.oneof({ weight: 8, arbitrary: metricsObject }, { weight: 1, arbitrary: valueToken })),
      tags: entry(fc.constant('"tags"'), fc.oneof({ weight: 6, arbitrary: tagsObject }, { weight: 1, arbitrary: valueToken })),
      extra: entry(keyToken, valueToken),
      repeated: entry(fc.constantFrom('"ts"', '"seq"', '"metrics"', '"tags"'), fc.oneof(tsToken, metricsObject)),
    },
    { requiredKeys: [] },
  )
  .chain((r) => fc.shuffledSubarray(Object.values(r), { minLength: 0 }))
  .map((entries) => `{${entries.join(',')}}`);

/** A flat payload: metrics side by side, maybe with ts and seq. */
const flatText = fc
  .tuple(fc.array(entry(keyToken, valueToken), { maxLength: 5 }), fc.option(entry(fc.constant('"ts"'), tsToken)), fc.option(entry(fc.constant('"seq"'), seqToken)))
  .chain(([metrics, ts, seq]) => fc.shuffledSubarray([...metrics, ...(ts === null ? [] : [ts]), ...(seq === null ? [] : [seq])], { minLength: metrics.length }))
  .map((entries) => `{${entries.join(',')}}`);

/** Around either: surrounding whitespace, a BOM, an array, a cut, a trailing comma or extra text. */
const payloadText = fc.oneof(nativeText, flatText).chain((text) =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constant(text) },
    { weight: 2, arbitrary: fc.tuple(ws, ws).map(([a, b]) => `${a}${text}${b}`) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(`\uFEFF${text}`, `[${text}]`, text.replace(/}$/, ',}'), `${text}x`, `${text}{}`, text.slice(0, -1), text.replace(/,/, ',,')),
    },
    { weight: 1, arbitrary: fc.nat({ max: text.length }).map((cut) => text.slice(0, cut)) },
  ),
);

const limitsArb: fc.Arbitrary<Limits> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(defaultLimits) },
  {
    weight: 1,
    arbitrary: fc.record({
      maxPayloadBytes: fc.constant(defaultLimits.maxPayloadBytes),
      maxMetricsPerReading: fc.integer({ min: 1, max: 4 }),
      maxTagsPerReading: fc.integer({ min: 0, max: 2 }),
      maxNameLength: fc.integer({ min: 1, max: 8 }),
      maxStringValueLength: fc.integer({ min: 1, max: 6 }),
      maxFutureSkewMs: fc.constantFrom(0, 60_000, defaultLimits.maxFutureSkewMs),
      maxPastAgeMs: fc.constantFrom(0, 60_000, defaultLimits.maxPastAgeMs),
    }),
  },
);

describe('decodeNativeFast', () => {
  it('gives exactly what the schema path gives, whenever it gives anything', () => {
    let taken = 0;
    let accepted = 0;
    fc.assert(
      fc.property(payloadText, limitsArb, (text, limits) => {
        const fast = decodeNativeFast(text, 'dev-1', NOW, limits);
        const viaSchema = decodeTelemetryText(text, 'dev-1', NOW, limits);
        if (viaSchema.ok) accepted++;
        if (fast === undefined) return;
        taken++;
        expectSame(fast, viaSchema);
      }),
      { numRuns: 30_000 },
    );
    // Not vacuous: about half the payloads the schemas accept reach the fast path (the rest drop a value).
    expect(taken).toBeGreaterThan(800);
    expect(accepted).toBeGreaterThan(taken);
  });

  it('leaves decodeDevicePayload answering as the schema path does, refusals, codes and messages included', () => {
    fc.assert(
      fc.property(fc.oneof(payloadText, fc.json(), fc.string({ maxLength: 40 })), limitsArb, (text, limits) => {
        // As bytes: a lone surrogate becomes U+FFFD on the way, for both.
        expectSame(viaPublish(text, limits), decodeTelemetryText(Buffer.from(text).toString(), 'dev-1', NOW, limits));
      }),
      { numRuns: 20_000 },
    );
  });

  it('takes every well-formed usual reading itself, so the schemas run only for the unusual one', () => {
    const name = fc.stringMatching(/^[A-Za-z_üé温][A-Za-z0-9_.:üé温-]{0,15}$/).filter((k) => k !== '__proto__' && k !== 'constructor' && k !== 'prototype');
    const metricValue = fc.oneof(
      fc.double({ min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER, noNaN: true }),
      fc.integer(),
      fc.boolean(),
      fc.string({ maxLength: 20 }).filter((s) => !/[\n\r]/.test(s)),
    );
    const usual = fc.record(
      {
        ts: fc.oneof(
          fc.integer({ min: 0, max: 3_600_000 }).map((back) => NOW - back),
          fc.integer({ min: 0, max: 3_600_000 }).map((back) => new Date(NOW - back).toISOString()),
          fc.constant(0),
        ),
        seq: fc.nat(),
        metrics: fc.dictionary(name, metricValue, { minKeys: 1, maxKeys: 8 }),
        tags: fc.dictionary(name, fc.string({ maxLength: 10 }).filter((s) => !/[\n\r\\]/.test(s)), { maxKeys: 3 }),
      },
      { requiredKeys: ['metrics'] },
    );
    const usualFlat = fc.tuple(fc.dictionary(name.filter((k) => k !== 'ts' && k !== 'seq' && k !== 'metrics'), metricValue, { minKeys: 1, maxKeys: 8 }), fc.option(fc.nat()), fc.option(fc.integer({ min: 0, max: 3_600_000 })))
      .map(([metrics, seq, back]) => ({ ...metrics, ...(seq === null ? {} : { seq }), ...(back === null ? {} : { ts: NOW - back }) }));
    fc.assert(
      fc.property(fc.oneof(usual, usualFlat), (payload) => {
        const text = JSON.stringify(payload);
        const fast = decodeNativeFast(text, 'dev-1', NOW, defaultLimits);
        expect(fast?.ok).toBe(true);
        if (fast) expectSame(fast, decodeTelemetryText(text, 'dev-1', NOW, defaultLimits));
      }),
      { numRuns: 5_000 },
    );
  });

  // The edges by name: each decodes alike on both paths; `fast` says whether the fast path takes it.
  const cases: ReadonlyArray<readonly [string, string, boolean]> = [
    ['the pipeline bench reading', `{"ts":${NOW - 1000},"seq":3,"metrics":{"temp":21.5,"hum":40,"batt":3.21}}`, true],
    ['tags and a boolean and a string value', `{"ts":${NOW},"metrics":{"on":true,"mode":"eco"},"tags":{"room":"a"}}`, true],
    ['empty tags', '{"metrics":{"a":1},"tags":{}}', true],
    ['-0 as a value and as seq', '{"seq":-0,"metrics":{"a":-0}}', true],
    ['1e308', '{"metrics":{"a":1e308}}', false],
    ['the largest safe integer', '{"metrics":{"a":9007199254740991}}', true],
    ['an integer beyond 2^53 (kept exact as text)', '{"metrics":{"a":9007199254740993}}', false],
    ['an integer beyond 64 bits', '{"metrics":{"a":18446744073709551616,"b":1}}', false],
    ['a bare NaN', '{"metrics":{"a":NaN,"b":1}}', false],
    ['1e999', '{"metrics":{"a":1e999,"b":1}}', false],
    ['NaN-ish strings', '{"metrics":{"a":"NaN","b":"Infinity","c":"-0"}}', true],
    ['a marker spelt with escapes', '{"metrics":{"a":"\\u0000ferry-non-finite\\u0000","b":1}}', false],
    ['unicode names', '{"metrics":{"Küche":1,"温度":2,"🌡":3}}', true],
    ['an escaped name', '{"metrics":{"t\\u0065mp":1}}', true],
    ['a repeated metric', '{"metrics":{"a":1,"a":2}}', true],
    ['integer-like names', '{"metrics":{"b":1,"2":2,"1":3}}', true],
    ['nested metrics', '{"metrics":{"a":{"b":1}}}', false],
    ['a null metric', '{"metrics":{"a":null}}', false],
    ['an extra key', '{"metrics":{"a":1},"extra":1}', false],
    ['no metrics', '{"metrics":{}}', false],
    ['__proto__ as a metric', '{"metrics":{"__proto__":1,"a":2}}', false],
    ['constructor as a metric', '{"metrics":{"constructor":1,"a":2}}', false],
    ['a bad metric name', '{"metrics":{"a\\\\":1,"b":2}}', false],
    ['ts as ISO text', `{"ts":"${new Date(NOW - 1000).toISOString()}","metrics":{"a":1}}`, true],
    ['ts as numeric text', `{"ts":"${NOW - 1000}","metrics":{"a":1}}`, true],
    ['ts in seconds', `{"ts":${(NOW - 1000) / 1000},"metrics":{"a":1}}`, true],
    ['ts in nanoseconds', `{"ts":${NOW}000000,"metrics":{"a":1}}`, false],
    ['an unsynced clock', '{"ts":0,"metrics":{"a":1}}', true],
    ['ts as a boolean', '{"ts":true,"metrics":{"a":1}}', false],
    ['ts not a time', '{"ts":"soon","metrics":{"a":1}}', false],
    ['ts ahead of the skew window', `{"ts":${NOW + 3_600_000},"metrics":{"a":1}}`, false],
    ['seq as text', '{"seq":"3","metrics":{"a":1}}', false],
    ['seq negative', '{"seq":-1,"metrics":{"a":1}}', false],
    ['flat, with ts and seq', `{"temperature":19.2,"ts":${NOW - 1000},"contact":false,"seq":3}`, true],
    ['flat, with a nested value', '{"temperature":19.2,"x":{"y":1}}', false],
    ['whitespace around everything', ` \n{ "metrics" : { "a" : 1 } }\t`, true],
    ['a BOM', '\uFEFF{"metrics":{"a":1}}', false],
    ['an array', '[{"metrics":{"a":1}}]', false],
    ['cut short', '{"metrics":{"a":1}', false],
  ];
  it.each(cases)('decodes %s alike on both paths', (_what, text, fast) => {
    expect(decodeNativeFast(text, 'dev-1', NOW, defaultLimits) !== undefined).toBe(fast);
    expectSame(viaPublish(text, defaultLimits), decodeTelemetryText(text, 'dev-1', NOW, defaultLimits));
  });

  it('takes a plain device id as checkDeviceId would, and checks any other in full', () => {
    const id = fc.oneof(
      fc.stringMatching(/^[A-Za-z0-9_:@-]{0,12}$/),
      fc.constantFrom('x'.repeat(256), 'x'.repeat(257), 'Ku\u0308che', 'Küche', 'a/b', 'a/./b', '#', 'a+b', 'zw\u200bsp', 'tab\t', 'a\\'),
      fc.string({ maxLength: 8 }),
    );
    fc.assert(
      fc.property(id, (deviceId) => {
        const result = decodeDevicePayload({ payload: Buffer.from('{"metrics":{"a":1}}'), kind: 'telemetry', deviceId, receivedAt: NOW, limits: defaultLimits });
        const checked = checkDeviceId(deviceId);
        if (checked.ok) expect(result.ok && result.reading.deviceId).toBe(checked.deviceId);
        else expect(result).toStrictEqual({ ok: false, rejection: checked.rejection });
      }),
      { numRuns: 5_000 },
    );
  });
});
