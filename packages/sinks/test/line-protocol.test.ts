import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFerryError } from '@ferry/protocol';
import type { FieldValue, Point } from '../src/index.js';
import { checkPoint, encodeBody, encodePoint, encodePoints, formatFloat, linesOf, MAX_TIMESTAMP_NS } from '../src/index.js';
import { fieldKeyProblem, measurementProblem, stringValueProblem, tagProblem } from '@ferry/protocol';

const T = 1_700_000_000_123_456_789n;

// A reference reader for the subset of line protocol the encoder produces, with the meaning
// InfluxDB and VictoriaMetrics agree on: `\` before a character that needs escaping in that
// element is an escape, any other backslash is literal.
interface ParsedLine {
  measurement: string;
  tags: Record<string, string>;
  fields: Record<string, FieldValue>;
  timestampNs: bigint;
}

/** Sets an own property even for the key `__proto__`. */
function setOwn<T>(target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function readLine(line: string): ParsedLine {
  let i = 0;
  const readName = (escapable: string, stops: string): string => {
    let out = '';
    while (i < line.length) {
      const c = line[i] ?? '';
      if (c === '\\' && escapable.includes(line[i + 1] ?? '')) {
        out += line[i + 1];
        i += 2;
      } else if (stops.includes(c)) {
        break;
      } else {
        out += c;
        i += 1;
      }
    }
    return out;
  };
  const expect1 = (c: string): void => {
    if (line[i] !== c) throw new Error(`expected ${JSON.stringify(c)} at ${i} in ${JSON.stringify(line)}`);
    i += 1;
  };
  const measurement = readName(', ', ', ');
  const tags: Record<string, string> = {};
  while (line[i] === ',') {
    i += 1;
    const key = readName(',= ', ',= ');
    expect1('=');
    setOwn(tags, key, readName(',= ', ', '));
  }
  expect1(' ');
  const fields: Record<string, FieldValue> = {};
  for (;;) {
    const key = readName(',= ', ',= ');
    expect1('=');
    if (line[i] === '"') {
      i += 1;
      let value = '';
      while (line[i] !== '"') {
        if (i >= line.length) throw new Error('unterminated string');
        if (line[i] === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\')) {
          value += line[i + 1];
          i += 2;
        } else {
          value += line[i];
          i += 1;
        }
      }
      i += 1;
      setOwn(fields, key, value);
    } else {
      let raw = '';
      while (i < line.length && line[i] !== ',' && line[i] !== ' ') raw += line[i++];
      if (raw === 'true' || raw === 'false') setOwn(fields, key, raw === 'true');
      else if (/^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw)) setOwn(fields, key, Number(raw));
      else throw new Error(`bad field value ${raw}`);
    }
    if (line[i] !== ',') break;
    i += 1;
  }
  expect1(' ');
  const ts = line.slice(i);
  if (!/^-?\d+$/.test(ts)) throw new Error(`bad timestamp ${ts}`);
  return { measurement, tags, fields, timestampNs: BigInt(ts) };
}

function withoutEmptyTags(point: Point): ParsedLine {
  return {
    measurement: point.measurement,
    tags: Object.fromEntries(Object.entries(point.tags).filter(([, v]) => v !== '')),
    fields: Object.fromEntries(Object.entries(point.fields)),
    timestampNs: point.timestampNs,
  };
}

function sameValues(a: ParsedLine, b: ParsedLine): boolean {
  const fa = Object.entries(a.fields);
  return (
    a.measurement === b.measurement &&
    a.timestampNs === b.timestampNs &&
    JSON.stringify(Object.entries(a.tags).sort()) === JSON.stringify(Object.entries(b.tags).sort()) &&
    fa.length === Object.keys(b.fields).length &&
    fa.every(([k, v]) => Object.hasOwn(b.fields, k) && Object.is(v, b.fields[k]))
  );
}

