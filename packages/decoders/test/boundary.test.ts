// The device boundary (issue #17): what hostile or broken devices send is refused with a code, or
// set aside value by value with the rest of the reading kept; nothing reaches the database that
// its name rules would refuse.
import { describe, expect, it } from 'vitest';
import { decoderFor, only } from './fixture.js';

const AT = Date.UTC(2026, 10, 25, 12);

describe('invalid UTF-8', () => {
  const flat = decoderFor({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' }, AT);
  const line = decoderFor({ pattern: 'telegraf/{deviceId}/+', format: 'influx-line' }, AT);
  const native = decoderFor({ pattern: 'devices/{deviceId}/telemetry' }, AT);
  const hostile: Array<[string, Buffer]> = [
    ['a truncated sequence', Buffer.concat([Buffer.from('{"t":1,"name":"K'), Buffer.from([0xc3]), Buffer.from('"}')])],
    ['an overlong encoding', Buffer.concat([Buffer.from('{"t":1,"x'), Buffer.from([0xc0, 0xaf]), Buffer.from('":2}')])],
    ['raw Latin-1', Buffer.concat([Buffer.from('{"t":1,"K'), Buffer.from([0xfc]), Buffer.from('che":2}')])],
    ['an encoded surrogate', Buffer.concat([Buffer.from('{"t":1,"s":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')])],
  ];

  it.each(hostile)('refuses %s with FERRY_ERR_PAYLOAD_ENCODING instead of writing U+FFFD', (_, payload) => {
    for (const out of [flat.decode('zigbee2mqtt/k', payload), native.decode('devices/k/telemetry', payload)]) {
      expect(out.rejection?.code).toBe('FERRY_ERR_PAYLOAD_ENCODING');
      expect(out.readings).toEqual([]);
    }
  });

  it('refuses a line-protocol message with bytes that are not UTF-8', () => {
    const payload = Buffer.concat([Buffer.from('cpu,host=K'), Buffer.from([0xfc]), Buffer.from('che idle=1')]);
    expect(line.decode('telegraf/pi/cpu', payload).rejection?.code).toBe('FERRY_ERR_PAYLOAD_ENCODING');
  });

  it('still reads valid multi-byte UTF-8 and a BOM-free payload', () => {
    const r = only(flat.decode('zigbee2mqtt/Küche', '{"temperatur_°c":21.5,"name":"Küche ☃"}'));
    expect(r.metrics).toEqual({ 'temperatur_°c': 21.5, name: 'Küche ☃' });
  });

  it('refuses a topic that holds U+0000 or the mark of invalid UTF-8', () => {
    for (const topic of ['zigbee2mqtt/a\u0000b', 'zigbee2mqtt/K\uFFFDche', 'zigbee2mqtt/a\uD800']) {
      expect(flat.decode(topic, '{"t":1}').rejection?.code).toBe('FERRY_ERR_PAYLOAD_ENCODING');
    }
  });
});

describe('device ids', () => {
  const flat = decoderFor({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' }, AT);
  const native = decoderFor({ pattern: 'devices/{deviceId#}' }, AT);

  it.each([
    ['a parent level', '../../admin'],
    ['a dot level', 'a/./b'],
    ['a right-to-left override', 'dev\u202Egnp.exe'],
    ['an isolate', 'dev\u2066x'],
    ['a left-to-right mark', 'dev\u200E1'],
    ['a zero-width space', 'dev\u200B1'],
    ['a zero-width joiner', 'dev\u200D1'],
    ['a word joiner', 'dev\u20601'],
    ['a byte-order mark', '\uFEFFdev1'],
    ['a C1 control', 'dev\u00851'],
    ['a trailing backslash', 'dev1\\'],
  ])('refuses %s with FERRY_ERR_DEVICE_ID_INVALID', (_, id) => {
    expect(flat.decode(`zigbee2mqtt/${id}`, '{"t":1}').rejection?.code).toBe('FERRY_ERR_DEVICE_ID_INVALID');
    expect(native.decode(`devices/${id}`, '{"metrics":{"t":1}}').rejection?.code).toBe('FERRY_ERR_DEVICE_ID_INVALID');
  });

  it('makes composed and decomposed Küche one device (NFC)', () => {
    const composed = 'K\u00FCche';
    const decomposed = 'Ku\u0308che';
    expect(composed).not.toBe(decomposed);
    for (const d of [flat, native]) {
      const prefix = d === flat ? 'zigbee2mqtt' : 'devices';
      const payload = d === flat ? '{"t":1}' : '{"metrics":{"t":1}}';
      expect(only(d.decode(`${prefix}/${decomposed}`, payload)).deviceId).toBe(composed);
      expect(only(d.decode(`${prefix}/${composed}`, payload)).deviceId).toBe(composed);
    }
  });

  it('keeps ordinary ids with dots, spaces and slashes', () => {
    expect(only(flat.decode('zigbee2mqtt/living room/v1.2/sensor', '{"t":1}')).deviceId).toBe('living room/v1.2/sensor');
  });
});

describe('reserved keys', () => {
  const flat = decoderFor({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' }, AT);
  const tasmota = decoderFor({ pattern: 'tele/{deviceId}/+', format: 'tasmota' }, AT);
  const native = decoderFor({ pattern: 'devices/{deviceId}/telemetry' }, AT);

  it('never keeps __proto__, constructor or prototype as fields; the rest of the reading is kept', () => {
    const out = flat.decode('zigbee2mqtt/d', '{"__proto__":{"polluted":1},"constructor":2,"prototype":"x","nested":{"constructor":3},"t":21.5}');
    const r = only(out);
    expect(r.metrics).toEqual({ t: 21.5 });
    expect(Object.getPrototypeOf(r.metrics)).toBe(Object.prototype);
    expect(out.dropped.map((d) => d.code)).toEqual(['FERRY_ERR_NAME_INVALID', 'FERRY_ERR_NAME_INVALID', 'FERRY_ERR_NAME_INVALID', 'FERRY_ERR_NAME_INVALID']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('drops them in snake_case formats too (no `proto` field from `__proto__`)', () => {
    const r = only(tasmota.decode('tele/plug/SENSOR', '{"__proto__":{"a":1},"ENERGY":{"Power":5}}'));
    expect(r.metrics).toEqual({ energy_power: 5 });
  });

  it('drops them from Ferry native metrics and tags', () => {
    const out = native.decode('devices/d/telemetry', '{"metrics":{"constructor":1,"t":2},"tags":{"prototype":"x","room":"a"}}');
    const r = only(out);
    expect(r.metrics).toEqual({ t: 2 });
    expect(r.tags).toEqual({ room: 'a' });
    expect(out.dropped).toHaveLength(2);
  });
});

describe('one rule book for names', () => {
  const flat = decoderFor({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' }, AT);
  const native = decoderFor({ pattern: 'devices/{deviceId}/telemetry' }, AT);
  const line = decoderFor({ pattern: 'telegraf/{deviceId}/+', format: 'influx-line' }, AT);

  it.each([
    ['a double quote', 'a"b'],
    ['a trailing backslash', 'ab\\'],
    ['a NUL', 'a\u0000b'],
    ['a line break', 'a\nb'],
    ['an unpaired surrogate', 'a\uD800b'],
  ])('sets aside a field whose name holds %s and keeps the good fields', (_, name) => {
    for (const [d, topic, payload] of [
      [flat, 'zigbee2mqtt/d', JSON.stringify({ [name]: 1, good: 2 })],
      [native, 'devices/d/telemetry', JSON.stringify({ metrics: { [name]: 1, good: 2 } })],
    ] as const) {
      const out = d.decode(topic, payload);
      expect(only(out).metrics).toEqual({ good: 2 });
      expect(out.dropped.map((r) => r.code)).toEqual(['FERRY_ERR_NAME_INVALID']);
    }
  });

  it('sets aside an empty field name alone', () => {
    const out = native.decode('devices/d/telemetry', '{"metrics":{"":1,"good":2}}');
    expect(only(out).metrics).toEqual({ good: 2 });
    expect(out.dropped).toHaveLength(1);
  });

  it('sets aside a string value with a line break, and a bad tag, keeping the rest', () => {
    const out = native.decode('devices/d/telemetry', JSON.stringify({ metrics: { note: 'a\nb', good: 2 }, tags: { room: 'a\\', site: 'x', 'bad key': 'y\n' } }));
    const r = only(out);
    expect(r.metrics).toEqual({ good: 2 });
    expect(r.tags).toEqual({ site: 'x' });
    expect(out.dropped).toHaveLength(3);
  });

  it('sets aside a line-protocol field or tag the database would refuse, keeping the line', () => {
    const out = line.decode('telegraf/pi/cpu', `cpu,host=pi,odd=a\u0001b idle=1,bad"key=2 ${AT}000000`);
    const r = only(out);
    expect(r.metrics).toEqual({ cpu_idle: 1 });
    expect(r.tags).toEqual({ host: 'pi' });
    expect(out.dropped.map((d) => d.code)).toEqual(['FERRY_ERR_NAME_INVALID', 'FERRY_ERR_NAME_INVALID']);
  });
});

describe('every failing line of a line-protocol message', () => {
  const line = decoderFor({ pattern: 'telegraf/{deviceId}/+', format: 'influx-line' }, AT);

  it('sets aside each failing line with its number and keeps the good lines', () => {
    const out = line.decode('telegraf/pi/cpu', 'cpu idle=1\ncpu idle=\nmem used=2\ncpu,host idle=3\ndisk free=9999999999999999999999999i\n');
    expect(out.rejection).toBeUndefined();
    expect(out.readings.map((r) => r.metrics)).toEqual([{ cpu_idle: 1 }, { mem_used: 2 }]);
    expect(out.dropped.map((d) => d.reason)).toEqual([expect.stringContaining('line 2'), expect.stringContaining('line 4'), expect.stringContaining('disk_free')]);
    expect(out.dropped.map((d) => d.code)).toEqual(['FERRY_ERR_PAYLOAD_SCHEMA', 'FERRY_ERR_PAYLOAD_SCHEMA', 'FERRY_ERR_VALUE_OUT_OF_RANGE']);
  });

  it('names every failing line in the one rejection when no line could be read', () => {
    const out = line.decode('telegraf/pi/cpu', 'cpu idle=\ncpu,host idle=3\n=1\n');
    expect(out.readings).toEqual([]);
    expect(out.dropped).toEqual([]);
    expect(out.rejection?.reason).toMatch(/line 1.*line 2.*line 3/s);
    expect(out.rejection?.issues).toHaveLength(3);
  });
});

describe('values and times', () => {
  const coerced = decoderFor({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat', coerce: { temperature: 'number' } }, AT);

  it('sets aside true under a number rule and keeps the rest of the reading', () => {
    const out = coerced.decode('zigbee2mqtt/d', '{"temperature":true,"humidity":40}');
    expect(only(out).metrics).toEqual({ humidity: 40 });
    expect(out.dropped.map((d) => d.code)).toEqual(['FERRY_ERR_PAYLOAD_SCHEMA']);
  });

  it('refuses a reading whose time does not exist instead of rolling it over', () => {
    const flat = decoderFor({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' }, AT);
    const native = decoderFor({ pattern: 'devices/{deviceId}/telemetry' }, AT);
    for (const ts of ['2026-02-30T10:00:00Z', '2026-13-01T00:00:00Z', '2026-01-01T24:00:01Z', '2026-02-29T00:00:00Z']) {
      expect(flat.decode('zigbee2mqtt/d', JSON.stringify({ ts, t: 1 })).rejection?.code, ts).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
      expect(native.decode('devices/d/telemetry', JSON.stringify({ ts, metrics: { t: 1 } })).rejection?.code, ts).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
    }
  });
});
