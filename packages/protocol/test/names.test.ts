import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { checkDeviceId, deviceIdProblem, fieldKeyProblem, fieldRejection, isPlainDeviceId, nameProblem, normalizeDeviceId, parseDeviceTime, parseIsoTime, quotedName, readingSchema, tagProblem, tagRejection, textProblem, topicProblem, utf8Text } from '../src/index.js';

describe('device ids', () => {
  it('normalises to NFC, so composed and decomposed Küche are one device', () => {
    expect(checkDeviceId('Ku\u0308che')).toEqual({ ok: true, deviceId: 'K\u00FCche' });
    expect(checkDeviceId('K\u00FCche')).toEqual({ ok: true, deviceId: 'K\u00FCche' });
  });

  it.each(['../../admin', '..', '.', 'a/../b', 'a/.', 'x\u202Ey', 'x\u202Ay', 'x\u2067y', 'x\u200Fy', 'x\u200By', 'x\u200Cy', 'x\u2060y', 'x\uFEFF', 'x\u0000', 'x\u001f', 'x\u007f', 'x\u009b', 'x\\', 'a#', 'a+b', '', 'K\uFFFDche', 'x\uD800'])(
    'refuses %j with FERRY_ERR_DEVICE_ID_INVALID',
    (id) => {
      const verdict = checkDeviceId(id);
      expect(verdict.ok === false && verdict.rejection.code).toBe('FERRY_ERR_DEVICE_ID_INVALID');
    },
  );

  it('keeps ordinary ids: dots inside a level, spaces, slashes, non-Latin letters', () => {
    for (const id of ['living room/v1.2', '.hidden', 'a..b', 'Kühlschrank 2', '温度计', 'dev-01']) expect(checkDeviceId(id)).toEqual({ ok: true, deviceId: id });
  });

  it('is enforced by the reading schema at the ingestor too', () => {
    const reading = { seq: 1, deviceId: '../../admin', kind: 'telemetry', ts: 1, tsSource: 'gateway', receivedAt: 1, metrics: { t: 1 } };
    expect(readingSchema.safeParse(reading).success).toBe(false);
    expect(readingSchema.safeParse({ ...reading, deviceId: 'dev\u200B1' }).success).toBe(false);
    expect(readingSchema.safeParse({ ...reading, deviceId: 'dev-1' }).success).toBe(true);
  });
});

describe('UTF-8', () => {
  it('refuses truncated and overlong sequences, surrogates and Latin-1', () => {
    for (const bytes of [[0x4b, 0xc3], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0x4b, 0xfc, 0x63], [0xff]]) {
      expect(utf8Text(Uint8Array.from(bytes))).toBeUndefined();
    }
    expect(utf8Text(Buffer.from('Küche ☃ 🚀'))).toBe('Küche ☃ 🚀');
  });

  it('refuses a topic with U+0000 or with what invalid UTF-8 decodes to', () => {
    expect(topicProblem('a/\u0000')).toMatch(/U\+0000/);
    expect(topicProblem('a/K\uFFFDche')).toMatch(/UTF-8/);
    expect(topicProblem('a/\uDC00')).toMatch(/UTF-8/);
    expect(topicProblem('a/Küche/+')).toBeUndefined();
  });
});

describe('names the database refuses', () => {
  it.each([
    ['empty', ''],
    ['a double quote', 'a"b'],
    ['a trailing backslash', 'a\\'],
    ['a NUL', 'a\u0000'],
    ['a line break', 'a\r\nb'],
    ['an unpaired surrogate', '\uDBFFa'],
    ['a reserved key', '__proto__'],
    ['a reserved key', 'constructor'],
    ['a reserved key', 'prototype'],
  ])('refuses a field name with %s', (_, name) => {
    expect(fieldRejection(name, 1)?.code).toBe('FERRY_ERR_NAME_INVALID');
  });

  it('refuses a string value with a line break, and tags by the same rules', () => {
    expect(fieldRejection('note', 'a\nb')?.code).toBe('FERRY_ERR_NAME_INVALID');
    expect(fieldRejection('note', 'a "quoted" \\ text')).toBeUndefined();
    expect(tagRejection('room', 'a\\')?.code).toBe('FERRY_ERR_NAME_INVALID');
    expect(tagRejection('', 'a')?.code).toBe('FERRY_ERR_NAME_INVALID');
    expect(tagRejection('__proto__', 'a')?.code).toBe('FERRY_ERR_NAME_INVALID');
    expect(tagRejection('room', '')).toBeUndefined();
    expect(fieldRejection('naïve 🚀 a.b', 1)).toBeUndefined();
  });
});