describe('line protocol encoder', () => {
  it('writes measurement, sorted tags, sorted fields and the nanosecond timestamp', () => {
    const point: Point = {
      measurement: 'telemetry',
      tags: { gateway: 'gw-1', device: 'dev-1' },
      fields: { temperature: 21.5, state: 'on', ok: true, humidity: 40 },
      timestampNs: T,
    };
    expect(encodePoint(point)).toBe('telemetry,device=dev-1,gateway=gw-1 humidity=40,ok=true,state="on",temperature=21.5 1700000000123456789');
  });

  it('escapes as the reference says: measurement comma and space; keys and tag values comma, equals and space; strings quote and backslash', () => {
    const point: Point = {
      measurement: 'my meas,ure=ment',
      tags: { 'tag key,=': 'tag value,=x' },
      fields: { "field key,='": 'say "hi" \\ bye' },
      timestampNs: 1n,
    };
    expect(encodePoint(point)).toBe('my\\ meas\\,ure=ment,tag\\ key\\,\\==tag\\ value\\,\\=x field\\ key\\,\\=\'="say \\"hi\\" \\\\ bye" 1');
  });

  it('leaves a backslash before an ordinary character as it is, which every database reads literally', () => {
    expect(encodePoint({ measurement: 'C:\\m', tags: { 'k\\x': 'C:\\temp' }, fields: { 'f\\d': 1 }, timestampNs: 1n })).toBe(
      'C:\\m,k\\x=C:\\temp f\\d=1 1',
    );
  });

  it('writes floats in their shortest exact form, which InfluxDB parses as floats', () => {
    expect(formatFloat(21)).toBe('21');
    expect(formatFloat(0.1 + 0.2)).toBe('0.30000000000000004');
    expect(formatFloat(1e21)).toBe('1e+21');
    expect(formatFloat(-1.234456e78)).toBe('-1.234456e+78');
    expect(formatFloat(1e-7)).toBe('1e-7');
    expect(formatFloat(5e-324)).toBe('5e-324');
    expect(formatFloat(-0)).toBe('-0');
    expect(formatFloat(Number.MAX_VALUE)).toBe('1.7976931348623157e+308');
  });

  it('writes booleans as true and false, never quoted', () => {
    expect(encodePoint({ measurement: 'm', tags: {}, fields: { a: true, b: false }, timestampNs: 0n })).toBe('m a=true,b=false 0');
  });

  it('sorts tag keys by UTF-8 bytes as Go does, not by UTF-16 code units', () => {
    // U+FF5E sorts before U+1F600 in UTF-8, after it in UTF-16.
    const line = encodePoint({ measurement: 'm', tags: { '😀': '1', '～': '2', a: '3' }, fields: { v: 1 }, timestampNs: 0n });
    expect(line).toBe('m,a=3,～=2,😀=1 v=1 0');
  });

  it('drops tags with an empty value, which line protocol cannot carry', () => {
    expect(encodePoint({ measurement: 'm', tags: { a: '', b: 'x' }, fields: { v: 1 }, timestampNs: 0n })).toBe('m,b=x v=1 0');
  });

  it('gives the same line for the same point whatever the key order', () => {
    const a = encodePoint({ measurement: 'm', tags: { x: '1', y: '2' }, fields: { p: 1, q: 2 }, timestampNs: 5n });
    const b = encodePoint({ measurement: 'm', tags: { y: '2', x: '1' }, fields: { q: 2, p: 1 }, timestampNs: 5n });
    expect(a).toBe(b);
  });

  it.each<[string, Point, RegExp]>([
    ['no fields', { measurement: 'm', tags: {}, fields: {}, timestampNs: 0n }, /no fields/],
    ['NaN', { measurement: 'm', tags: {}, fields: { v: Number.NaN }, timestampNs: 0n }, /NaN/],
    ['Infinity', { measurement: 'm', tags: {}, fields: { v: Number.POSITIVE_INFINITY }, timestampNs: 0n }, /Infinity/],
    ['a newline in a tag value', { measurement: 'm', tags: { k: 'a\nb' }, fields: { v: 1 }, timestampNs: 0n }, /line break/],
    ['a carriage return in a measurement', { measurement: 'm\r', tags: {}, fields: { v: 1 }, timestampNs: 0n }, /line break/],
    ['a newline in a field key', { measurement: 'm', tags: {}, fields: { 'a\nb': 1 }, timestampNs: 0n }, /line break/],
    ['a newline in a string value', { measurement: 'm', tags: {}, fields: { v: 'two\nlines' }, timestampNs: 0n }, /line break/],
    ['an empty measurement', { measurement: '', tags: {}, fields: { v: 1 }, timestampNs: 0n }, /measurement is empty/],
    ['a measurement read as a comment', { measurement: '#m', tags: {}, fields: { v: 1 }, timestampNs: 0n }, /comment/],
    ['an empty tag key', { measurement: 'm', tags: { '': 'x' }, fields: { v: 1 }, timestampNs: 0n }, /tag key "" is empty/],
    ['an empty field key', { measurement: 'm', tags: {}, fields: { '': 1 }, timestampNs: 0n }, /field key "" is empty/],
    ['a trailing backslash in a tag value', { measurement: 'm', tags: { k: 'C:\\' }, fields: { v: 1 }, timestampNs: 0n }, /backslash/],
    ['a double backslash in a measurement', { measurement: 'a\\\\b', tags: {}, fields: { v: 1 }, timestampNs: 0n }, /backslash/],
    ['a backslash before a comma in a field key', { measurement: 'm', tags: {}, fields: { 'a\\,b': 1 }, timestampNs: 0n }, /backslash/],
    ['a double quote in a field key', { measurement: 'm', tags: {}, fields: { 'a"b': 1 }, timestampNs: 0n }, /double quote/],
    ['a NUL in a field key', { measurement: 'm', tags: {}, fields: { '\u0000a': 1 }, timestampNs: 0n }, /control character U\+0000/],
    ['a tab in a tag value', { measurement: 'm', tags: { k: 'a\tb' }, fields: { v: 1 }, timestampNs: 0n }, /control character U\+0009/],
    ['a DEL in a measurement', { measurement: 'm\u007f', tags: {}, fields: { v: 1 }, timestampNs: 0n }, /control character U\+007F/],
    ['an unpaired surrogate', { measurement: 'm', tags: { k: 'a\uD800' }, fields: { v: 1 }, timestampNs: 0n }, /surrogate/],
    ['a timestamp beyond int64', { measurement: 'm', tags: {}, fields: { v: 1 }, timestampNs: MAX_TIMESTAMP_NS + 1n }, /outside the range/],
  ])('refuses a point with %s', (_what, point, reason) => {
    expect(checkPoint(point)).toMatch(reason);
    let thrown: unknown;
    try {
      encodePoint(point);
    } catch (err) {
      thrown = err;
    }
    expect(isFerryError(thrown, 'FERRY_ERR_SINK_REJECTED')).toBe(true);
  });

  it('sets aside the points it refuses with their index and encodes the others', () => {
    const batch: Point[] = [
      { measurement: 'm', tags: {}, fields: { v: 1 }, timestampNs: 0n },
      { measurement: 'm', tags: {}, fields: {}, timestampNs: 0n },
      { measurement: 'm', tags: {}, fields: { v: 2 }, timestampNs: 1n },
    ];
    const encoded = encodePoints(batch);
    expect(encoded.lines).toEqual([
      { index: 0, line: 'm v=1 0' },
      { index: 2, line: 'm v=2 1' },
    ]);
    expect(encoded.rejected).toEqual([{ index: 1, reason: 'point has no fields' }]);
  });
});

