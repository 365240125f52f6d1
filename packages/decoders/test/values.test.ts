import { describe, expect, it } from 'vitest';
import { CLOCK_SYNCED_AFTER_MS, formatConfigSchema, parseDeviceJson, readDeviceTime, snakeCase } from '../src/index.js';
import { coerceValue } from '../src/values.js';

describe('value rules', () => {
  it('turns numbers sent as strings into numbers only where the field is numeric', () => {
    expect(coerceValue('t', '37.00', 'number')).toEqual({ ok: true, value: 37 });
    expect(coerceValue('t', '37.00', 'keep')).toEqual({ ok: true, value: '37.00' });
    expect(coerceValue('colour', '008000', 'string')).toEqual({ ok: true, value: '008000' });
    expect(coerceValue('id', 1234, 'string')).toEqual({ ok: true, value: '1234' });
  });

  it('reads ON/OFF, true/false and 1/0 as booleans', () => {
    for (const [raw, value] of [['ON', true], ['off', false], ['true', true], ['FALSE', false], ['1', true], [0, false], [true, true]] as const) {
      expect(coerceValue('s', raw, 'boolean')).toEqual({ ok: true, value });
    }
    expect(coerceValue('s', 'maybe', 'boolean').ok).toBe(false);
  });

  it('rejects nan, NaN and inf per value with the not-finite code', () => {
    for (const raw of ['nan', 'NaN', 'inf', '-inf', 'Infinity', Number.POSITIVE_INFINITY, Number.NaN]) {
      const verdict = coerceValue('x', raw, 'number');
      expect(verdict.ok).toBe(false);
      if (verdict.ok === false) expect(verdict.rejection.code).toBe('FERRY_ERR_VALUE_NOT_FINITE');
    }
  });

  it('keeps integers beyond 2^53 exact as decimal strings, within the 64-bit range', () => {
    expect(coerceValue('n', '9007199254740993', 'number')).toEqual({ ok: true, value: '9007199254740993' });
    expect(coerceValue('n', '18446744073709551615', 'number')).toEqual({ ok: true, value: '18446744073709551615' });
    expect(coerceValue('n', '-9223372036854775808', 'number')).toEqual({ ok: true, value: '-9223372036854775808' });
    expect(parseDeviceJson('{"n":9007199254740993,"m":-9223372036854775808,"u":18446744073709551615,"small":42,"f":1.5e3,"s":"123456789012345678901"}')).toEqual({
      n: '9007199254740993',
      m: '-9223372036854775808',
      u: '18446744073709551615',
      small: 42,
      f: 1500,
      s: '123456789012345678901',
    });
  });

  it('refuses integers beyond the 64-bit range per value, with FERRY_ERR_VALUE_OUT_OF_RANGE', () => {
    // Before: kept as text with no range check. Below int64 or above uint64, no device counts.
    for (const raw of ['18446744073709551616', '-9223372036854775809', '123456789012345678901234567890']) {
      const verdict = coerceValue('n', raw, 'number');
      expect(verdict.ok === false && verdict.rejection.code).toBe('FERRY_ERR_VALUE_OUT_OF_RANGE');
    }
    const parsed = parseDeviceJson('{"big":18446744073709551616,"neg":-9223372036854775809,"ok":1}') as Record<string, unknown>;
    expect(parsed.ok).toBe(1);
    for (const key of ['big', 'neg']) {
      const verdict = coerceValue(key, parsed[key], 'keep');
      expect(verdict.ok === false && verdict.rejection.code).toBe('FERRY_ERR_VALUE_OUT_OF_RANGE');
    }
  });

  it('refuses a boolean under a number rule instead of storing it as 1 or 0', () => {
    // Before: true was stored as 1, a value no sensor measured.
    for (const raw of [true, false]) {
      const verdict = coerceValue('t', raw, 'number');
      expect(verdict.ok === false && verdict.rejection.code).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
      expect(verdict.ok === false && verdict.rejection.reason).toContain('configured as number');
    }
  });

  it('reads bare NaN/inf literals outside strings only', () => {
    expect(parseDeviceJson('{"a":"NaN inside","b":nan}')).toEqual({ a: 'NaN inside', b: '\u0000ferry-non-finite\u0000' });
    expect(parseDeviceJson('{"a":1,}')).toBeUndefined();
  });

  it('skips null values without an error', () => {
    expect(coerceValue('x', null, 'number')).toEqual({ ok: 'skip' });
  });
});