describe('ISO-8601 times', () => {
  it.each(['2023-02-30', '2023-02-29T00:00:00Z', '2023-13-01T00:00:00Z', '2023-00-01', '2023-01-00', '2023-01-01T24:00:00Z', '2023-01-01T24:00:01Z', '2023-04-31T10:00', '2023-01-01T10:00:60Z', '2023-01-01T10:00:00+24:00', 'March 2 2023', 'Thu, 02 Mar 2023 00:00:00 GMT'])(
    'refuses %s instead of rolling it over',
    (text) => {
      expect(parseIsoTime(text)).toBeUndefined();
      expect(parseDeviceTime(text)).toBeUndefined();
    },
  );

  it('reads valid dates, offsets and fractions exactly; no offset is UTC', () => {
    expect(parseIsoTime('2024-02-29T12:00:00Z')).toBe(Date.UTC(2024, 1, 29, 12));
    expect(parseIsoTime('2000-02-29')).toBe(Date.UTC(2000, 1, 29));
    expect(parseIsoTime('2026-11-25T13:00:00.123456+01:00')).toBe(Date.UTC(2026, 10, 25, 12, 0, 0, 123));
    expect(parseIsoTime('2026-11-25 12:00')).toBe(Date.UTC(2026, 10, 25, 12));
    expect(parseIsoTime('2026-11-25T10:30:00-0130')).toBe(Date.UTC(2026, 10, 25, 12));
    expect(parseDeviceTime(' 2026-11-25T12:00:00Z ')).toBe(Date.UTC(2026, 10, 25, 12));
  });
});

describe('the name rules as loops', () => {
  // The rules as first written, with regexes: the loops in names.ts must give the same verdicts and reasons.
  const SUSPECT_NAME = /[\u0000-\u001f\u007f\\\uD800-\uDFFF]/;
  const SUSPECT_TEXT = /[\n\r\uD800-\uDFFF]/;
  const PLAIN_DEVICE_ID = /^[\w:@-]+$/;
  const regexTextProblem = (what: string, value: string): string | undefined => (SUSPECT_TEXT.test(value) ? textProblem(what, value) : undefined);
  const regexNameProblem = (name: string): string | undefined => (name.length > 0 && !SUSPECT_NAME.test(name) ? undefined : nameProblem(() => 'name', name));
  const text = fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.string({ unit: 'binary', maxLength: 8 }),
    fc.string({ unit: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), maxLength: 10 }),
    fc.constantFrom('dev-01', 'a\\', 'x\ny', '\uD83D\uDE00', '\uDC00', 'gw:1@site', '', 'a_b-c', 'tab\there', 'del\u007f'),
  );

  it('finds a suspect character where the regexes did, so the same names and texts are refused with the same reasons', () => {
    fc.assert(
      fc.property(text, (value) => {
        expect(nameProblem(() => 'name', value)).toBe(regexNameProblem(value));
        expect(textProblem('text', value)).toBe(regexTextProblem('text', value));
      }),
      { numRuns: 5_000 },
    );
  });

  it('passes a tag or a field key at once only where the full rules pass it, and refuses the rest for the same reason', () => {
    // The rules spelled without the shortcut for plain names in tagProblem and fieldKeyProblem.
    const fullTagProblem = (key: string, value: string): string | undefined =>
      nameProblem(() => `tag key ${quotedName(key)}`, key) ?? (value.length > 0 ? nameProblem(() => `value of tag ${quotedName(key)}`, value) : undefined);
    const fullFieldKeyProblem = (key: string): string | undefined =>
      nameProblem(() => `field key ${quotedName(key)}`, key) ??
      (key.includes('"') ? `field key ${quotedName(key)} contains a double quote, which VictoriaMetrics cannot read in a field key` : undefined);
    fc.assert(
      fc.property(text, text, (key, value) => {
        expect(tagProblem(key, value)).toBe(fullTagProblem(key, value));
        expect(fieldKeyProblem(key)).toBe(fullFieldKeyProblem(key));
      }),
      { numRuns: 5_000 },
    );
  });

  it('takes a plain device id as it came and checks any other in full, with the same verdicts', () => {
    fc.assert(
      fc.property(fc.oneof(text, fc.constantFrom('Ku\u0308che', 'K\u00FCche', 'a\u0301/b')), fc.integer({ min: 1, max: 12 }), (raw, max) => {
        const deviceId = normalizeDeviceId(raw);
        const problem = deviceIdProblem(deviceId, max);
        expect(checkDeviceId(raw, max)).toEqual(problem ? { ok: false, rejection: { code: 'FERRY_ERR_DEVICE_ID_INVALID', reason: problem } } : { ok: true, deviceId });
      }),
      { numRuns: 5_000 },
    );
  });

  it('calls an id plain exactly when the pattern of letters, digits and _ : @ - alone does, up to the length bound', () => {
    fc.assert(
      fc.property(text, fc.integer({ min: 1, max: 12 }), (id, max) => {
        expect(isPlainDeviceId(id, max)).toBe(id.length <= max && PLAIN_DEVICE_ID.test(id));
      }),
      { numRuns: 5_000 },
    );
  });
});