// Names built from the characters that need care, plus any Unicode. The writable ones leave
// out what is always refused (line breaks, unpaired surrogates) so that most points generated
// for the round-trip property are accepted; the refusal property uses all of them.
const writableChars = [' ', ',', '=', '"', "'", '\\', '#', 'a', 'Z', '0', 'é', '日', '🚀'];
const refusedChars = ['\n', '\r', '\uD800', '\u0000', '\t', '\u007f'];
function pointOf(chars: string[]): fc.Arbitrary<Point> {
  const char = fc.constantFrom(...chars);
  const name = fc.oneof(fc.string({ unit: char, minLength: 1, maxLength: 10 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 10 }));
  const value: fc.Arbitrary<FieldValue> = fc.oneof(
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.boolean(),
    fc.string({ unit: 'grapheme', maxLength: 20 }),
    fc.string({ unit: char, maxLength: 20 }),
  );
  return fc.record({
    measurement: name,
    tags: fc.dictionary(name, fc.oneof(name, fc.constant('')), { maxKeys: 4 }),
    fields: fc.dictionary(name, value, { minKeys: 1, maxKeys: 4 }),
    timestampNs: fc.bigInt({ min: -MAX_TIMESTAMP_NS, max: MAX_TIMESTAMP_NS }),
  });
}
const writablePoint = pointOf(writableChars);
const anyPoint: fc.Arbitrary<Point> = fc.oneof(
  writablePoint,
  pointOf([...writableChars, ...refusedChars]),
  fc.record({
    measurement: fc.string({ maxLength: 3 }),
    tags: fc.dictionary(fc.string({ maxLength: 3 }), fc.string({ maxLength: 3 }), { maxKeys: 2 }),
    fields: fc.dictionary(fc.string({ maxLength: 3 }), fc.oneof(fc.double(), fc.boolean(), fc.string({ unit: 'binary', maxLength: 3 })), { maxKeys: 2 }),
    timestampNs: fc.bigInt({ min: -MAX_TIMESTAMP_NS - 10n, max: MAX_TIMESTAMP_NS + 10n }),
  }),
);