describe('timestamps', () => {
  const ms = Date.UTC(2026, 10, 25, 12, 0, 0, 123);
  it('reads each configured unit exactly, nanoseconds beyond 2^53 included', () => {
    expect(readDeviceTime(ms / 1000, 's')).toEqual({ ok: true, ms });
    expect(readDeviceTime(ms, 'ms')).toEqual({ ok: true, ms });
    expect(readDeviceTime(ms * 1000, 'us')).toEqual({ ok: true, ms });
    expect(readDeviceTime(`${ms}000000`, 'ns')).toEqual({ ok: true, ms });
    expect(readDeviceTime('2026-11-25T12:00:00.123Z', 'iso')).toEqual({ ok: true, ms });
    expect(readDeviceTime('2026-11-25T13:00:00.123+01:00', 'auto')).toEqual({ ok: true, ms });
    expect(readDeviceTime('2026-11-25T12:00:00.123', 'auto')).toEqual({ ok: true, ms });
  });

  it('detects the unit by magnitude when configured auto', () => {
    for (const raw of [ms / 1000, ms, ms * 1000, `${ms}000000`]) expect(readDeviceTime(raw, 'auto')).toEqual({ ok: true, ms });
  });

  it('knows an unsynced clock from a real time', () => {
    const zero = readDeviceTime(0, 'auto');
    expect(zero.ok && zero.ms < CLOCK_SYNCED_AFTER_MS).toBe(true);
    const epoch = readDeviceTime('1970-01-01T00:00:05Z', 'iso');
    expect(epoch.ok && epoch.ms < CLOCK_SYNCED_AFTER_MS).toBe(true);
  });

  it('refuses a date or time that does not exist instead of rolling it over', () => {
    // Before: 2023-02-30 was read as March 2.
    for (const raw of ['2023-02-30', '2023-02-30T10:00:00Z', '2023-13-01T00:00:00Z', '2023-01-01T24:00:01Z', '2023-02-29T12:00:00Z', '2100-02-29', '2023-04-31 10:00', '2023-01-01T10:60:00Z', '2023-01-01T10:00:61Z', '2023-00-10']) {
      for (const unit of ['auto', 'iso'] as const) expect(readDeviceTime(raw, unit), `${raw} (${unit})`).toMatchObject({ ok: false });
    }
    expect(readDeviceTime('2024-02-29T12:00:00Z', 'iso')).toEqual({ ok: true, ms: Date.UTC(2024, 1, 29, 12) });
    expect(readDeviceTime('2000-02-29', 'iso')).toEqual({ ok: true, ms: Date.UTC(2000, 1, 29) });
    expect(readDeviceTime('2023-12-31T23:59:59.999Z', 'iso')).toEqual({ ok: true, ms: Date.UTC(2023, 11, 31, 23, 59, 59, 999) });
  });

  it('refuses what is not a time', () => {
    expect(readDeviceTime('yesterday', 'auto').ok).toBe(false);
    expect(readDeviceTime(-5, 'ms').ok).toBe(false);
    expect(readDeviceTime(ms, 'iso').ok).toBe(false);
  });
});

describe('names and configuration', () => {
  it('makes stable snake_case names', () => {
    expect(['ApparentPower', 'TotalStartTime', 'BSSId', 'SSId', 'DS18B20-1', 'switch:0', 'POWER1', 'tC'].map(snakeCase)).toEqual([
      'apparent_power',
      'total_start_time',
      'bss_id',
      'ss_id',
      'ds18b20_1',
      'switch_0',
      'power1',
      't_c',
    ]);
  });

  it('validates a pattern entry and defaults the format to ferry', () => {
    expect(formatConfigSchema.parse({ pattern: 'devices/{deviceId}/telemetry' }).format).toBe('ferry');
    expect(formatConfigSchema.safeParse({ pattern: 'tele/+/SENSOR', format: 'tasmota' }).success).toBe(false);
    expect(formatConfigSchema.safeParse({ pattern: 'a/{deviceId}', format: 'nope' }).success).toBe(false);
    expect(formatConfigSchema.safeParse({ pattern: 'a/{deviceId}', format: 'flat', coerce: { t: 'float' } }).success).toBe(false);
  });
});