describe('line protocol encoder properties', () => {
  it('reads back every point it accepts with the same measurement, tags, field values and timestamp', () => {
    fc.assert(
      fc.property(writablePoint, (point) => {
        fc.pre(checkPoint(point) === undefined);
        const line = encodePoint(point);
        expect(sameValues(readLine(line), withoutEmptyTags(point))).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('never puts a line break inside a line, and refuses exactly the points checkPoint refuses', () => {
    fc.assert(
      fc.property(fc.array(anyPoint, { maxLength: 5 }), (points) => {
        const encoded = encodePoints(points);
        for (const { line } of encoded.lines) expect(line).not.toMatch(/[\n\r]/);
        expect(encoded.rejected.map((r) => r.index)).toEqual(points.flatMap((p, i) => (checkPoint(p) === undefined ? [] : [i])));
        expect(encoded.lines.length + encoded.rejected.length).toBe(points.length);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('encodeBody, the sinks\' one-body encoder', () => {
  it('gives the lines encodePoints gives, joined, with the same indices and refusals', () => {
    fc.assert(
      fc.property(fc.array(anyPoint, { maxLength: 8 }), (points) => {
        const reference = encodePoints(points);
        const encoded = encodeBody(points);
        expect(encoded.body).toBe(reference.lines.map((l) => l.line).join('\n'));
        expect(encoded.indices).toEqual(reference.lines.map((l) => l.index));
        expect(encoded.rejected).toEqual(reference.rejected);
        expect(linesOf(encoded)).toEqual(reference.lines);
      }),
      { numRuns: 1000 },
    );
  });

  it('is empty when every point is refused', () => {
    const encoded = encodeBody([{ measurement: 'm', tags: {}, fields: {}, timestampNs: 0n }]);
    expect(encoded).toEqual({ body: '', indices: [], rejected: [{ index: 0, reason: 'point has no fields' }] });
    expect(linesOf(encoded)).toEqual([]);
  });
});

/** checkPoint spelled with the rule book alone (no remembered measurement), in checkPoint's order. */
function referenceCheck(point: Point): string | undefined {
  const m = measurementProblem(point.measurement);
  if (m) return m;
  for (const [key, value] of Object.entries(point.tags)) {
    const problem = tagProblem(key, value);
    if (problem) return problem;
  }
  const fields = Object.entries(point.fields);
  for (const [key, value] of fields) {
    const problem =
      fieldKeyProblem(key) ??
      (typeof value === 'number'
        ? Number.isFinite(value)
          ? undefined
          : `field ${JSON.stringify(key)} is ${String(value)}, which databases cannot store`
        : typeof value === 'string'
          ? stringValueProblem(key, value)
          : typeof value === 'boolean'
            ? undefined
            : `field ${JSON.stringify(key)} has unsupported type ${typeof value}`);
    if (problem) return problem;
  }
  if (fields.length === 0) return 'point has no fields';
  if (typeof point.timestampNs !== 'bigint') return 'timestamp is not a bigint of nanoseconds';
  if (point.timestampNs < -MAX_TIMESTAMP_NS || point.timestampNs > MAX_TIMESTAMP_NS) return `timestamp ${point.timestampNs} ns is outside the range InfluxDB can store`;
  return undefined;
}

describe('the point rules', () => {
  it('refuses exactly what the rule book refuses, for the same reason', () => {
    fc.assert(
      fc.property(anyPoint, (point) => {
        // A fresh measurement each time: checkPoint remembers the last one that passed.
        expect(checkPoint(point)).toBe(referenceCheck(point));
      }),
      { numRuns: 3000 },
    );
  });
});
